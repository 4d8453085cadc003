package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Status-code mapping with made-up codes: no driver needed (names come from the built-in table then). */
class StatusCheckTest {
    @Test
    void cudaSuccessDoesNotThrow() {
        assertDoesNotThrow(() -> CudaException.check(0, "cuInit(0)"));
    }

    @Test
    void cudaErrorNamesTheCallCodeAndErrorName() {
        CudaException e = assertThrows(CudaException.class, () -> CudaException.check(2, "cuMemAlloc_v2(1024 bytes on cuda:0)"));
        assertTrue(e.getMessage().startsWith("cuMemAlloc_v2(1024 bytes on cuda:0) failed: CUDA_ERROR_OUT_OF_MEMORY (2)"), e.getMessage());
        assertEquals(2, e.code());
        assertEquals("CUDA_ERROR_OUT_OF_MEMORY", e.errorName());
        assertEquals("cuMemAlloc_v2(1024 bytes on cuda:0)", e.call());
    }

    @Test
    void cudaStubLibraryAndNoDeviceHaveTheirNames() {
        assertEquals("CUDA_ERROR_STUB_LIBRARY (34)", CudaException.describe(34));
        assertEquals("CUDA_ERROR_NO_DEVICE (100)", CudaException.describe(100));
        assertEquals("CUDA_ERROR_ILLEGAL_ADDRESS (700)", CudaException.describe(700));
    }

    @Test
    void unknownCudaCodeIsStillReportedWithItsNumber() {
        CudaException e = assertThrows(CudaException.class, () -> CudaException.check(12345, "cuFoo"));
        assertTrue(e.getMessage().startsWith("cuFoo failed: CUDA_ERROR_<unknown 12345> (12345)"), e.getMessage());
    }

    @Test
    void ncclSuccessDoesNotThrow() {
        assertDoesNotThrow(() -> NcclException.check(0, "ncclGroupEnd"));
    }

    @Test
    void ncclErrorNamesTheCallCodeResultAndDescription() {
        NcclException e = assertThrows(NcclException.class, () -> NcclException.check(5, "ncclCommInitRank(rank 0 of 2)"));
        assertTrue(e.getMessage().startsWith("ncclCommInitRank(rank 0 of 2) failed: ncclInvalidUsage (5): "), e.getMessage());
        assertEquals("ncclInvalidUsage", e.resultName());
        assertEquals(5, e.code());
        NcclException remote = NcclException.of(6, "ncclSend");
        assertTrue(remote.getMessage().startsWith("ncclSend failed: ncclRemoteError (6)"), remote.getMessage());
    }

    @Test
    void ncclTimeoutIsNamedAndDescribed() {
        NcclException e = NcclException.of(8, "ncclCommGetAsyncError");
        assertEquals("ncclTimeout", e.resultName());
        assertTrue(e.getMessage().startsWith("ncclCommGetAsyncError failed: ncclTimeout (8): "), e.getMessage());
    }

    @Test
    void unknownNcclCodeIsStillReportedWithItsNumber() {
        NcclException e = assertThrows(NcclException.class, () -> NcclException.check(42, "ncclAllReduce"));
        assertEquals("ncclAllReduce failed: ncclResult_<unknown 42> (42)", e.getMessage());
    }
}
