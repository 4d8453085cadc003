package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** The fatbins the build put on the class path (where nvcc exists) and the error where it did not. */
class KernelResourcesTest {
    /** Magic number at the start of every fatbin file (fatbinary wrapper header). */
    static final int FATBIN_MAGIC = 0xBA55ED50;

    static Path repoRoot() {
        return Path.of(System.getProperty("moe4j.repo.root", "..")).toAbsolutePath().normalize();
    }

    @Test
    void everyNativeSourceHasAFatbinWhenTheBuildHadNvcc() throws IOException {
        Path nativeDir = repoRoot().resolve("native");
        List<String> families;
        try (Stream<Path> s = Files.list(nativeDir)) {
            families = s.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".cu"))
                    .map(n -> n.substring(0, n.length() - 3)).sorted().toList();
        }
        assertTrue(families.contains("smoke"), "native/smoke.cu exists: " + families);
        boolean built = CudaModule.isBuilt(CudaBackend.MARKER_FAMILY);
        System.out.println("kernels built: " + built + " " + families);
        for (String family : families) {
            assertEquals(built, CudaModule.isBuilt(family), "fatbin of " + family + " present like smoke's");
            if (built) {
                byte[] image = CudaModule.image(family);
                assertTrue(image.length > 16, family + ".fatbin is not empty");
                int magic = ByteBuffer.wrap(image).order(ByteOrder.LITTLE_ENDIAN).getInt(0);
                assertEquals(FATBIN_MAGIC, magic, family + ".fatbin starts with the fatbin magic");
            }
        }
    }

    @Test
    void aMissingFamilySaysKernelsWereNotBuilt() {
        KernelsNotBuiltException e = assertThrows(KernelsNotBuiltException.class, () -> CudaModule.image("no_such_family"));
        assertTrue(e.getMessage().startsWith("kernels were not built: nvcc was not found at build time (missing class-path resource "
                + "org/moe4j/cuda/kernels/no_such_family.fatbin"), e.getMessage());
    }
}
