/**
 * Service-provider support for backends that implement moe4j's dispatch contracts outside this module
 * (the CUDA backend in {@code moe-cuda} is one): the argument checks every
 * {@link org.moe4j.dispatch.DispatchKernels} implementation shares, so that every backend refuses the
 * same inputs with the same messages ({@link org.moe4j.dispatch.spi.DispatchArgs}, and for the
 * static-shape plans {@link org.moe4j.dispatch.spi.StaticPlanArgs}); the thread and
 * failure handling of an in-process group of ranks ({@link org.moe4j.dispatch.spi.RankThreads}); and
 * the meeting point of those ranks' collectives ({@link org.moe4j.dispatch.spi.Rendezvous}).
 *
 * <p>Applications do not need this package: they use {@link org.moe4j.dispatch.LocalGroup} and the
 * backends. It is public so that a backend in another module uses it without reaching into an
 * internal package; its calls validate their arguments like any public call.
 */
package org.moe4j.dispatch.spi;
