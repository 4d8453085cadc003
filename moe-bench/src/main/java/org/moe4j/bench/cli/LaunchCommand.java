package org.moe4j.bench.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.Callable;
import org.moe4j.dispatch.dist.RendezvousAuth;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code moe launch --nproc N [--master-port P] -- command...}: starts N processes of a command on
 * this host with the torchrun environment ({@code RANK}, {@code WORLD_SIZE}, {@code LOCAL_RANK},
 * {@code LOCAL_WORLD_SIZE}, {@code MASTER_ADDR}, {@code MASTER_PORT}) and the rendezvous identity of
 * this job (a job id and a fresh random secret, {@code MOE4J_JOB_ID} and {@code MOE4J_RDZV_TOKEN}),
 * forwards each line of their output prefixed with {@code [rank i]}, and when one exits with a
 * non-zero code stops the others (and their child processes) and exits with that code.
 */
@Command(name = "launch", mixinStandardHelpOptions = true,
        description = {"Start N processes of a command on this host, torchrun style.",
                "Each gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, and the job's "
                        + "rendezvous identity MOE4J_JOB_ID and MOE4J_RDZV_TOKEN (a fresh random secret per launch); "
                        + "output lines are prefixed with [rank i]; if one fails the others are stopped and its exit "
                        + "code is returned.",
                "Example: moe launch --nproc 2 -- java -cp app.jar my.Train"})
public final class LaunchCommand implements Callable<Integer> {
    /** Exit code for bad arguments or a command that cannot start. */
    static final int USAGE_ERROR = 2;

    @Option(names = "--nproc", required = true, description = "number of processes (ranks) to start")
    int nproc;

    @Option(names = "--master-port", defaultValue = "0",
            description = "rendezvous port for rank 0 (default 0: pick a free port)")
    int masterPort;

    @Option(names = "--master-addr", defaultValue = "127.0.0.1",
            description = "rendezvous address handed to the ranks (default ${DEFAULT-VALUE})")
    String masterAddr;

    @Option(names = "--job-id",
            description = "job id handed to the ranks as MOE4J_JOB_ID (default: a fresh random id per launch)")
    String jobId;

    @Option(names = "--stop-grace-ms", defaultValue = "5000",
            description = "after a failure, how long the others get to exit on SIGTERM before SIGKILL (default ${DEFAULT-VALUE})")
    long stopGraceMs;

    @Parameters(arity = "1..*", paramLabel = "COMMAND", description = "the command and its arguments (put -- before it)")
    List<String> command;

    private final PrintStream out;
    private final PrintStream err;

    /** A launcher that forwards to this process's stdout and stderr. */
    public LaunchCommand() {
        this(System.out, System.err);
    }

    LaunchCommand(PrintStream out, PrintStream err) {
        this.out = out;
        this.err = err;
    }

    @Override
    public Integer call() {
        if (nproc < 1) {
            err.println("moe launch: --nproc must be >= 1, got " + nproc);
            return USAGE_ERROR;
        }
        if (masterPort < 0 || masterPort > 65535) {
            err.println("moe launch: --master-port must be in [0, 65535], got " + masterPort);
            return USAGE_ERROR;
        }
        String job = jobId == null ? "moe-launch-" + RendezvousAuth.newToken().substring(0, 16) : jobId;
        String token = RendezvousAuth.newToken();
        try {
            RendezvousAuth.of(job, token.getBytes(StandardCharsets.UTF_8));
        } catch (IllegalArgumentException e) {
            err.println("moe launch: --job-id: " + e.getMessage());
            return USAGE_ERROR;
        }
        int port = masterPort == 0 ? freePort(masterAddr) : masterPort;
        err.println("moe launch: " + nproc + " processes, MASTER_ADDR=" + masterAddr + " MASTER_PORT=" + port
                + " " + RendezvousAuth.JOB_ID + "=" + job + ": " + String.join(" ", command));
        return new Run(port, job, token).execute();
    }

    private static int freePort(String addr) {
        try (ServerSocket s = new ServerSocket()) {
            InetAddress a = InetAddress.getByName(addr);
            s.bind(new InetSocketAddress(a.isLoopbackAddress() ? a : null, 0));
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException("moe launch: could not find a free port on " + addr, e);
        }
    }

    /** One launch: the processes, their output pumps, and the stop-all logic. */
    private final class Run {
        private final int port;
        private final String job;
        private final String token;
        private final Process[] ranks = new Process[nproc];
        private final List<Thread> pumps = new ArrayList<>();
        private final BlockingQueue<Integer> exited = new LinkedBlockingQueue<>();

        Run(int port, String job, String token) {
            this.port = port;
            this.job = job;
            this.token = token;
        }

        int execute() {
            Thread hook = new Thread(this::stopAll, "moe-launch-stop");
            Runtime.getRuntime().addShutdownHook(hook);
            try {
                for (int r = 0; r < nproc; r++) {
                    try {
                        ranks[r] = start(r);
                    } catch (IOException e) {
                        err.println("moe launch: could not start rank " + r + " (" + String.join(" ", command) + "): "
                                + e.getMessage());
                        stopAll();
                        awaitAll();
                        return USAGE_ERROR;
                    }
                }
                int failure = 0;
                for (int done = 0; done < nproc; done++) {
                    int r = takeExited();
                    int code = ranks[r].exitValue();
                    if (code != 0 && failure == 0) {
                        failure = code;
                        err.println("moe launch: rank " + r + " exited with code " + code
                                + "; stopping the other ranks");
                        stopAll();
                    }
                }
                drainPumps();
                return failure;
            } finally {
                try {
                    Runtime.getRuntime().removeShutdownHook(hook);
                } catch (IllegalStateException e) {
                    // the JVM is shutting down: the hook runs and stops the ranks
                }
            }
        }

        private Process start(int r) throws IOException {
            ProcessBuilder pb = new ProcessBuilder(command);
            Map<String, String> env = pb.environment();
            env.put("RANK", Integer.toString(r));
            env.put("WORLD_SIZE", Integer.toString(nproc));
            env.put("LOCAL_RANK", Integer.toString(r));
            env.put("LOCAL_WORLD_SIZE", Integer.toString(nproc));
            env.put("MASTER_ADDR", masterAddr);
            env.put("MASTER_PORT", Integer.toString(port));
            // the ranks' rendezvous identity: readable only by this user (/proc/<pid>/environ), never printed
            env.put(RendezvousAuth.JOB_ID, job);
            env.put(RendezvousAuth.TOKEN, token);
            env.remove(RendezvousAuth.TOKEN_FILE);
            pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
            Process p = pb.start();
            pump(p.getInputStream(), out, r, "out");
            pump(p.getErrorStream(), err, r, "err");
            p.onExit().thenRun(() -> exited.add(r));
            return p;
        }

        private void pump(InputStream in, PrintStream to, int rank, String which) {
            String prefix = "[rank " + rank + "] ";
            Thread t = Thread.ofPlatform().daemon().name("moe-launch-" + which + "-" + rank).start(() -> {
                try (BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = reader.readLine()) != null) {
                        synchronized (to) {
                            to.println(prefix + line);
                        }
                    }
                } catch (IOException e) {
                    // the process is gone; nothing more to forward
                }
                to.flush();
            });
            pumps.add(t);
        }

        private int takeExited() {
            try {
                return exited.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                stopAll();
                throw new IllegalStateException("moe launch interrupted; ranks stopped", e);
            }
        }

        /** SIGTERM to every live rank and its descendants; SIGKILL to what survives the grace period. */
        private synchronized void stopAll() {
            List<ProcessHandle> targets = new ArrayList<>();
            for (Process p : ranks) {
                if (p != null && p.isAlive()) {
                    // snapshot descendants first: once the rank dies they are no longer its descendants
                    p.descendants().forEach(targets::add);
                    targets.add(p.toHandle());
                }
            }
            if (targets.isEmpty()) {
                return;
            }
            targets.forEach(ProcessHandle::destroy);
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Math.max(0, stopGraceMs));
            for (ProcessHandle h : targets) {
                long left = deadline - System.nanoTime();
                try {
                    if (left > 0) {
                        h.onExit().get(left, TimeUnit.NANOSECONDS);
                    }
                } catch (Exception e) {
                    // still alive after the grace period: killed below
                }
            }
            for (ProcessHandle h : targets) {
                if (h.isAlive()) {
                    h.descendants().forEach(ProcessHandle::destroyForcibly);
                    h.destroyForcibly();
                }
            }
        }

        private void awaitAll() {
            for (Process p : ranks) {
                if (p != null) {
                    try {
                        p.waitFor();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                }
            }
        }

        /** Lets the output pumps finish; a leftover grandchild holding a pipe open does not block us. */
        private void drainPumps() {
            for (Thread t : pumps) {
                try {
                    t.join(2_000);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
            out.flush();
            err.flush();
        }
    }
}
