package org.moe4j.core.backend;

import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;

/** The reference backend: host memory, Java kernels. Always available; lowest priority. */
public final class CpuBackend implements Backend {
    /** Creates the CPU backend over the common thread pool. */
    public CpuBackend() {
    }

    /** Name used by {@code moe4j.backend=cpu}. */
    public static final String NAME = "cpu";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public int priority() {
        return 0;
    }

    @Override
    public Availability probe() {
        if (!org.moe4j.core.JvmRequirements.vectorApiAvailable()) {
            return Availability.no("the CPU kernels need the incubating Vector API: add the JVM flag "
                    + org.moe4j.core.JvmRequirements.VECTOR_FLAG);
        }
        return Availability.yes(CpuParallel.common().threads() + " thread(s)");
    }

    @Override
    public Buffer allocate(DType dtype, Shape shape) {
        return HostBuffer.allocate(dtype, shape);
    }

    /** @return pooled host scratch: reused blocks, contents not zeroed */
    @Override
    public Scratch newScratch() {
        return new HostScratch();
    }

    @Override
    public String describe() {
        return "cpu (" + CpuParallel.common().threads() + " threads, " + Runtime.version() + ")";
    }
}
