package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.cuda.kernels.GpuParity.assertBitEqual;
import static org.moe4j.cuda.kernels.GpuParity.assertFullyWritten;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.gaussian;
import static org.moe4j.cuda.kernels.GpuParity.poisoned;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.relError;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchKernels.RecvPlan;
import org.moe4j.dispatch.DispatchKernels.SendPlan;
import org.moe4j.dispatch.internal.CpuDispatchKernels;

/**
 * {@link CudaDispatchKernels} against {@link CpuDispatchKernels} on fresh random inputs: plans and
 * fp32 row kernels bit-exact, dot products within fp32 rounding, outputs poisoned first.
 */
@Tag("gpu")
class CudaDispatchKernelsGpuTest {
    /** rowDots: different (fixed) reduction order than the CPU's lane order. */
    static final double DOT_TOLERANCE = 1e-5;

    final CpuDispatchKernels cpu = new CpuDispatchKernels();
    DispatchKernels gpu;
    Random rnd;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        gpu = new CudaDispatchKernels(GpuParity.backend());
        long seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("seed=" + seed);
    }

    /** Random routing: distinct experts per token, some empty slots, some padding tokens. */
    HostBuffer randomTopk(int tokens, int topK, int experts) {
        HostBuffer idx = HostBuffer.allocate(DType.I32, tokens, topK);
        for (int t = 0; t < tokens; t++) {
            List<Integer> all = new ArrayList<>();
            for (int e = 0; e < experts; e++) {
                all.add(e);
            }
            java.util.Collections.shuffle(all, rnd);
            boolean padding = rnd.nextInt(10) == 0;
            for (int j = 0; j < topK; j++) {
                idx.setInt((long) t * topK + j, padding || rnd.nextInt(8) == 0 ? -1 : all.get(j));
            }
        }
        return idx;
    }

    HostBuffer randomWeights(long... dims) {
        HostBuffer w = HostBuffer.allocate(DType.F32, dims);
        for (long i = 0; i < w.numel(); i++) {
            w.setFloat(i, rnd.nextFloat());
        }
        return w;
    }

    HostBuffer randomIndex(int m, int bound, boolean withMinusOne, boolean permutation) {
        HostBuffer h = HostBuffer.allocate(DType.I32, m);
        List<Integer> perm = new ArrayList<>();
        for (int i = 0; i < bound; i++) {
            perm.add(i);
        }
        java.util.Collections.shuffle(perm, rnd);
        for (int j = 0; j < m; j++) {
            int v = permutation ? perm.get(j) : rnd.nextInt(bound);
            h.setInt(j, withMinusOne && rnd.nextInt(7) == 0 ? -1 : v);
        }
        return h;
    }

    @ParameterizedTest
    @ValueSource(ints = {67, 256, 7168})
    void copyRowsIsBitExactForAnyWidthDtypeAndIndex(int hidden) {
        org.junit.jupiter.api.Assumptions.assumeTrue(!GpuParity.SMALL || hidden < 1000, "small run");
        int n = 300;
        int m = 250;
        for (DType st : new DType[] {DType.F32, DType.BF16}) {
            for (DType dt : new DType[] {DType.F32, DType.BF16}) {
                for (boolean weighted : new boolean[] {false, true}) {
                    try (HostBuffer src = gaussian(rnd, st, n, hidden);
                            HostBuffer si = randomIndex(m, n, true, false);
                            HostBuffer di = randomIndex(m, n, true, true);
                            HostBuffer w = weighted ? randomWeights(m) : null;
                            HostBuffer dstCpu = poisoned(dt, n, hidden);
                            DeviceBuffer dSrc = up(src); DeviceBuffer dSi = up(si); DeviceBuffer dDi = up(di);
                            DeviceBuffer dW = w == null ? null : up(w);
                            DeviceBuffer dDst = poisonedDevice(dt, n, hidden)) {
                        cpu.copyRows(src, si, dstCpu, di, w);
                        gpu.copyRows(dSrc, dSi, dDst, dDi, dW);
                        try (HostBuffer got = down(dDst)) {
                            assertBitEqual("copyRows " + st + "->" + dt + (weighted ? " weighted" : "") + " hidden " + hidden,
                                    dstCpu, got);
                        }
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 8})
    void weightedSumIsBitExactAndWritesEveryToken(int topK) {
        int tokens = 200;
        int rows = 500;
        int hidden = 1030;
        for (DType rt : new DType[] {DType.F32, DType.BF16}) {
            for (DType ot : new DType[] {DType.F32, DType.BF16}) {
                for (boolean weighted : new boolean[] {false, true}) {
                    try (HostBuffer y = gaussian(rnd, rt, rows, hidden);
                            HostBuffer slotRow = randomIndex(tokens * topK, rows, true, false);
                            HostBuffer w = weighted ? randomWeights(tokens, topK) : null;
                            HostBuffer outCpu = poisoned(ot, tokens, hidden);
                            DeviceBuffer dY = up(y); DeviceBuffer dS = up(slotRow);
                            DeviceBuffer dW = w == null ? null : up(w);
                            DeviceBuffer dOut = poisonedDevice(ot, tokens, hidden)) {
                        cpu.weightedSum(y, slotRow, w, outCpu);
                        gpu.weightedSum(dY, dS, dW, dOut);
                        try (HostBuffer got = down(dOut)) {
                            assertFullyWritten("weightedSum", got);
                            assertBitEqual("weightedSum " + rt + "->" + ot + " topK " + topK, outCpu, got);
                        }
                    }
                }
            }
        }
    }

    @Test
    void rowDotsMatchWithinFp32RoundingAndSkipMinusOne() {
        int n = 400;
        int hidden = 2048;
        int m = 350;
        try (HostBuffer a = gaussian(rnd, DType.F32, n, hidden); HostBuffer b = gaussian(rnd, DType.BF16, n, hidden);
                HostBuffer ai = randomIndex(m, n, true, false); HostBuffer bi = randomIndex(m, n, true, false);
                HostBuffer oi = randomIndex(m, m, false, true);
                HostBuffer outCpu = poisoned(DType.F32, m);
                DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dAi = up(ai); DeviceBuffer dBi = up(bi);
                DeviceBuffer dOi = up(oi); DeviceBuffer dOut = poisonedDevice(DType.F32, m)) {
            cpu.rowDots(a, ai, b, bi, outCpu, oi);
            gpu.rowDots(dA, dAi, dB, dBi, dOut, dOi);
            try (HostBuffer got = down(dOut)) {
                assertFullyWritten("rowDots", got);
                double err = relError(got, outCpu);
                assertTrue(err < DOT_TOLERANCE, "rowDots relative error " + err);
                for (int j = 0; j < m; j++) {
                    if (ai.getInt(j) < 0 || bi.getInt(j) < 0) {
                        assertEquals(0f, got.getFloat(oi.getInt(j)), "rowDots of a -1 row");
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4, 8})
    void sendAndRecvPlansEqualTheCpuPlansForAnyWorldSize(int world) {
        int tokens = GpuParity.SMALL ? 100 : 777;
        int topK = 6;
        int experts = 64;
        int local = experts / world;
        for (boolean dedup : new boolean[] {false, true}) {
            try (HostBuffer idx = randomTopk(tokens, topK, experts); HostBuffer w = randomWeights(tokens, topK);
                    DeviceBuffer dIdx = up(idx); DeviceBuffer dW = up(w);
                    HostBuffer countsCpu = poisoned(DType.I32, world, local + 1);
                    DeviceBuffer dCounts = poisonedDevice(DType.I32, world, local + 1)) {
                cpu.countRoutes(idx, experts, world, dedup, countsCpu);
                gpu.countRoutes(dIdx, experts, world, dedup, dCounts);
                try (HostBuffer got = down(dCounts)) {
                    assertBitEqual("countRoutes dedup=" + dedup, countsCpu, got);
                }
                int units = 0;
                for (int d = 0; d < world; d++) {
                    units += countsCpu.getInt((long) d * (local + 1) + local);
                }
                int slots = 0;
                for (long i = 0; i < idx.numel(); i++) {
                    slots += idx.getInt(i) >= 0 ? 1 : 0;
                }
                int width = DispatchKernels.META_FIXED + 2 * topK;
                HostBuffer[] hp = {poisoned(DType.I32, units), poisoned(DType.I32, units, width), poisoned(DType.I32, slots),
                        poisoned(DType.I32, slots), poisoned(DType.I32, (long) tokens * topK)};
                DeviceBuffer[] dp = {poisonedDevice(DType.I32, units), poisonedDevice(DType.I32, units, width),
                        poisonedDevice(DType.I32, slots), poisonedDevice(DType.I32, slots),
                        poisonedDevice(DType.I32, (long) tokens * topK)};
                try {
                    cpu.buildSendPlan(idx, w, experts, world, 1 % world, dedup, new SendPlan(hp[0], hp[1], hp[2], hp[3], hp[4]));
                    gpu.buildSendPlan(dIdx, dW, experts, world, 1 % world, dedup, new SendPlan(dp[0], dp[1], dp[2], dp[3], dp[4]));
                    String[] names = {"sendToken", "sendMeta", "returnToken", "returnSlot", "slotReturnRow"};
                    for (int i = 0; i < hp.length; i++) {
                        try (HostBuffer got = down(dp[i])) {
                            assertFullyWritten(names[i], got);
                            assertBitEqual(names[i] + " world " + world + " dedup " + dedup, hp[i], got);
                        }
                    }
                    // the last rank receives every unit sent to it (one source rank is enough for the plan)
                    int r = world - 1;
                    int first = 0;
                    for (int d = 0; d < r; d++) {
                        first += countsCpu.getInt((long) d * (local + 1) + local);
                    }
                    int recvUnits = countsCpu.getInt((long) r * (local + 1) + local);
                    checkRecvPlan(hp[1], first, recvUnits, width, r * local, local);
                } finally {
                    for (int i = 0; i < hp.length; i++) {
                        hp[i].close();
                        dp[i].close();
                    }
                }
            }
        }
    }

    private void checkRecvPlan(HostBuffer sendMeta, int firstUnit, int units, int width, int firstExpert, int local) {
        try (HostBuffer meta = HostBuffer.allocate(DType.I32, Math.max(units, 0), width)) {
            for (long i = 0; i < (long) units * width; i++) {
                meta.setInt(i, sendMeta.getInt((long) firstUnit * width + i));
            }
            try (DeviceBuffer dMeta = up(meta); HostBuffer countsCpu = poisoned(DType.I32, local);
                    DeviceBuffer dCounts = poisonedDevice(DType.I32, local)) {
                cpu.countLocal(meta, firstExpert, local, countsCpu);
                gpu.countLocal(dMeta, firstExpert, local, dCounts);
                try (HostBuffer got = down(dCounts)) {
                    assertBitEqual("countLocal", countsCpu, got);
                }
                int align = 4;
                int[] off = new int[local + 1];
                int slots = 0;
                for (int l = 0; l < local; l++) {
                    int c = countsCpu.getInt(l);
                    slots += c;
                    off[l + 1] = off[l] + (c + align - 1) / align * align;
                }
                int rows = off[local];
                try (HostBuffer offsets = HostBuffer.ofInts(off, local + 1); DeviceBuffer dOff = up(offsets)) {
                    DType[] types = {DType.I32, DType.I32, DType.I32, DType.F32, DType.I32, DType.I32, DType.I32};
                    long[] sizes = {slots, slots, slots, slots, rows, rows, rows};
                    HostBuffer[] hp = new HostBuffer[7];
                    DeviceBuffer[] dp = new DeviceBuffer[7];
                    for (int i = 0; i < 7; i++) {
                        hp[i] = poisoned(types[i], sizes[i]);
                        dp[i] = poisonedDevice(types[i], sizes[i]);
                    }
                    try {
                        cpu.buildRecvPlan(meta, firstExpert, offsets, new RecvPlan(hp[0], hp[1], hp[2], hp[3], hp[4], hp[5], hp[6]));
                        gpu.buildRecvPlan(dMeta, firstExpert, dOff, new RecvPlan(dp[0], dp[1], dp[2], dp[3], dp[4], dp[5], dp[6]));
                        String[] names = {"slotUnit", "slotUnitSlot", "slotExpertRow", "slotWeight", "rowSrcRank",
                                "rowSrcIndex", "rowTopkSlot"};
                        for (int i = 0; i < 7; i++) {
                            try (HostBuffer got = down(dp[i])) {
                                assertFullyWritten(names[i], got);
                                assertBitEqual(names[i], hp[i], got);
                            }
                        }
                    } finally {
                        for (int i = 0; i < 7; i++) {
                            hp[i].close();
                            dp[i].close();
                        }
                    }
                }
            }
        }
    }

    @Test
    void packUnitsValidSlotsAndScatterValuesEqualTheCpu() {
        int tokens = 300;
        int topK = 4;
        try (HostBuffer idx = randomTopk(tokens, topK, 16); HostBuffer w = randomWeights(tokens, topK);
                DeviceBuffer dIdx = up(idx); DeviceBuffer dW = up(w);
                HostBuffer metaCpu = poisoned(DType.I32, tokens, 2 + 2 * topK);
                DeviceBuffer dMeta = poisonedDevice(DType.I32, tokens, 2 + 2 * topK);
                HostBuffer srCpu = poisoned(DType.I32, tokens * topK); HostBuffer stCpu = poisoned(DType.I32, tokens * topK);
                DeviceBuffer dSr = poisonedDevice(DType.I32, tokens * topK);
                DeviceBuffer dSt = poisonedDevice(DType.I32, tokens * topK)) {
            cpu.packUnits(idx, w, 3, metaCpu);
            gpu.packUnits(dIdx, dW, 3, dMeta);
            cpu.validSlots(idx, srCpu, stCpu);
            gpu.validSlots(dIdx, dSr, dSt);
            try (HostBuffer m = down(dMeta); HostBuffer sr = down(dSr); HostBuffer st = down(dSt)) {
                assertBitEqual("packUnits", metaCpu, m);
                assertBitEqual("validSlots slotRow", srCpu, sr);
                assertBitEqual("validSlots slotToken", stCpu, st);
            }
            try (HostBuffer index = randomIndex(tokens * topK, tokens * topK, true, true);
                    HostBuffer dstCpu = poisoned(DType.F32, tokens * topK);
                    DeviceBuffer dIndex = up(index); DeviceBuffer dDst = poisonedDevice(DType.F32, tokens * topK)) {
                HostBuffer flatW = w.reshape(tokens * topK);
                cpu.scatterValues(flatW, index, dstCpu);
                gpu.scatterValues(dW.reshape(tokens * topK), dIndex, dDst);
                try (HostBuffer got = down(dDst)) {
                    assertBitEqual("scatterValues", dstCpu, got);
                }
            }
        }
    }

    @Test
    void composeIndexEqualsTheCpuAndKeepsMinusOne() {
        int n = 1000;
        int m = 2500;
        try (HostBuffer table = randomIndex(n, n, false, true); HostBuffer index = randomIndex(m, n, true, false);
                HostBuffer outCpu = poisoned(DType.I32, m);
                DeviceBuffer dTable = up(table); DeviceBuffer dIndex = up(index);
                DeviceBuffer dOut = poisonedDevice(DType.I32, m)) {
            cpu.composeIndex(table, index, outCpu);
            gpu.composeIndex(dTable, dIndex, dOut);
            try (HostBuffer got = down(dOut)) {
                assertBitEqual("composeIndex", outCpu, got);
            }
        }
    }

    @Test
    void countRoutesRejectsAnExpertIdOutOfRangeNamingTheEntry() {
        try (HostBuffer idx = HostBuffer.ofInts(new int[] {0, 1, 2, -1, 70, 3}, 3, 2); DeviceBuffer dIdx = up(idx);
                DeviceBuffer counts = poisonedDevice(DType.I32, 2, 33)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> gpu.countRoutes(dIdx, 64, 2, false, counts));
            assertTrue(e.getMessage().contains("topkIdx[2, 0] = 70 is outside [0, 64)"), e.getMessage());
        }
    }
}
