package org.moe4j.cuda;

import java.lang.foreign.MemorySegment;
import org.moe4j.cuda.internal.NativeLibraries;
import org.moe4j.cuda.internal.ffi.nccl.nccl_h;

/**
 * An NCCL call returned an error. {@link #check(int, String)} is the one place where an
 * {@code ncclResult_t} becomes an exception; the message names the call, the code, the result's
 * name and NCCL's description, e.g. {@code ncclCommInitRank(rank 0 of 2) failed: ncclInvalidUsage (5): ...}.
 */
@SuppressWarnings("restricted") // FFM native access is this class's purpose
public final class NcclException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * {@code ncclResult_t} names by value, as nccl.h's {@code enum ncclResult_t} numbers them
     * ({@code ncclTimeout = 8} is in newer releases; older ones end at {@code ncclNumResults = 8}).
     */
    private static final String[] NAMES = {"ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError",
        "ncclInternalError", "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress",
        "ncclTimeout"};
    private static final String[] DESCRIPTIONS = {"no error", "a CUDA call inside NCCL failed",
        "a system call inside NCCL failed (sockets, shared memory, files)", "NCCL hit an internal error",
        "an argument is invalid", "calls are made in a wrong order or disagree across ranks",
        "a remote rank failed or the network broke", "the operation is still in progress",
        "an NCCL operation timed out"};

    /** The NCCL call that failed. */
    private final String call;
    /** Its {@code ncclResult_t} code. */
    private final int code;
    /** The code's name, e.g. {@code ncclInvalidUsage}. */
    private final String resultName;

    /**
     * Creates the exception.
     * @param call        the NCCL call, with its key arguments
     * @param code        the {@code ncclResult_t}
     * @param resultName  e.g. {@code ncclInvalidUsage}
     * @param description NCCL's description
     */
    public NcclException(String call, int code, String resultName, String description) {
        super(call + " failed: " + resultName + " (" + code + ")" + (description == null ? "" : ": " + description));
        this.call = call;
        this.code = code;
        this.resultName = resultName;
    }

    /**
     * Throws unless {@code status} is {@code ncclSuccess}.
     *
     * @param status the {@code ncclResult_t} an NCCL call returned
     * @param call   the call's name (and key arguments)
     * @throws NcclException naming the call, code, result name and description
     */
    public static void check(int status, String call) {
        if (status != nccl_h.ncclSuccess) {
            throw of(status, call);
        }
    }

    /**
     * Returns the exception (not thrown).
     * @param status a non-zero {@code ncclResult_t}
     * @param call   the call's name
     * @return the exception (not thrown)
     */
    public static NcclException of(int status, String call) {
        String name = status >= 0 && status < NAMES.length ? NAMES[status] : "ncclResult_<unknown " + status + ">";
        String description = null;
        if (NativeLibraries.ncclLoaded()) {
            try {
                MemorySegment s = nccl_h.ncclGetErrorString(status);
                if (!s.equals(MemorySegment.NULL)) {
                    description = s.reinterpret(4096).getString(0);
                }
            } catch (RuntimeException | LinkageError e) {
                description = null;
            }
        }
        if (description == null && status >= 0 && status < DESCRIPTIONS.length) {
            description = DESCRIPTIONS[status];
        }
        return new NcclException(call, status, name, description);
    }

    /** @return the built-in names, index = {@code ncclResult_t} value (a copy, for tests) */
    static String[] knownNames() {
        return NAMES.clone();
    }

    /**
     * Returns the NCCL call that failed.
     * @return the NCCL call that failed
     */
    public String call() {
        return call;
    }

    /**
     * Returns the {@code ncclResult_t}.
     * @return the {@code ncclResult_t}
     */
    public int code() {
        return code;
    }

    /**
     * Returns the result's name, e.g. {@code ncclInvalidUsage}.
     * @return the result's name, e.g. {@code ncclInvalidUsage}
     */
    public String resultName() {
        return resultName;
    }
}
