/**
 * CPU threading for the reference kernels: {@link org.moe4j.core.cpu.CpuParallel} splits work into
 * fixed chunks so that results do not depend on the number of threads.
 */
package org.moe4j.core.cpu;
