package org.moe4j.core;

import java.util.Objects;

/**
 * Reads numeric settings from system properties and environment variables. A value that is not a
 * number, or is outside its allowed range, is refused with an {@link IllegalArgumentException}
 * naming the property (or variable) and the bad value; it never falls back silently. Every numeric
 * {@code moe4j.*} property and environment variable is read through here.
 */
public final class Settings {
    private Settings() {
    }

    /**
     * Returns the property's value, or {@code fallback}.
     * @param property system property name, e.g. {@code moe4j.threads}
     * @param fallback value when the property is unset or blank
     * @param min      smallest allowed value
     * @param max      largest allowed value
     * @return the property's value, or {@code fallback}
     * @throws IllegalArgumentException naming the property and its value if it is not an integer in
     *                                  {@code [min, max]}
     */
    public static int intProperty(String property, int fallback, int min, int max) {
        Objects.requireNonNull(property, "property");
        String v = System.getProperty(property);
        if (v == null || v.isBlank()) {
            return fallback;
        }
        return parseInt("system property " + property, v, min, max);
    }

    /**
     * Reads a system property, else an environment variable, else the fallback.
     *
     * @param property system property name (wins when set)
     * @param env      environment variable name
     * @param fallback value when neither is set (or both are blank)
     * @param min      smallest allowed value
     * @param max      largest allowed value
     * @return the value
     * @throws IllegalArgumentException naming the property or variable and its value if it is not an
     *                                  integer in {@code [min, max]}
     */
    public static int intSetting(String property, String env, int fallback, int min, int max) {
        Objects.requireNonNull(property, "property");
        Objects.requireNonNull(env, "env");
        String v = System.getProperty(property);
        if (v != null && !v.isBlank()) {
            return parseInt("system property " + property, v, min, max);
        }
        v = System.getenv(env);
        if (v != null && !v.isBlank()) {
            return parseInt("environment variable " + env, v, min, max);
        }
        return fallback;
    }

    /**
     * Returns the parsed value.
     * @param what  how messages name the source, e.g. {@code "system property moe4j.threads"}
     * @param value the text (surrounding white space is ignored)
     * @param min   smallest allowed value
     * @param max   largest allowed value
     * @return the parsed value
     * @throws IllegalArgumentException naming {@code what} and {@code value} if it is not a decimal
     *                                  integer in {@code [min, max]}
     */
    public static int parseInt(String what, String value, int min, int max) {
        Objects.requireNonNull(what, "what");
        Objects.requireNonNull(value, what);
        if (min > max) {
            throw new IllegalArgumentException("parseInt: min " + min + " > max " + max);
        }
        long n;
        try {
            n = Long.parseLong(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(what + "='" + value + "' is not an integer (allowed: " + min + " to "
                    + max + ")", e);
        }
        if (n < min || n > max) {
            throw new IllegalArgumentException(what + "='" + value + "' is out of range (allowed: " + min + " to "
                    + max + ")");
        }
        return (int) n;
    }
}
