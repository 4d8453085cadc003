package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.moe4j.cuda.kernels.GpuParity.assertBitEqual;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.ExpertKernels.GemmSpec;

/**
 * {@link CudaExpertKernels#offsetsCheckedOnDevice()}: every grouped kernel (forward, transposed-B,
 * weight gradient, group bias and its gradient; bf16 tensor-core and exact fp32 paths) gives bitwise
 * the checking kernels' results on device offsets without reading them back
 * ({@link CudaBackend#hostReadCount()} unchanged), and bad offsets are clamped into the nearest valid
 * layout (memory-safe, the checking kernels' results on the clamped offsets) instead of refused,
 * while the checking kernels still refuse them.
 */
@Tag("gpu")
class OffsetsOnDeviceGpuTest {
    static final int ROWS = 40;
    static final int K = 16;
    static final int N = 8;
    static final int GROUPS = 3;

    CudaBackend cuda;
    CudaExpertKernels checked;
    Random rnd;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        cuda = GpuParity.backend();
        checked = new CudaExpertKernels(cuda, "mma");
        long seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("OffsetsOnDeviceGpuTest seed=" + seed);
    }

    HostBuffer gaussian(DType t, long... dims) {
        HostBuffer h = HostBuffer.allocate(t, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
        return h;
    }

    /** Runs every grouped kernel with {@code off} and returns the outputs (downloaded after {@code reads} is taken). */
    private List<HostBuffer> runAll(ExpertKernels kernels, DeviceBuffer off, List<DeviceBuffer> in, long[] reads) {
        List<DeviceBuffer> outs = new ArrayList<>();
        long before = cuda.hostReadCount();
        for (GemmSpec spec : new GemmSpec[] {GemmSpec.OVERWRITE, new GemmSpec(false, true)}) {
            DeviceBuffer fwd = poisonedDevice(DType.F32, ROWS, N);
            DeviceBuffer fwdT = poisonedDevice(DType.F32, ROWS, N);
            DeviceBuffer wgrad = poisonedDevice(DType.F32, GROUPS, K, N);
            outs.addAll(List.of(fwd, fwdT, wgrad));
            kernels.groupedMatmul(in.get(0), in.get(1), off, fwd, spec);           // [rows,K] . [G,K,N]
            kernels.groupedMatmulTransposedB(in.get(0), in.get(2), off, fwdT, spec); // [rows,K] . [G,N,K]^T
            kernels.groupedWeightGrad(in.get(0), in.get(3), off, wgrad, spec);      // [rows,K]^T [rows,N]
        }
        DeviceBuffer biased = poisonedDevice(DType.F32, ROWS, N);
        biased.copyFrom(in.get(3));
        DeviceBuffer dBias = poisonedDevice(DType.F32, GROUPS, N);
        kernels.addGroupBias(biased, in.get(4), off);
        kernels.groupBiasGrad(in.get(3), off, dBias);
        outs.addAll(List.of(biased, dBias));
        reads[0] = cuda.hostReadCount() - before;
        List<HostBuffer> host = new ArrayList<>();
        for (DeviceBuffer d : outs) {
            host.add(down(d));
            d.close();
        }
        return host;
    }

    private List<DeviceBuffer> operands() {
        List<DeviceBuffer> in = new ArrayList<>();
        for (long[] dims : new long[][] {{ROWS, K}, {GROUPS, K, N}, {GROUPS, N, K}, {ROWS, N}, {GROUPS, N}}) {
            try (HostBuffer h = gaussian(DType.F32, dims)) {
                in.add(up(h));
            }
        }
        return in;
    }

    private void assertOutputsEqual(List<HostBuffer> want, List<HostBuffer> got, String what) {
        String[] names = {"groupedMatmul", "groupedMatmulTransposedB", "groupedWeightGrad"};
        for (int i = 0; i < want.size(); i++) {
            String name = i < 6 ? names[i % 3] + (i < 3 ? " fp32" : " bf16") : i == 6 ? "addGroupBias" : "groupBiasGrad";
            assertBitEqual(what + ": " + name, want.get(i), got.get(i));
        }
        want.forEach(HostBuffer::close);
        got.forEach(HostBuffer::close);
    }

    @Test
    void validDeviceOffsetsGiveTheCheckedResultsWithoutAHostRead() {
        ExpertKernels onDevice = checked.offsetsCheckedOnDevice();
        assertSame(onDevice, ((CudaExpertKernels) onDevice).offsetsCheckedOnDevice(), "the variant is idempotent");
        List<DeviceBuffer> in = operands();
        try (HostBuffer o = HostBuffer.ofInts(new int[] {0, 12, 12, 33}, GROUPS + 1); DeviceBuffer off = up(o)) {
            long[] checkedReads = new long[1];
            long[] deviceReads = new long[1];
            List<HostBuffer> want = runAll(checked, off, in, checkedReads);
            List<HostBuffer> got = runAll(onDevice, off, in, deviceReads);
            assertEquals(0, deviceReads[0], "device→host reads of the kernels that check offsets on the device");
            assertEquals(8, checkedReads[0], "the checking kernels read the offsets back once per call (control)");
            assertOutputsEqual(want, got, "valid offsets");
        } finally {
            in.forEach(DeviceBuffer::close);
        }
    }

    @Test
    void badDeviceOffsetsAreClampedNotRefusedAndTheCheckedKernelsStillRefuse() {
        ExpertKernels onDevice = checked.offsetsCheckedOnDevice();
        List<DeviceBuffer> in = operands();
        try (HostBuffer bad = HostBuffer.ofInts(new int[] {-3, 30, 20, 50}, GROUPS + 1);
                HostBuffer clean = HostBuffer.ofInts(new int[] {0, 30, 30, ROWS}, GROUPS + 1);
                DeviceBuffer dBad = up(bad); DeviceBuffer dClean = up(clean);
                DeviceBuffer out = poisonedDevice(DType.F32, ROWS, N)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> checked.groupedMatmul(in.get(0), in.get(1), dBad, out, GemmSpec.OVERWRITE));
            org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("groupOffsets[0]=-3 is negative"),
                    e.getMessage());
            long[] reads = new long[1];
            List<HostBuffer> want = runAll(checked, dClean, in, new long[1]);
            List<HostBuffer> got = runAll(onDevice, dBad, in, reads);
            assertEquals(0, reads[0], "device→host reads with bad offsets");
            assertOutputsEqual(want, got, "bad offsets clamped to {0, 30, 30, 40}");
        } finally {
            in.forEach(DeviceBuffer::close);
        }
    }
}
