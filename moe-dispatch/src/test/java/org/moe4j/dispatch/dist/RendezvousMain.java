package org.moe4j.dispatch.dist;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HexFormat;
import java.util.StringJoiner;

/**
 * A tiny program run as a separate process by {@link TcpRendezvousProcessTest}: joins the
 * rendezvous from the torchrun environment, receives rank 0's blob, gathers every rank's pid,
 * passes a barrier and prints one line. Exit codes: 0 ok, 2 bad environment, 3 rendezvous failure.
 */
public final class RendezvousMain {
    private RendezvousMain() {
    }

    /**
     * @param args [0] timeout in milliseconds, [1] hex blob rank 0 broadcasts
     */
    public static void main(String[] args) {
        DistEnv env;
        try {
            env = DistEnv.fromEnvironment();
        } catch (IllegalArgumentException e) {
            System.err.println("bad environment: " + e.getMessage());
            System.exit(2);
            return;
        }
        try (TcpRendezvous rv = TcpRendezvous.join(env, Duration.ofMillis(Long.parseLong(args[0])))) {
            byte[] blob = rv.broadcast(env.isMaster() ? HexFormat.of().parseHex(args[1]) : null);
            byte[][] pids = rv.allGather(Long.toString(ProcessHandle.current().pid()).getBytes(StandardCharsets.UTF_8));
            rv.barrier();
            StringJoiner all = new StringJoiner(",");
            for (byte[] p : pids) {
                all.add(new String(p, StandardCharsets.UTF_8));
            }
            System.out.println("rank " + rv.rank() + " of " + rv.worldSize() + " blob " + HexFormat.of().formatHex(blob)
                    + " pids " + all);
        } catch (RendezvousException e) {
            System.err.println("rendezvous error: " + e.getMessage());
            System.exit(3);
        }
    }
}
