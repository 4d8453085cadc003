package org.moe4j.cuda.comm;

import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Map;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.dist.DistEnv;

/**
 * One rank of {@link NcclMultiProcessGpuTest}, started as its own JVM with the torchrun
 * environment: bootstraps an {@link NcclCommunicator} on GPU {@code LOCAL_RANK}, runs the
 * {@link CommExercise} and prints {@code output <name> <sha-256>} per output. With a rank number
 * as second argument that rank exits right after the bootstrap, to show that the others fail
 * instead of hanging. Exit codes: 0 ok, 3 communicator failure, 9 the rank told to die.
 */
public final class NcclRankMain {
    private NcclRankMain() {
    }

    /**
     * @param args [0] seed, [1] optional rank that exits after the bootstrap, [2] optional timeout in ms
     * @throws Exception on an unexpected failure
     */
    public static void main(String[] args) throws Exception {
        long seed = Long.parseLong(args[0]);
        int dying = args.length > 1 ? Integer.parseInt(args[1]) : -1;
        Duration timeout = Duration.ofMillis(args.length > 2 ? Long.parseLong(args[2]) : 120_000);
        DistEnv env = DistEnv.fromEnvironment();
        try (NcclCommunicator comm = NcclCommunicator.create(null, env, timeout)) {
            if (comm.rank() == dying) {
                System.out.println("rank " + comm.rank() + " exits now");
                System.out.flush();
                Runtime.getRuntime().halt(9);
            }
            Map<String, byte[]> out = CommExercise.run(comm, CommExercise.device(comm.context()), seed);
            for (var e : out.entrySet()) {
                System.out.println("output " + e.getKey().replace(' ', '_') + " "
                        + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(e.getValue())));
            }
        } catch (CommunicatorException e) {
            System.out.println("CommunicatorException: " + e.getMessage());
            System.out.flush();
            Runtime.getRuntime().halt(3);
        }
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
