package org.moe4j.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.moe4j.core.cpu.CpuParallel;

class SettingsTest {
    static final String PROP = "moe4j.test.settings.value";

    @Test
    void unsetOrBlankGivesTheFallbackAndGoodValuesParse() {
        System.clearProperty(PROP);
        assertEquals(7, Settings.intProperty(PROP, 7, 1, 10));
        withProperty(PROP, "  ", () -> assertEquals(7, Settings.intProperty(PROP, 7, 1, 10)));
        withProperty(PROP, " 3 ", () -> assertEquals(3, Settings.intProperty(PROP, 7, 1, 10)));
    }

    @Test
    void aValueThatIsNotAnIntegerNamesThePropertyAndTheValue() {
        withProperty(PROP, "four", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Settings.intProperty(PROP, 7, 1, 10));
            assertEquals("system property " + PROP + "='four' is not an integer (allowed: 1 to 10)", e.getMessage());
        });
        withProperty(PROP, "99999999999999999999", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Settings.intProperty(PROP, 7, 1, 10));
            assertEquals("system property " + PROP + "='99999999999999999999' is not an integer (allowed: 1 to 10)",
                    e.getMessage());
        });
    }

    @Test
    void aValueOutOfRangeNamesThePropertyAndTheValue() {
        withProperty(PROP, "0", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Settings.intProperty(PROP, 7, 1, 10));
            assertEquals("system property " + PROP + "='0' is out of range (allowed: 1 to 10)", e.getMessage());
        });
        withProperty(PROP, "3000000000", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Settings.intProperty(PROP, 7, 1, Integer.MAX_VALUE));
            assertEquals("system property " + PROP + "='3000000000' is out of range (allowed: 1 to 2147483647)",
                    e.getMessage());
        });
    }

    @Test
    void thePropertyWinsOverTheEnvironmentAndAnUnsetPairGivesTheFallback() {
        String env = "MOE4J_TEST_SURELY_UNSET_VARIABLE";
        System.clearProperty(PROP);
        assertEquals(5, Settings.intSetting(PROP, env, 5, 0, 9));
        withProperty(PROP, "2", () -> assertEquals(2, Settings.intSetting(PROP, env, 5, 0, 9)));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Settings.parseInt("environment variable LOCAL_RANK", "x1", 0, 9));
        assertEquals("environment variable LOCAL_RANK='x1' is not an integer (allowed: 0 to 9)", e.getMessage());
    }

    @Test
    void cpuThreadCountFromABadPropertyIsRefusedByName() {
        withProperty(CpuParallel.THREADS_PROPERTY, "two", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CpuParallel::configuredThreads);
            assertEquals("system property moe4j.threads='two' is not an integer (allowed: 1 to 65536)", e.getMessage());
        });
        withProperty(CpuParallel.THREADS_PROPERTY, "-2", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CpuParallel::configuredThreads);
            assertEquals("system property moe4j.threads='-2' is out of range (allowed: 1 to 65536)", e.getMessage());
        });
        withProperty(CpuParallel.THREADS_PROPERTY, "3", () -> assertEquals(3, CpuParallel.configuredThreads()));
    }

    private static void withProperty(String name, String value, Runnable body) {
        String old = System.getProperty(name);
        System.setProperty(name, value);
        try {
            body.run();
        } finally {
            if (old == null) {
                System.clearProperty(name);
            } else {
                System.setProperty(name, old);
            }
        }
    }
}
