package org.moe4j.it;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.layer.MoeLayer;

/**
 * Started by {@link JvmFlagErrorsTest} in a JVM that lacks a flag: {@code layer} runs one forward
 * step on two in-process ranks; {@code backend} selects the backend named by {@code moe4j.backend}.
 * Failures propagate out of {@code main} as a user's program would see them.
 */
public final class FlagProbe {
    private FlagProbe() {
    }

    public static void main(String[] args) {
        switch (args[0]) {
            case "layer" -> {
                MoeConfig c = MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(8).expertParallel(2).build();
                LocalGroup.run(2, comm -> {
                    try (MoeLayer layer = MoeLayer.builder(c, comm).seed(1).build();
                         BufferScope step = layer.newScope()) { // frees x, the output and the context
                        layer.forward(HostBuffer.allocate(DType.F32, 4, 8));
                    }
                    return null;
                });
                System.out.println("forward ran");
            }
            case "backend" -> System.out.println("selected " + Backends.selected().describe());
            default -> throw new IllegalArgumentException(args[0]);
        }
    }
}
