/**
 * CPU threading for the reference kernels: {@link org.moe4j.core.cpu.CpuParallel} splits work into
 * fixed chunks so that results do not depend on the number of threads;
 * {@link org.moe4j.core.cpu.VectorMath} gives vector functions whose bits do not depend on the JIT.
 */
package org.moe4j.core.cpu;
