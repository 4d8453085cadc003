package org.moe4j.dispatch.dist;

import java.util.Map;
import java.util.Objects;
import java.util.OptionalInt;

/**
 * Where this process sits in a distributed job, read from the torchrun environment convention.
 *
 * <p>Variables: {@code RANK} (this process, {@code [0, WORLD_SIZE)}), {@code WORLD_SIZE} (number
 * of processes), {@code LOCAL_RANK} (index on this host, picks the GPU), {@code MASTER_ADDR} and
 * {@code MASTER_PORT} (where rank 0 listens for the rendezvous), and optionally
 * {@code LOCAL_WORLD_SIZE} (processes on this host). The same variables are set by
 * {@code torchrun}, by {@code moe launch}, and can be derived from SLURM (see docs/distributed.md).
 *
 * @param rank           global rank of this process, {@code [0, worldSize)}
 * @param worldSize      number of processes in the job, {@code >= 1}
 * @param localRank      rank of this process on its host, {@code [0, worldSize)}
 * @param localWorldSize processes on this host, when known
 * @param masterAddr     host name or address where rank 0 listens
 * @param masterPort     TCP port where rank 0 listens, {@code [1, 65535]}
 */
public record DistEnv(int rank, int worldSize, int localRank, OptionalInt localWorldSize,
                      String masterAddr, int masterPort) {

    /** Variable holding the global rank. */
    public static final String RANK = "RANK";
    /** Variable holding the number of processes. */
    public static final String WORLD_SIZE = "WORLD_SIZE";
    /** Variable holding the rank on this host. */
    public static final String LOCAL_RANK = "LOCAL_RANK";
    /** Optional variable holding the number of processes on this host. */
    public static final String LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE";
    /** Variable holding rank 0's host name or address. */
    public static final String MASTER_ADDR = "MASTER_ADDR";
    /** Variable holding rank 0's rendezvous port. */
    public static final String MASTER_PORT = "MASTER_PORT";

    /**
     * Validates the fields.
     *
     * @throws IllegalArgumentException naming the first inconsistent value
     */
    public DistEnv {
        Objects.requireNonNull(localWorldSize, "localWorldSize");
        Objects.requireNonNull(masterAddr, "masterAddr");
        if (worldSize < 1) {
            throw new IllegalArgumentException(WORLD_SIZE + "=" + worldSize + " must be >= 1");
        }
        if (rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException(RANK + "=" + rank + " must be in [0, " + WORLD_SIZE + "=" + worldSize + ")");
        }
        if (localRank < 0 || localRank >= worldSize) {
            throw new IllegalArgumentException(LOCAL_RANK + "=" + localRank + " must be in [0, "
                    + WORLD_SIZE + "=" + worldSize + ")");
        }
        if (localRank > rank) {
            throw new IllegalArgumentException(LOCAL_RANK + "=" + localRank + " must be <= " + RANK + "=" + rank
                    + " (ranks are numbered host by host)");
        }
        if (localWorldSize.isPresent()) {
            int lws = localWorldSize.getAsInt();
            if (lws < 1 || lws > worldSize) {
                throw new IllegalArgumentException(LOCAL_WORLD_SIZE + "=" + lws + " must be in [1, "
                        + WORLD_SIZE + "=" + worldSize + "]");
            }
            if (localRank >= lws) {
                throw new IllegalArgumentException(LOCAL_RANK + "=" + localRank + " must be < "
                        + LOCAL_WORLD_SIZE + "=" + lws);
            }
        }
        if (masterAddr.isBlank()) {
            throw new IllegalArgumentException(MASTER_ADDR + " must not be blank");
        }
        if (masterPort < 1 || masterPort > 65535) {
            throw new IllegalArgumentException(MASTER_PORT + "=" + masterPort + " must be in [1, 65535]");
        }
    }

    /**
     * Reads the process environment.
     *
     * @return the environment of this process
     * @throws IllegalArgumentException if a required variable is missing, not a number, or inconsistent
     */
    public static DistEnv fromEnvironment() {
        return fromMap(System.getenv());
    }

    /**
     * Reads the process environment, or describes a single process on loopback when none of the
     * torchrun variables is set (so a program runs unchanged with and without a launcher).
     *
     * @param defaultPort port used for the single-process case (never opened at world size 1)
     * @return the environment, or a world of one
     * @throws IllegalArgumentException if some but not all required variables are set, or they are malformed
     */
    public static DistEnv fromEnvironmentOrSingle(int defaultPort) {
        Map<String, String> env = System.getenv();
        boolean any = env.containsKey(RANK) || env.containsKey(WORLD_SIZE) || env.containsKey(LOCAL_RANK)
                || env.containsKey(MASTER_ADDR) || env.containsKey(MASTER_PORT);
        return any ? fromMap(env) : single(defaultPort);
    }

    /**
     * Returns a world of one process on loopback.
     * @param port a port number (not opened: a world of one needs no rendezvous)
     * @return a world of one process on loopback
     */
    public static DistEnv single(int port) {
        return new DistEnv(0, 1, 0, OptionalInt.of(1), "127.0.0.1", port);
    }

    /**
     * Parses the torchrun variables from a map (the environment, or a test's map).
     *
     * @param env variable names to values
     * @return the parsed environment
     * @throws IllegalArgumentException naming the variable that is missing, malformed, or inconsistent
     */
    public static DistEnv fromMap(Map<String, String> env) {
        Objects.requireNonNull(env, "env");
        int worldSize = requiredInt(env, WORLD_SIZE);
        int rank = requiredInt(env, RANK);
        int localRank = requiredInt(env, LOCAL_RANK);
        String lws = env.get(LOCAL_WORLD_SIZE);
        OptionalInt localWorldSize = lws == null || lws.isBlank()
                ? OptionalInt.empty() : OptionalInt.of(parseInt(LOCAL_WORLD_SIZE, lws));
        String addr = env.get(MASTER_ADDR);
        if (addr == null) {
            throw missing(MASTER_ADDR);
        }
        int port = requiredInt(env, MASTER_PORT);
        return new DistEnv(rank, worldSize, localRank, localWorldSize, addr.trim(), port);
    }

    /**
     * Returns true if this process is rank 0, which hosts the rendezvous.
     * @return true if this process is rank 0, which hosts the rendezvous
     */
    public boolean isMaster() {
        return rank == 0;
    }

    /**
     * Returns a copy as torchrun-style variables (what a launcher sets for a child).
     * @return a copy as torchrun-style variables (what a launcher sets for a child)
     */
    public Map<String, String> toMap() {
        var m = new java.util.LinkedHashMap<String, String>();
        m.put(RANK, Integer.toString(rank));
        m.put(WORLD_SIZE, Integer.toString(worldSize));
        m.put(LOCAL_RANK, Integer.toString(localRank));
        localWorldSize.ifPresent(v -> m.put(LOCAL_WORLD_SIZE, Integer.toString(v)));
        m.put(MASTER_ADDR, masterAddr);
        m.put(MASTER_PORT, Integer.toString(masterPort));
        return m;
    }

    private static int requiredInt(Map<String, String> env, String name) {
        String v = env.get(name);
        if (v == null) {
            throw missing(name);
        }
        return parseInt(name, v);
    }

    private static int parseInt(String name, String value) {
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + "='" + value + "' is not an integer", e);
        }
    }

    private static IllegalArgumentException missing(String name) {
        return new IllegalArgumentException(name + " is not set; a distributed run needs " + RANK + ", "
                + WORLD_SIZE + ", " + LOCAL_RANK + ", " + MASTER_ADDR + " and " + MASTER_PORT
                + " (set by torchrun or `moe launch`)");
    }
}
