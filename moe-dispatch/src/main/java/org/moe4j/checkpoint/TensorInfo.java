package org.moe4j.checkpoint;

import org.moe4j.core.Shape;

/**
 * One entry of a safetensors header.
 *
 * @param name   tensor name
 * @param dtype  element type as the file stores it
 * @param shape  shape
 * @param begin  first byte, relative to the start of the data section
 * @param end    one past the last byte
 */
public record TensorInfo(String name, SafetensorsDtype dtype, Shape shape, long begin, long end) {
    /**
     * Returns bytes of the tensor's data.
     *
     * @return bytes of the tensor's data
     */
    public long byteSize() {
        return end - begin;
    }
}
