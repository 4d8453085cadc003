package org.moe4j.bench.cli;

import java.util.concurrent.Callable;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code moe} command-line tool. */
@Command(name = "moe", mixinStandardHelpOptions = true, version = "moe4j 0.1.0",
        description = "moe4j: train, benchmark and inspect Mixture-of-Experts layers on the JVM.",
        subcommands = {MoeCli.Info.class, MoeCli.Jmh.class, org.moe4j.bench.train.TrainCommand.class})
public final class MoeCli implements Callable<Integer> {

    /**
     * @param args command line
     */
    public static void main(String[] args) {
        System.exit(new CommandLine(new MoeCli()).execute(args));
    }

    @Override
    public Integer call() {
        CommandLine.usage(this, System.out);
        return 0;
    }

    /** {@code moe jmh ...}: the JMH runner over every benchmark in this jar (all JMH options pass through). */
    @Command(name = "jmh", description = "Run JMH benchmarks (options as for JMH's own runner; -h for its help).")
    static final class Jmh implements Callable<Integer> {
        @CommandLine.Unmatched
        private java.util.List<String> args = new java.util.ArrayList<>();

        @Override
        public Integer call() throws Exception {
            org.openjdk.jmh.Main.main(args.toArray(String[]::new));
            return 0;
        }
    }

    /** {@code moe info}: the backends found and which one is selected. */
    @Command(name = "info", description = "Show registered backends and the selected one.")
    static final class Info implements Callable<Integer> {
        @Override
        public Integer call() {
            for (Backend b : Backends.all()) {
                System.out.printf("%-6s priority %3d  %s%n", b.name(), b.priority(), b.probe());
            }
            System.out.println("selected: " + Backends.selected().describe());
            return 0;
        }
    }
}
