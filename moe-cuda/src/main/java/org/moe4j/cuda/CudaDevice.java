package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Locale;
import org.moe4j.core.Device;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * What the driver reports about one device.
 *
 * @param ordinal              device index ({@code cuda:N})
 * @param handle               the driver's {@code CUdevice}
 * @param name                 e.g. {@code NVIDIA H100 80GB HBM3}
 * @param major                compute capability, major
 * @param minor                compute capability, minor
 * @param totalMemory          device memory in bytes
 * @param multiprocessors      streaming multiprocessors
 * @param l2CacheBytes         L2 cache size in bytes
 * @param maxSharedMemoryOptin shared memory a block may opt in to, in bytes
 */
public record CudaDevice(int ordinal, int handle, String name, int major, int minor, long totalMemory,
                         int multiprocessors, int l2CacheBytes, int maxSharedMemoryOptin) {

    /**
     * Queries a device.
     *
     * @param ordinal device index
     * @return its description
     * @throws IllegalArgumentException when the ordinal is out of range
     * @throws CudaException            when the driver fails
     */
    public static CudaDevice query(int ordinal) {
        int count = Cuda.deviceCount();
        if (ordinal < 0 || ordinal >= count) {
            throw new IllegalArgumentException("cuda:" + ordinal + " does not exist: " + count + " CUDA device(s) visible");
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment i = a.allocate(ValueLayout.JAVA_INT);
            CudaException.check(cuda_h.cuDeviceGet(i, ordinal), "cuDeviceGet(" + ordinal + ")");
            int dev = i.get(ValueLayout.JAVA_INT, 0);
            MemorySegment name = a.allocate(256);
            CudaException.check(cuda_h.cuDeviceGetName(name, 256, dev), "cuDeviceGetName");
            MemorySegment bytes = a.allocate(ValueLayout.JAVA_LONG);
            CudaException.check(cuda_h.cuDeviceTotalMem_v2(bytes, dev), "cuDeviceTotalMem_v2");
            return new CudaDevice(ordinal, dev, name.getString(0),
                    attribute(a, dev, cuda_h.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                    attribute(a, dev, cuda_h.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
                    bytes.get(ValueLayout.JAVA_LONG, 0),
                    attribute(a, dev, cuda_h.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
                    attribute(a, dev, cuda_h.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
                    attribute(a, dev, cuda_h.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN));
        }
    }

    private static int attribute(Arena a, int dev, int attribute) {
        MemorySegment i = a.allocate(ValueLayout.JAVA_INT);
        CudaException.check(cuda_h.cuDeviceGetAttribute(i, attribute, dev), "cuDeviceGetAttribute(" + attribute + ")");
        return i.get(ValueLayout.JAVA_INT, 0);
    }

    /**
     * Returns a description such as {@code "9.0"}.
     * @return e.g. {@code "9.0"}
     */
    public String computeCapability() {
        return major + "." + minor;
    }

    /**
     * Returns the moe-core device, {@code cuda:N}.
     * @return the moe-core device, {@code cuda:N}
     */
    public Device device() {
        return Device.cuda(ordinal);
    }

    /**
     * Returns a description such as {@code cuda:0 NVIDIA H100 80GB HBM3, compute capability 9.0, 79.2 GiB, 132 SMs}.
     * @return e.g. {@code cuda:0 NVIDIA H100 80GB HBM3, compute capability 9.0, 79.2 GiB, 132 SMs}
     */
    public String describe() {
        return String.format(Locale.ROOT, "cuda:%d %s, compute capability %s, %.1f GiB, %d SMs", ordinal, name,
                computeCapability(), totalMemory / (double) (1L << 30), multiprocessors);
    }
}
