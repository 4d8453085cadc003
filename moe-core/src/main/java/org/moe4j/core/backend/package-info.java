/**
 * The backend seam: a {@link org.moe4j.core.backend.Backend} allocates memory and stages host data,
 * {@link org.moe4j.core.backend.KernelProvider}s supply each kernel family per backend, and
 * {@link org.moe4j.core.backend.Backends} picks one backend per process (the highest-priority
 * available one, or the one named by {@code -Dmoe4j.backend}) and looks kernels up. The CPU backend
 * lives here; the CUDA backend lives in {@code org.moe4j.cuda}.
 */
package org.moe4j.core.backend;
