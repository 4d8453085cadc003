package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.core.buffer.HostBuffer;

/** Published checkpoint files get the permissions of any new file in their directory (umask), not 0600. */
class SafetensorsPermissionsTest {
    @TempDir
    Path dir;

    @Test
    void publishedFilesHaveTheDefaultPermissions() throws Exception {
        assumeTrue(FileSystems.getDefault().supportedFileAttributeViews().contains("posix"), "POSIX permissions only");
        Path plain = dir.resolve("plain");
        Files.write(plain, new byte[] {1});
        String want = PosixFilePermissions.toString(Files.getPosixFilePermissions(plain));
        Path st = dir.resolve("a.safetensors");
        try (HostBuffer b = HostBuffer.ofFloats(new float[] {1, 2}, 2)) {
            SafetensorsWriter.write(st, Map.of("x", b), Map.of());
        }
        Path bytes = dir.resolve("index.json");
        SafetensorsWriter.writeBytes(bytes, new byte[] {'{', '}'});
        for (Path p : List.of(st, bytes)) {
            assertEquals(want, PosixFilePermissions.toString(Files.getPosixFilePermissions(p)), p.toString());
        }
    }
}
