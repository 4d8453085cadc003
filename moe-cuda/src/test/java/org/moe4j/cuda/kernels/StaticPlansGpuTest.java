package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.cuda.kernels.GpuParity.assertBitEqual;
import static org.moe4j.cuda.kernels.GpuParity.assertFullyWritten;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.poisoned;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchKernels.RecvPlan;
import org.moe4j.dispatch.DispatchKernels.StaticSendPlan;
import org.moe4j.dispatch.internal.StaticPlans;

/**
 * The static-shape plans built on the device ({@link CudaDispatchKernels#buildStaticSendPlanDeferred},
 * {@link CudaDispatchKernels#buildStaticRecvPlan}) are bitwise the host reference
 * ({@link StaticPlans}) for any world size, both drop policies, over-full and roomy chunks, weight ties
 * and signed zeros; building them reads nothing back to the host ({@link CudaBackend#hostReadCount()}
 * unchanged); refused input becomes a fault record and an all-padding plan (deferred) or an exception
 * before anything is written (eager). Outputs are poisoned first.
 */
@Tag("gpu")
class StaticPlansGpuTest {
    static final String[] SEND = {"sendToken", "sendMeta", "returnSlot", "slotReturnRow", "dropped"};
    static final String[] RECV = {"slotUnit", "slotUnitSlot", "slotExpertRow", "slotWeight", "rowSrcRank", "rowSrcIndex",
        "rowTopkSlot"};

    CudaBackend cuda;
    CudaDispatchKernels gpu;
    Random rnd;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        cuda = GpuParity.backend();
        gpu = new CudaDispatchKernels(cuda);
        long seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("StaticPlansGpuTest seed=" + seed);
    }

    /** Routing with empty slots, repeated experts across tokens and few distinct weights (ties, ±0). */
    HostBuffer[] routing(int tokens, int topK, int experts) {
        HostBuffer idx = HostBuffer.allocate(DType.I32, tokens, topK);
        HostBuffer w = HostBuffer.allocate(DType.F32, tokens, topK);
        float[] values = {0.25f, 0.5f, 0.75f, 0f, -0f, 0.5f};
        for (long s = 0; s < idx.numel(); s++) {
            idx.setInt(s, rnd.nextInt(9) == 0 ? -1 : rnd.nextInt(experts));
            w.setFloat(s, rnd.nextInt(3) == 0 ? values[rnd.nextInt(values.length)] : rnd.nextFloat());
        }
        return new HostBuffer[] {idx, w};
    }

    static StaticSendPlan hostPlan(int tokens, int topK, int world, int capacity) {
        long n = (long) world * capacity;
        return new StaticSendPlan(poisoned(DType.I32, n), poisoned(DType.I32, n, DispatchKernels.META_FIXED + 2L * topK),
                poisoned(DType.I32, n), poisoned(DType.I32, (long) tokens * topK), poisoned(DType.I32, world));
    }

    static StaticSendPlan devicePlan(int tokens, int topK, int world, int capacity) {
        long n = (long) world * capacity;
        return new StaticSendPlan(poisonedDevice(DType.I32, n),
                poisonedDevice(DType.I32, n, DispatchKernels.META_FIXED + 2L * topK), poisonedDevice(DType.I32, n),
                poisonedDevice(DType.I32, (long) tokens * topK), poisonedDevice(DType.I32, world));
    }

    static Buffer[] parts(StaticSendPlan p) {
        return new Buffer[] {p.sendToken(), p.sendMeta(), p.returnSlot(), p.slotReturnRow(), p.dropped()};
    }

    static Buffer[] parts(RecvPlan p) {
        return new Buffer[] {p.slotUnit(), p.slotUnitSlot(), p.slotExpertRow(), p.slotWeight(), p.rowSrcRank(),
            p.rowSrcIndex(), p.rowTopkSlot()};
    }

    @ParameterizedTest(name = "W={0}")
    @ValueSource(ints = {1, 2, 4})
    void devicePlansAreBitwiseTheHostPlansAndReadNothingBack(int world) {
        int tokens = GpuParity.SMALL ? 48 : 500;
        int topK = 3;
        int experts = 8;
        int local = experts / world;
        int worstCase = tokens * topK;
        int tight = Math.max(1, worstCase / world / 3); // most chunks overflow
        long droppedTotal = 0;
        for (DropPolicy policy : DropPolicy.values()) {
            for (int capacity : new int[] {tight, worstCase}) {
                HostBuffer[] r = routing(tokens, topK, experts);
                String what = "W=" + world + " " + policy + " C=" + capacity;
                try (HostBuffer idx = r[0]; HostBuffer w = r[1]; DeviceBuffer dIdx = up(idx); DeviceBuffer dW = up(w);
                        StaticSendPlan want = hostPlan(tokens, topK, world, capacity);
                        StaticSendPlan got = devicePlan(tokens, topK, world, capacity);
                        DeviceBuffer fault = poisonedDevice(DType.I32, DispatchKernels.STATIC_FAULT_SIZE)) {
                    StaticPlans.buildSendPlan(idx, w, experts, world, world - 1, capacity, policy, want);
                    long reads = cuda.hostReadCount();
                    gpu.buildStaticSendPlanDeferred(dIdx, dW, experts, world, world - 1, capacity, policy, got, fault);
                    assertEquals(reads, cuda.hostReadCount(), what + ": the deferred send plan read device memory back");
                    for (int i = 0; i < SEND.length; i++) {
                        try (HostBuffer g = down(parts(got)[i])) {
                            assertFullyWritten(SEND[i], g);
                            assertBitEqual(SEND[i] + " " + what, (HostBuffer) parts(want)[i], g);
                        }
                    }
                    try (HostBuffer f = down(fault)) {
                        assertArrayEquals(new int[] {Integer.MAX_VALUE, 0, 0}, f.toIntArray(), what + ": fault record");
                    }
                    for (int d = 0; d < world; d++) {
                        droppedTotal += ((HostBuffer) want.dropped()).getInt(d);
                    }
                    for (int alignment : new int[] {1, 4}) {
                        checkRecvPlan((HostBuffer) want.sendMeta(), (world - 1) * local, local, alignment, what);
                    }
                }
            }
        }
        assertTrue(droppedTotal > 0, "the tight capacity overflowed no chunk: the drop path was not exercised");
    }

    /** The send plan's rows as a receiver's input (every chunk, only the local experts count). */
    private void checkRecvPlan(HostBuffer meta, int firstExpert, int local, int alignment, String what) {
        int units = meta.shape().dimInt(0);
        long rowsMax = units + (long) local * (alignment - 1);
        HostBuffer[] hp = {poisoned(DType.I32, units), poisoned(DType.I32, units), poisoned(DType.I32, units),
            poisoned(DType.F32, units), poisoned(DType.I32, rowsMax), poisoned(DType.I32, rowsMax),
            poisoned(DType.I32, rowsMax)};
        DeviceBuffer[] dp = {poisonedDevice(DType.I32, units), poisonedDevice(DType.I32, units),
            poisonedDevice(DType.I32, units), poisonedDevice(DType.F32, units), poisonedDevice(DType.I32, rowsMax),
            poisonedDevice(DType.I32, rowsMax), poisonedDevice(DType.I32, rowsMax)};
        try (DeviceBuffer dMeta = up(meta); HostBuffer off = poisoned(DType.I32, local + 1L);
                HostBuffer tpl = poisoned(DType.I32, local); DeviceBuffer dOff = poisonedDevice(DType.I32, local + 1L);
                DeviceBuffer dTpl = poisonedDevice(DType.I32, local)) {
            StaticPlans.buildRecvPlan(meta, firstExpert, alignment, off, tpl,
                    new RecvPlan(hp[0], hp[1], hp[2], hp[3], hp[4], hp[5], hp[6]));
            long reads = cuda.hostReadCount();
            gpu.buildStaticRecvPlan(dMeta, firstExpert, alignment, dOff, dTpl,
                    new RecvPlan(dp[0], dp[1], dp[2], dp[3], dp[4], dp[5], dp[6]));
            assertEquals(reads, cuda.hostReadCount(), what + ": the receive plan read device memory back");
            String at = what + " alignment " + alignment;
            try (HostBuffer g = down(dOff); HostBuffer t = down(dTpl)) {
                assertBitEqual("groupOffsets " + at, off, g);
                assertBitEqual("tokensPerLocalExpert " + at, tpl, t);
            }
            for (int i = 0; i < RECV.length; i++) {
                try (HostBuffer g = down(dp[i])) {
                    assertFullyWritten(RECV[i], g);
                    assertBitEqual(RECV[i] + " " + at, hp[i], g);
                }
            }
        } finally {
            for (int i = 0; i < hp.length; i++) {
                hp[i].close();
                dp[i].close();
            }
        }
    }

    @Test
    void refusedInputIsAFaultRecordAndAnAllPaddingPlanOrAnEagerException() {
        int tokens = 6;
        int topK = 2;
        int experts = 4;
        int world = 2;
        int capacity = tokens * topK;
        try (HostBuffer idx = HostBuffer.ofInts(new int[] {0, 1, 2, 3, 1, -1, 0, 2, 3, 1, 2, 0}, tokens, topK);
                HostBuffer w = HostBuffer.allocate(DType.F32, tokens, topK)) {
            for (long s = 0; s < w.numel(); s++) {
                w.setFloat(s, 0.5f);
            }
            w.setFloat(9, Float.NaN);  // slot [4, 1]
            idx.setInt(7, 99);         // slot [3, 1], the lowest refused one
            try (DeviceBuffer dIdx = up(idx); DeviceBuffer dW = up(w);
                    StaticSendPlan got = devicePlan(tokens, topK, world, capacity);
                    DeviceBuffer fault = poisonedDevice(DType.I32, DispatchKernels.STATIC_FAULT_SIZE)) {
                long reads = cuda.hostReadCount();
                gpu.buildStaticSendPlanDeferred(dIdx, dW, experts, world, 0, capacity, DropPolicy.BY_POSITION, got, fault);
                assertEquals(reads, cuda.hostReadCount(), "the deferred check read device memory back");
                try (HostBuffer f = down(fault); HostBuffer token = down(got.sendToken());
                        HostBuffer returnRow = down(got.slotReturnRow()); HostBuffer dropped = down(got.dropped())) {
                    assertArrayEquals(new int[] {7, 99, Float.floatToRawIntBits(0.5f)}, f.toIntArray(), "fault record");
                    IllegalArgumentException e = org.moe4j.dispatch.spi.StaticPlanArgs.refusal(f.toIntArray(), topK, experts);
                    assertTrue(e.getMessage().contains("topkIdx[3, 1] = 99"), e.getMessage());
                    for (long i = 0; i < token.numel(); i++) {
                        assertEquals(-1, token.getInt(i), "a refused step sends no row (row " + i + ")");
                    }
                    for (long s = 0; s < returnRow.numel(); s++) {
                        assertEquals(-1, returnRow.getInt(s), "slot " + s + " of a refused step");
                    }
                    assertArrayEquals(new int[] {0, 0}, dropped.toIntArray(), "a refused step drops nothing");
                }
                assertThrows(IllegalArgumentException.class, () -> gpu.buildStaticSendPlanDeferred(dIdx, dW, 3, world, 0,
                        capacity, DropPolicy.BY_POSITION, got, fault), "experts not a multiple of world");
                IllegalArgumentException eager = assertThrows(IllegalArgumentException.class, () -> gpu.buildStaticSendPlan(
                        dIdx, dW, experts, world, 0, capacity, DropPolicy.BY_POSITION, got));
                assertTrue(eager.getMessage().contains("topkIdx[3, 1] = 99"), eager.getMessage());
                idx.setInt(7, 2);
                ((DeviceBuffer) dIdx).copyFrom(idx);
                IllegalArgumentException nan = assertThrows(IllegalArgumentException.class, () -> gpu.buildStaticSendPlan(
                        dIdx, dW, experts, world, 0, capacity, DropPolicy.BY_POSITION, got));
                assertTrue(nan.getMessage().contains("topkWeights[4, 1] = NaN is not finite"), nan.getMessage());
            }
        }
    }
}
