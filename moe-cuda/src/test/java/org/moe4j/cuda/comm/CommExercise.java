package org.moe4j.cuda.comm;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.DevicePool;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.ReduceOp;

/**
 * A fixed script of every collective with seeded random inputs, run on any {@link Communicator};
 * returns each output's raw bytes so that two communicators can be compared bit for bit.
 */
public final class CommExercise {
    private CommExercise() {
    }

    /** Where the script's buffers live: host memory (the reference) or a GPU. */
    public interface Memory extends AutoCloseable {
        Buffer upload(HostBuffer h);

        Buffer allocate(DType dtype, long... dims);

        HostBuffer download(Buffer b);

        @Override
        void close();
    }

    public static Memory host() {
        return new Memory() {
            private final List<Buffer> live = new ArrayList<>();

            @Override
            public Buffer upload(HostBuffer h) {
                HostBuffer c = h.copy();
                live.add(c);
                return c;
            }

            @Override
            public Buffer allocate(DType dtype, long... dims) {
                HostBuffer b = HostBuffer.allocate(dtype, dims);
                live.add(b);
                return b;
            }

            @Override
            public HostBuffer download(Buffer b) {
                return ((HostBuffer) b).copy();
            }

            @Override
            public void close() {
                live.forEach(Buffer::close);
            }
        };
    }

    public static Memory device(CudaContext ctx) {
        DevicePool pool = ctx.createPool();
        return new Memory() {
            private final List<Buffer> live = new ArrayList<>();

            @Override
            public Buffer upload(HostBuffer h) {
                DeviceBuffer d = pool.copyOf(h);
                live.add(d);
                return d;
            }

            @Override
            public Buffer allocate(DType dtype, long... dims) {
                DeviceBuffer d = pool.allocate(dtype, dims);
                live.add(d);
                return d;
            }

            @Override
            public HostBuffer download(Buffer b) {
                return ((DeviceBuffer) b).toHost();
            }

            @Override
            public void close() {
                live.forEach(Buffer::close);
                pool.close();
            }
        };
    }

    /** Rows rank {@code s} sends to rank {@code d}: the same matrix on every rank. */
    static long[][] counts(long seed, int world) {
        Random g = new Random(seed);
        long[][] c = new long[world][world];
        for (int s = 0; s < world; s++) {
            for (int d = 0; d < world; d++) {
                c[s][d] = g.nextInt(4);
            }
        }
        return c;
    }

    static HostBuffer random(Random g, DType dtype, long... dims) {
        HostBuffer h = HostBuffer.allocate(dtype, dims);
        for (long i = 0; i < h.numel(); i++) {
            switch (dtype) {
                case F32 -> h.segment().setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) g.nextGaussian());
                case BF16 -> h.segment().setAtIndex(ValueLayout.JAVA_SHORT, i, DType.f32ToBf16((float) g.nextGaussian()));
                case F16 -> h.segment().setAtIndex(ValueLayout.JAVA_SHORT, i, DType.f32ToF16((float) g.nextGaussian()));
                case I32 -> h.segment().setAtIndex(ValueLayout.JAVA_INT, i, g.nextInt(1000) - 500);
                case I64 -> h.segment().setAtIndex(ValueLayout.JAVA_LONG, i, g.nextLong() >> 8);
            }
        }
        return h;
    }

    /**
     * Runs the script on one rank.
     *
     * @return output name to raw bytes
     */
    public static Map<String, byte[]> run(Communicator comm, Memory mem, long seed) {
        int w = comm.size();
        int r = comm.rank();
        Random g = new Random(seed * 31 + r);
        long[][] c = counts(seed, w);
        Map<String, byte[]> out = new LinkedHashMap<>();
        try (mem) {
            // counts exchange, as the dispatcher does it
            HostBuffer counts = HostBuffer.allocate(DType.I64, w, 1);
            for (int d = 0; d < w; d++) {
                counts.segment().setAtIndex(ValueLayout.JAVA_LONG, d, c[r][d]);
            }
            Buffer cs = mem.upload(counts);
            Buffer cr = mem.allocate(DType.I64, w, 1);
            comm.allToAll(cs, cr);
            out.put("allToAll", bytes(mem, cr));
            counts.close();

            long[] sendRows = c[r].clone();
            long[] recvRows = new long[w];
            for (int s = 0; s < w; s++) {
                recvRows[s] = c[s][r];
            }
            for (DType dt : new DType[] {DType.F32, DType.BF16}) {
                long hidden = 5;
                HostBuffer x = random(g, dt, sum(sendRows), hidden);
                Buffer xs = mem.upload(x);
                Buffer xr = mem.allocate(dt, sum(recvRows), hidden);
                comm.allToAllV(xs, sendRows, xr, recvRows);
                out.put("allToAllV " + dt, bytes(mem, xr));
                x.close();
            }
            for (DType dt : new DType[] {DType.F32, DType.BF16, DType.I32, DType.I64}) {
                for (ReduceOp op : ReduceOp.values()) {
                    HostBuffer a = random(g, dt, 7, 3);
                    Buffer ad = mem.upload(a);
                    comm.allReduce(ad, op);
                    out.put("allReduce " + dt + " " + op, bytes(mem, ad));
                    a.close();
                }
            }
            HostBuffer gs = random(g, DType.I32, 2);
            Buffer gd = mem.upload(gs);
            Buffer gr = mem.allocate(DType.I32, 2L * w);
            comm.allGather(gd, gr);
            out.put("allGather", bytes(mem, gr));
            gs.close();

            long[] gatherRows = new long[w];
            for (int s = 0; s < w; s++) {
                gatherRows[s] = c[s][0];
            }
            HostBuffer vs = random(g, DType.F32, gatherRows[r], 4);
            Buffer vd = mem.upload(vs);
            Buffer vr = mem.allocate(DType.F32, sum(gatherRows), 4);
            comm.allGatherV(vd, vr, gatherRows);
            out.put("allGatherV", bytes(mem, vr));
            vs.close();

            for (DType dt : new DType[] {DType.F32, DType.BF16}) {
                long[] blocks = new long[w];
                for (int d = 0; d < w; d++) {
                    blocks[d] = (d + seed) % 3;
                }
                HostBuffer rs = random(g, dt, sum(blocks), 3);
                Buffer rsd = mem.upload(rs);
                Buffer rr = mem.allocate(dt, blocks[r], 3);
                comm.reduceScatterV(rsd, blocks, rr, ReduceOp.SUM);
                out.put("reduceScatterV " + dt, bytes(mem, rr));
                rs.close();
            }
            comm.barrier();
        }
        return out;
    }

    private static byte[] bytes(Memory mem, Buffer b) {
        try (HostBuffer h = mem.download(b)) {
            return h.segment().toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static long sum(long[] a) {
        long s = 0;
        for (long v : a) {
            s += v;
        }
        return s;
    }

    static Shape shape(long... dims) {
        return Shape.of(dims);
    }
}
