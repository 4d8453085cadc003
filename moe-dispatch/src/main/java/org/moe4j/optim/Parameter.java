package org.moe4j.optim;

import java.util.Objects;
import org.moe4j.core.buffer.Buffer;

/**
 * A trainable tensor and its gradient, as handed to an optimiser. The value is the fp32 master
 * copy; backward passes add into {@code grad} (same dtype and shape) until it is zeroed.
 *
 * @param name  stable name, e.g. {@code experts.gate_proj} (also used for optimiser state and logs)
 * @param value the parameter values
 * @param grad  the accumulated gradient, same dtype and shape as {@code value}
 */
public record Parameter(String name, Buffer value, Buffer grad) {
    /**
     * Checks that the gradient matches the value.
     *
     * @throws IllegalArgumentException if value and grad differ in dtype or shape
     */
    public Parameter {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(value, "value");
        Objects.requireNonNull(grad, "grad");
        if (value.dtype() != grad.dtype() || !value.shape().equals(grad.shape())) {
            throw new IllegalArgumentException("parameter " + name + ": value is " + value.dtype() + " " + value.shape()
                    + " but grad is " + grad.dtype() + " " + grad.shape());
        }
    }
}
