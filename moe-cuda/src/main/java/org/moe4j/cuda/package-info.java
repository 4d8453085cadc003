/**
 * The CUDA backend ({@link org.moe4j.cuda.CudaBackend}) and the objects it is made of: driver-API
 * context, streams, events, modules and kernel launches, device memory pools and buffers, pinned host
 * buffers, NCCL communicators, each owning its native resource until {@code close()}. Native status
 * codes become {@link org.moe4j.cuda.CudaException} or {@link org.moe4j.cuda.NcclException}. See
 * docs/gpu.md.
 */
package org.moe4j.cuda;
