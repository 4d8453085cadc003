/**
 * Moving routed tokens to their experts and back: the {@link org.moe4j.dispatch.Dispatcher} (layout,
 * dispatch, combine, and their backward) over a {@link org.moe4j.dispatch.Communicator}, in-process
 * expert-parallel ranks ({@link org.moe4j.dispatch.LocalGroup}) and the
 * {@link org.moe4j.dispatch.DispatchKernels} family. See docs/dispatch.md.
 */
package org.moe4j.dispatch;
