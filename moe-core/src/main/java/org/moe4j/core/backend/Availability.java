package org.moe4j.core.backend;

/**
 * Result of {@link Backend#probe()}.
 *
 * @param available whether the backend can run here
 * @param reason    why not (or a short description of what was found when available)
 */
public record Availability(boolean available, String reason) {
    /**
     * Returns an available result.
     * @param what description of what was found
     * @return an available result
     */
    public static Availability yes(String what) {
        return new Availability(true, what);
    }

    /**
     * Returns an unavailable result.
     * @param why the reason
     * @return an unavailable result
     */
    public static Availability no(String why) {
        return new Availability(false, why);
    }
}
