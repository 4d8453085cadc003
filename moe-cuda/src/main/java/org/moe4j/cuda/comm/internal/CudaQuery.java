package org.moe4j.cuda.comm.internal;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * The non-blocking completion query of {@code cuda.h} that the communicators' watchdog polls, in
 * the shape of the {@code cuda_h} bindings (lazy holder, C name, {@code $handle}). It belongs in
 * {@code cuda_h}; it lives here until that class carries it.
 */
@SuppressWarnings("restricted")
public final class CudaQuery {
    /** {@code CUDA_SUCCESS}: the work before the event has completed. */
    public static final int CUDA_SUCCESS = 0;
    /** {@code CUDA_ERROR_NOT_READY}: still running. */
    public static final int CUDA_ERROR_NOT_READY = 600;

    private CudaQuery() {
    }

    private static final class cuEventQuery {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS);
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(
                cuda_h.symbolLookup().find("cuEventQuery").orElseThrow(() ->
                        new UnsatisfiedLinkError("libcuda: symbol cuEventQuery not found")), DESC);
    }

    /** @return the downcall handle of {@code cuEventQuery} */
    public static MethodHandle cuEventQuery$handle() {
        return cuEventQuery.HANDLE;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventQuery(CUevent hEvent)
     * }
     * @param hEvent the event
     * @return {@link #CUDA_SUCCESS}, {@link #CUDA_ERROR_NOT_READY}, or an error code
     */
    public static int cuEventQuery(MemorySegment hEvent) {
        try {
            return (int) cuEventQuery.HANDLE.invokeExact(hEvent);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("cuEventQuery", t);
        }
    }
}
