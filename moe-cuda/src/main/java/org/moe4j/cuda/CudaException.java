package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Map;
import org.moe4j.cuda.internal.NativeLibraries;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * A CUDA driver call returned an error. {@link #check(int, String)} is the one place where a
 * {@code CUresult} becomes an exception; the message names the call, the code, the error name and
 * the driver's description, e.g.
 * {@code cuMemAlloc_v2(1073741824 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory}.
 */
@SuppressWarnings("restricted") // FFM native access is this class's purpose
public final class CudaException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * Names of common codes, used when the driver cannot be asked (not loaded, or it does not know the
     * code): driver {@code CUresult} values only, as cuda.h's {@code enum cudaError_enum} numbers them
     * (the runtime's {@code cudaError_t} differs, e.g. its 35 {@code cudaErrorInsufficientDriver} is no
     * {@code CUresult}).
     */
    private static final Map<Integer, String> KNOWN = Map.ofEntries(
            Map.entry(1, "CUDA_ERROR_INVALID_VALUE"), Map.entry(2, "CUDA_ERROR_OUT_OF_MEMORY"),
            Map.entry(3, "CUDA_ERROR_NOT_INITIALIZED"), Map.entry(4, "CUDA_ERROR_DEINITIALIZED"),
            Map.entry(34, "CUDA_ERROR_STUB_LIBRARY"), Map.entry(36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER"),
            Map.entry(46, "CUDA_ERROR_DEVICE_UNAVAILABLE"),
            Map.entry(100, "CUDA_ERROR_NO_DEVICE"), Map.entry(101, "CUDA_ERROR_INVALID_DEVICE"),
            Map.entry(200, "CUDA_ERROR_INVALID_IMAGE"), Map.entry(201, "CUDA_ERROR_INVALID_CONTEXT"),
            Map.entry(209, "CUDA_ERROR_NO_BINARY_FOR_GPU"), Map.entry(218, "CUDA_ERROR_INVALID_PTX"),
            Map.entry(222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"), Map.entry(400, "CUDA_ERROR_INVALID_HANDLE"),
            Map.entry(500, "CUDA_ERROR_NOT_FOUND"), Map.entry(600, "CUDA_ERROR_NOT_READY"),
            Map.entry(700, "CUDA_ERROR_ILLEGAL_ADDRESS"), Map.entry(701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"),
            Map.entry(702, "CUDA_ERROR_LAUNCH_TIMEOUT"), Map.entry(709, "CUDA_ERROR_CONTEXT_IS_DESTROYED"),
            Map.entry(710, "CUDA_ERROR_ASSERT"), Map.entry(715, "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
            Map.entry(716, "CUDA_ERROR_MISALIGNED_ADDRESS"), Map.entry(719, "CUDA_ERROR_LAUNCH_FAILED"),
            Map.entry(800, "CUDA_ERROR_NOT_PERMITTED"),
            Map.entry(900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"), Map.entry(901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"),
            Map.entry(910, "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE"), Map.entry(801, "CUDA_ERROR_NOT_SUPPORTED"),
            Map.entry(803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"), Map.entry(999, "CUDA_ERROR_UNKNOWN"));

    /** The driver call that failed. */
    private final String call;
    /** Its {@code CUresult} code. */
    private final int code;
    /** The code's name, e.g. {@code CUDA_ERROR_OUT_OF_MEMORY}. */
    private final String errorName;

    /** @return the built-in code-to-name table (for tests) */
    static Map<Integer, String> knownNames() {
        return KNOWN;
    }

    /**
     * Creates the exception.
     * @param call        the driver call, with its key arguments
     * @param code        the {@code CUresult}
     * @param errorName   e.g. {@code CUDA_ERROR_OUT_OF_MEMORY}
     * @param description the driver's description
     */
    public CudaException(String call, int code, String errorName, String description) {
        super(call + " failed: " + errorName + " (" + code + ")" + (description == null ? "" : ": " + description));
        this.call = call;
        this.code = code;
        this.errorName = errorName;
    }

    /**
     * Throws unless {@code status} is {@code CUDA_SUCCESS}.
     *
     * @param status the {@code CUresult} a driver call returned
     * @param call   the call's name (and key arguments)
     * @throws CudaException naming the call, code, error name and description
     */
    public static void check(int status, String call) {
        if (status != cuda_h.CUDA_SUCCESS) {
            throw of(status, call);
        }
    }

    /**
     * Returns the exception (not thrown).
     * @param status a non-zero {@code CUresult}
     * @param call   the call's name
     * @return the exception (not thrown)
     */
    public static CudaException of(int status, String call) {
        String name = null;
        String description = null;
        if (NativeLibraries.cudaLoaded()) {
            name = driverString(status, true);
            description = driverString(status, false);
        }
        if (name == null) {
            name = KNOWN.getOrDefault(status, "CUDA_ERROR_<unknown " + status + ">");
        }
        return new CudaException(call, status, name, description);
    }

    /**
     * Describes a code without throwing (for logs and probe messages).
     *
     * @param status a {@code CUresult}
     * @return e.g. {@code CUDA_ERROR_NO_DEVICE (100)}
     */
    public static String describe(int status) {
        return of(status, "").errorName() + " (" + status + ")";
    }

    private static String driverString(int status, boolean name) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            int rc = name ? cuda_h.cuGetErrorName(status, out) : cuda_h.cuGetErrorString(status, out);
            if (rc != cuda_h.CUDA_SUCCESS) {
                return null;
            }
            MemorySegment str = out.get(ValueLayout.ADDRESS, 0);
            return str.equals(MemorySegment.NULL) ? null : str.reinterpret(4096).getString(0);
        } catch (RuntimeException | LinkageError e) {
            return null;
        }
    }

    /**
     * Returns the driver call that failed.
     * @return the driver call that failed
     */
    public String call() {
        return call;
    }

    /**
     * Returns the {@code CUresult}.
     * @return the {@code CUresult}
     */
    public int code() {
        return code;
    }

    /**
     * Returns the error's name, e.g. {@code CUDA_ERROR_OUT_OF_MEMORY}.
     * @return the error's name, e.g. {@code CUDA_ERROR_OUT_OF_MEMORY}
     */
    public String errorName() {
        return errorName;
    }
}
