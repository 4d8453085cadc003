package org.moe4j.core;

import java.util.Optional;

/**
 * The JVM flags moe4j needs, checked where they are first needed so that a missing flag fails with
 * one message naming it, instead of a {@link NoClassDefFoundError} deep inside a rank thread or a
 * warning from a restricted method.
 *
 * <ul>
 *   <li>The CPU kernels use the incubating Vector API: on the class path start the JVM with
 *       {@value #VECTOR_FLAG} (on the module path moe4j's modules require it themselves).</li>
 *   <li>The CUDA backend calls native code through the FFM API: start the JVM with
 *       {@code --enable-native-access=ALL-UNNAMED} on the class path, or
 *       {@code --enable-native-access=org.moe4j.cuda} on the module path.</li>
 * </ul>
 */
public final class JvmRequirements {
    /** The name of the incubating Vector API module. */
    public static final String VECTOR_MODULE = "jdk.incubator.vector";
    /** The JVM flag that makes the Vector API available on the class path. */
    public static final String VECTOR_FLAG = "--add-modules " + VECTOR_MODULE;
    /** The lowest Java feature release moe4j's class files run on. */
    public static final int MIN_JAVA = 25;

    private JvmRequirements() {
    }

    /**
     * Returns whether the Vector API module is in the running JVM's boot layer.
     * @return whether the Vector API module is in the running JVM's boot layer
     */
    public static boolean vectorApiAvailable() {
        Optional<Module> m = ModuleLayer.boot().findModule(VECTOR_MODULE);
        return m.isPresent();
    }

    /**
     * Checks that the Vector API is available.
     *
     * @param who what needs it, for the message (e.g. "the CPU routing kernels")
     * @throws IllegalStateException naming the missing JVM flag
     */
    public static void requireVectorApi(String who) {
        if (!vectorApiAvailable()) {
            throw new IllegalStateException(who + " use the incubating Vector API, which this JVM was started without:"
                    + " add the JVM flag " + VECTOR_FLAG + " (java " + VECTOR_FLAG + " ...; Maven Surefire: argLine;"
                    + " Gradle: jvmArgs)");
        }
    }

    /**
     * The flag that enables native access for a module.
     *
     * @param module the module calling restricted FFM methods
     * @return {@code --enable-native-access=ALL-UNNAMED} for the class path, else with the module's name
     */
    public static String nativeAccessFlag(Module module) {
        return "--enable-native-access=" + (module.isNamed() ? module.getName() : "ALL-UNNAMED");
    }

    /**
     * Checks that native access is enabled for a module.
     *
     * @param module the module that calls restricted FFM methods
     * @param who    what needs it, for the message (e.g. "the CUDA backend")
     * @throws IllegalStateException naming the missing JVM flag
     */
    public static void requireNativeAccess(Module module, String who) {
        if (!module.isNativeAccessEnabled()) {
            throw new IllegalStateException(who + " calls native code through the FFM API, and native access is not"
                    + " enabled for " + (module.isNamed() ? "module " + module.getName() : "the class path")
                    + ": add the JVM flag " + nativeAccessFlag(module));
        }
    }
}
