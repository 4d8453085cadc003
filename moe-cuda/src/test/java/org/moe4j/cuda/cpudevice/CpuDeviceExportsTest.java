package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The CPU device exports every driver and NCCL symbol that moe-cuda looks up: each name passed to
 * {@code findOrThrow("...")} or {@code find("...")} anywhere in moe-cuda's main sources is found in
 * libmoe4j_cpudevice.so, so no binding of the production code is left untested by the CPU device.
 */
@Tag("cpudevice")
class CpuDeviceExportsTest {
    private static final Pattern LOOKUP = Pattern.compile("find(?:OrThrow)?\\(\"((?:cu|nccl)[A-Za-z0-9_]+)\"\\)");

    @Test
    void everySymbolTheBindingsLookUpIsExported() throws IOException {
        String lib = System.getProperty("moe4j.cuda.lib");
        assumeTrue(lib != null && lib.endsWith("libmoe4j_cpudevice.so") && Files.isRegularFile(Path.of(lib)),
                "moe4j.cuda.lib does not name the CPU device library");
        Path main = Path.of(System.getProperty("moe4j.repo.root", "..")).toAbsolutePath().normalize()
                .resolve("moe-cuda/src/main/java");
        Set<String> names = new TreeSet<>();
        try (Stream<Path> files = Files.walk(main)) {
            for (Path j : files.filter(p -> p.toString().endsWith(".java")).toList()) {
                Matcher m = LOOKUP.matcher(Files.readString(j));
                while (m.find()) {
                    names.add(m.group(1));
                }
            }
        }
        assertTrue(names.size() >= 50, "symbol lookups found in moe-cuda: " + names);
        Set<String> missing = new TreeSet<>();
        try (Arena arena = Arena.ofConfined()) {
            SymbolLookup cpu = SymbolLookup.libraryLookup(Path.of(lib), arena);
            for (String n : names) {
                if (cpu.find(n).isEmpty()) {
                    missing.add(n);
                }
            }
        }
        System.out.println(names.size() + " symbols looked up by moe-cuda, all checked");
        assertTrue(missing.isEmpty(), "looked up by moe-cuda but not exported by the CPU device: " + missing);
    }
}
