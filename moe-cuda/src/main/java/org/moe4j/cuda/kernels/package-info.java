/**
 * GPU implementations of the kernel families ({@code DispatchKernels}, {@code RoutingKernels},
 * {@code ExpertKernels}) on the fatbins built from {@code native/*.cu}, registered as
 * {@code KernelProvider}s for the {@code cuda} backend. See docs/cuda-kernels.md.
 */
package org.moe4j.cuda.kernels;
