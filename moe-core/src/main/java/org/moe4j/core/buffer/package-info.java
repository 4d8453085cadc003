/**
 * Tensors as owned memory: the {@link org.moe4j.core.buffer.Buffer} interface every backend's buffers
 * implement, and {@link org.moe4j.core.buffer.HostBuffer} over a {@code MemorySegment}. Every buffer has
 * one owner and is closed explicitly; use after close throws
 * {@link org.moe4j.core.buffer.BufferClosedException}.
 */
package org.moe4j.core.buffer;
