package org.moe4j.bench.cli;

import java.io.PrintWriter;
import java.util.concurrent.Callable;
import org.moe4j.core.backend.Availability;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.ParseResult;

/**
 * Entry point of the {@code moe} command-line tool.
 *
 * <p>Errors are answered in one line: a usage error (an unknown option, a bad value, a missing file)
 * prints its message on stderr and exits {@value #USAGE_ERROR} (picocli's own syntax errors add the
 * usage); a failure while running prints the exception's message and exits {@value #RUN_ERROR}, with
 * the stack trace only under {@code --verbose}.
 */
@Command(name = "moe", mixinStandardHelpOptions = true, version = "moe4j 0.1.0",
        description = "moe4j: train, benchmark and inspect Mixture-of-Experts layers on the JVM.",
        subcommands = {CommandLine.HelpCommand.class, MoeCli.Info.class, MoeCli.Jmh.class,
                org.moe4j.bench.train.TrainCommand.class, LaunchCommand.class})
public final class MoeCli implements Callable<Integer> {
    /** Exit status of a usage error (bad option or value). */
    public static final int USAGE_ERROR = 2;
    /** Exit status of a failure while running. */
    public static final int RUN_ERROR = 1;
    /** The option every command accepts to print stack traces of failures. */
    public static final String VERBOSE = "--verbose";

    private static final String LOG_LEVEL = "org.slf4j.simpleLogger.defaultLogLevel";

    /** Creates the root command (picocli instantiates it). */
    public MoeCli() {
    }

    /**
     * Runs the tool and exits the JVM with its status.
     *
     * @param args command line
     */
    public static void main(String[] args) {
        // The library logs its backend choice at INFO; the tool shows it under --verbose only.
        if (System.getProperty(LOG_LEVEL) == null) {
            System.setProperty(LOG_LEVEL, java.util.Arrays.asList(args).contains(VERBOSE) ? "info" : "warn");
        }
        System.exit(execute(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /**
     * Runs the tool without exiting the JVM.
     *
     * @param args command line
     * @param out  standard output
     * @param err  standard error (error messages and usage)
     * @return the exit status: 0, {@value #RUN_ERROR} or {@value #USAGE_ERROR}
     */
    public static int execute(String[] args, PrintWriter out, PrintWriter err) {
        return commandLine(out, err).execute(args);
    }

    /**
     * The configured command line: handlers, {@code --verbose} on every command, {@code help} on the
     * subcommands that take no free arguments.
     *
     * @param out standard output
     * @param err standard error
     * @return the command line, ready to execute
     */
    public static CommandLine commandLine(PrintWriter out, PrintWriter err) {
        CommandLine cl = new CommandLine(new MoeCli());
        addVerbose(cl);
        for (String name : new String[] {"train", "info"}) {
            cl.getSubcommands().get(name).addSubcommand("help", new CommandLine.HelpCommand());
        }
        cl.setOut(out);
        cl.setErr(err);
        cl.setParameterExceptionHandler(MoeCli::usageError);
        cl.setExecutionExceptionHandler(MoeCli::runError);
        return cl;
    }

    private static void addVerbose(CommandLine cl) {
        if (!cl.getCommandSpec().optionsMap().containsKey(VERBOSE)) {
            cl.getCommandSpec().addOption(OptionSpec.builder(VERBOSE).arity("0")
                    .description("print the stack trace of a failure").build());
        }
        for (CommandLine sub : cl.getSubcommands().values()) {
            if (!(sub.getCommand() instanceof CommandLine.HelpCommand)) {
                addVerbose(sub);
            }
        }
    }

    private static int usageError(CommandLine.ParameterException e, String[] args) {
        CommandLine cl = e.getCommandLine();
        PrintWriter err = cl.getErr();
        err.println(cl.getCommandName().equals("moe") ? "moe: " + e.getMessage()
                : "moe " + cl.getCommandName() + ": " + e.getMessage());
        if (!(e instanceof UsageException)) {
            if (!CommandLine.UnmatchedArgumentException.printSuggestions(e, err)) {
                cl.usage(err);
            }
        }
        err.flush();
        return USAGE_ERROR;
    }

    private static int runError(Exception e, CommandLine cl, ParseResult parsed) {
        PrintWriter err = cl.getErr();
        boolean verbose = verbose(parsed);
        String name = cl.getCommandName().equals("moe") ? "moe" : "moe " + cl.getCommandName();
        err.println(name + ": " + oneLine(e) + (verbose ? "" : " (" + VERBOSE + " for the stack trace)"));
        if (verbose) {
            e.printStackTrace(err);
        }
        err.flush();
        return RUN_ERROR;
    }

    private static boolean verbose(ParseResult parsed) {
        for (ParseResult p = parsed; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption(VERBOSE)) {
                return true;
            }
        }
        return false;
    }

    /**
     * The one-line form of a failure: its message (the class name where it has none), followed by
     * the messages of its causes where they add something.
     *
     * @param e the failure
     * @return one line, no line breaks
     */
    static String oneLine(Throwable e) {
        StringBuilder sb = new StringBuilder(describe(e));
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            String m = describe(c);
            if (!sb.toString().contains(m)) {
                sb.append(": ").append(m);
            }
        }
        return sb.toString().replaceAll("\\R+", " ");
    }

    private static String describe(Throwable e) {
        String m = e.getMessage();
        if (m == null || m.isBlank()) {
            return e.getClass().getSimpleName();
        }
        // An I/O error's message is often just the path: say what kind of error it was.
        return e instanceof java.io.IOException ? e.getClass().getSimpleName() + ": " + m : m;
    }

    @Override
    public Integer call() {
        CommandLine.usage(this, System.out);
        return 0;
    }

    /**
     * A usage error found after parsing (a value out of range, a missing file, options that exclude
     * each other): printed as one line, without the usage, exit status {@value #USAGE_ERROR}.
     */
    public static final class UsageException extends CommandLine.ParameterException {
        private static final long serialVersionUID = 1L;

        /**
         * Creates the exception.
         * @param cl      the command whose options are wrong
         * @param message what is wrong, naming the option and the bad value
         */
        public UsageException(CommandLine cl, String message) {
            super(cl, message);
        }
    }

    /** Breaks text after ", " so that no line is longer than {@code width} (unless one item is). */
    static java.util.List<String> wrap(String text, int width) {
        java.util.List<String> lines = new java.util.ArrayList<>();
        StringBuilder line = new StringBuilder();
        for (String item : text.split("(?<=, )")) {
            if (line.length() > 0 && line.length() + item.length() > width) {
                lines.add(line.toString().stripTrailing());
                line.setLength(0);
                line.append("  ");
            }
            line.append(item);
        }
        lines.add(line.toString().stripTrailing());
        return lines;
    }

    /** {@code moe jmh ...}: the JMH runner over every benchmark in this jar (all JMH options pass through). */
    @Command(name = "jmh", description = {"Run JMH benchmarks (options as for JMH's own runner; -h for its help).",
            "Example: moe jmh RouterBenchmark -f 1 -wi 2 -i 3"})
    static final class Jmh implements Callable<Integer> {
        @CommandLine.Option(names = "--help", usageHelp = true, description = "show this help (-h: JMH's own)")
        boolean help;

        @CommandLine.Unmatched
        private java.util.List<String> args = new java.util.ArrayList<>();

        @Override
        public Integer call() throws Exception {
            org.openjdk.jmh.Main.main(args.toArray(String[]::new));
            return 0;
        }
    }

    /** {@code moe info}: the backends found, whether each can run here, and which one is selected. */
    @Command(name = "info", mixinStandardHelpOptions = true,
            description = "Show the registered backends, whether each can run here (and why not), and the selected one.")
    static final class Info implements Callable<Integer> {
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            out.printf("java     %s (%s)%n", Runtime.version(), System.getProperty("java.vm.name"));
            out.println("backends (the highest priority available one is used unless -D"
                    + Backends.PROPERTY + " or " + Backends.ENV + " names one):");
            for (Backend b : Backends.all()) {
                Availability a = b.probe();
                out.printf("  %-6s priority %3d  %s%n", b.name(), b.priority(),
                        a.available() ? "available: " + a.reason() : "not available:");
                if (!a.available()) { // the reason can be long: one sentence a line
                    for (String sentence : a.reason().split("(?<=[.:;])\\s+(?=[A-Z])")) {
                        wrap(sentence, 100).forEach(l -> out.println("           " + l));
                    }
                }
            }
            String requested = Backends.requested();
            try {
                out.println("selected: " + Backends.selected().describe()
                        + ("auto".equals(requested) ? " (automatic)" : " (requested: " + requested + ")"));
            } catch (RuntimeException e) {
                out.println("selected: none: " + oneLine(e));
                out.flush();
                return RUN_ERROR;
            }
            out.flush();
            return 0;
        }
    }
}
