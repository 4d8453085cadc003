package org.moe4j.bench.cli;

import java.lang.reflect.InvocationTargetException;

/**
 * Main class of {@code moe.jar}, compiled for Java 8 so that any JVM can load it: on a JDK older than
 * moe4j's it prints the version needed instead of an {@code UnsupportedClassVersionError}; otherwise it
 * runs {@code MoeCli}.
 */
public final class Launcher {
    /** The lowest Java feature release moe4j's other classes run on. */
    static final int MIN_JAVA = 25;

    private Launcher() {
    }

    /**
     * @param args the {@code moe} command line
     * @throws Throwable whatever {@code MoeCli} throws
     */
    public static void main(String[] args) throws Throwable {
        int feature = feature(System.getProperty("java.specification.version", "0"));
        if (feature < MIN_JAVA) {
            System.err.println("moe: needs Java " + MIN_JAVA + " or newer; this is Java "
                    + System.getProperty("java.version") + " (" + System.getProperty("java.home")
                    + "). Install a JDK " + MIN_JAVA + " (e.g. Temurin " + MIN_JAVA + ") and run it with that java,"
                    + " or use ./moe, which finds one.");
            System.exit(2);
        }
        try {
            Class.forName("org.moe4j.bench.cli.MoeCli").getMethod("main", String[].class).invoke(null, (Object) args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    /**
     * @param spec {@code java.specification.version}: "1.8" for Java 8, "25" for Java 25
     * @return the feature release number, 0 if unparsable
     */
    static int feature(String spec) {
        String s = spec.startsWith("1.") ? spec.substring(2) : spec;
        int dot = s.indexOf('.');
        try {
            return Integer.parseInt(dot < 0 ? s : s.substring(0, dot));
        } catch (NumberFormatException e) {
            return 0;
        }
    }
}
