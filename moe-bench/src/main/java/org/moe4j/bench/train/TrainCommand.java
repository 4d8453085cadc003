package org.moe4j.bench.train;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.concurrent.Callable;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code moe train}: the CPU training demo. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Train an MoE layer on the CPU: a student layer learns to imitate a fixed random teacher MoE",
                "(whose routing is skewed), with W in-process expert-parallel ranks. Logs loss, tokens/s, load",
                "imbalance (max/mean tokens per expert), dropped tokens and the expert-bias range; writes",
                "metrics.json, loss.png and expert_load.png into the output directory."})
public final class TrainCommand implements Callable<Integer> {
    @Option(names = "--preset", defaultValue = "deepseek-v3-tiny",
            description = "deepseek-v3-tiny | qwen3-moe-tiny | mixtral-tiny (default: ${DEFAULT-VALUE})")
    String preset;

    @Option(names = "--config", description = "Hugging Face config.json to take the layer shape from (instead of --preset)")
    Path config;

    @Option(names = "--ranks", defaultValue = "4", description = "expert-parallel in-process ranks (default: ${DEFAULT-VALUE})")
    int ranks;

    @Option(names = "--steps", defaultValue = "400", description = "optimiser steps (default: ${DEFAULT-VALUE})")
    int steps;

    @Option(names = "--tokens", defaultValue = "256", description = "tokens per rank per step (default: ${DEFAULT-VALUE})")
    int tokens;

    @Option(names = "--lr", defaultValue = "3e-3", description = "AdamW learning rate (default: ${DEFAULT-VALUE})")
    double lr;

    @Option(names = "--bias-coeff", defaultValue = "0.002",
            description = "expert-bias update step (aux-loss-free balancing; default: ${DEFAULT-VALUE})")
    double biasCoeff;

    @Option(names = "--no-bias", description = "disable the expert bias (no load balancing by bias)")
    boolean noBias;

    @Option(names = "--teacher-skew", defaultValue = "1.0",
            description = "how unevenly the teacher routes (fixed selection bias, in mean scores; default: ${DEFAULT-VALUE})")
    double teacherSkew;

    @Option(names = "--seed", defaultValue = "1", description = "seed of weights and data (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--dispatch", defaultValue = "all-to-all",
            description = "dispatch strategy: all-to-all | all-gather | static-all-to-all, or any registered one"
                    + " (default: ${DEFAULT-VALUE})")
    String dispatch;

    @Option(names = "--chunk-rows", defaultValue = "0",
            description = "static-all-to-all: rows per (source, destination) chunk (0 = not set; default: ${DEFAULT-VALUE})")
    int chunkRows;

    @Option(names = "--chunk-factor", defaultValue = "0",
            description = "static-all-to-all: chunk rows = ceil(factor * tokens * topK / ranks) (0 = not set; default: the"
                    + " exact worst case tokens * topK)")
    double chunkFactor;

    @Option(names = "--out", description = "output directory (default: runs/<timestamp>)")
    Path out;

    @Option(names = "--quiet", description = "no progress bar, summary only")
    boolean quiet;

    @Override
    public Integer call() throws Exception {
        MoeConfig.Builder b;
        String name;
        if (config != null) {
            b = HfConfigImport.read(config).toBuilder();
            name = config.toString();
        } else {
            b = Presets.of(preset);
            name = preset;
        }
        MoeConfig cfg = b.expertParallel(ranks).expertBiasCoeff(noBias ? 0 : biasCoeff)
                .dispatch(new DispatchOptions(dispatch, false, false, chunkFactor, chunkRows)).build();
        org.moe4j.dispatch.Dispatchers.provider(cfg.dispatch().strategy()); // an unknown strategy fails here, by name
        Path dir = out != null ? out : Path.of("runs", LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
        Files.createDirectories(dir);
        System.out.printf("moe train: %s, %d ranks x %d tokens, %d steps, experts %d top-%d, hidden %d, ffn %d, bias %s%n",
                name, ranks, tokens, steps, cfg.experts(), cfg.topK(), cfg.hidden(), cfg.ffn(),
                noBias ? "off" : "on (coeff " + biasCoeff + ")");
        Trainer.Settings s = new Trainer.Settings(cfg, steps, tokens, lr, seed, teacherSkew);
        int logEvery = Math.max(1, steps / 10);
        long t0 = System.nanoTime();
        List<Trainer.Step> metrics = Trainer.run(s, st -> {
            if (quiet) {
                return;
            }
            if (st.step() % logEvery == 0 || st.step() == 1) {
                System.out.printf("\rstep %4d  loss %.4f  %7.0f tok/s  imbalance %.2f  dropped %d  bias [%+.4f, %+.4f]%s%n",
                        st.step(), st.loss(), st.tokensPerSecond(), st.imbalance(), st.dropped(), st.biasMin(),
                        st.biasMax(), " ".repeat(40));
            }
            Trainer.progress(System.out, st, steps);
        });
        double secs = (System.nanoTime() - t0) / 1e9;
        Reports.write(dir, name, cfg, s, metrics, secs);
        int window = Math.max(1, metrics.size() / 10);
        System.out.printf("%ndone in %.1f s: loss %.4f -> %.4f, imbalance (last %d steps) %.2f, %s%n", secs,
                metrics.get(0).loss(), Reports.tailMean(metrics, window, Trainer.Step::loss), window,
                Reports.tailMean(metrics, window, Trainer.Step::imbalance), "outputs in " + dir.toAbsolutePath());
        System.out.println("  metrics.json, loss.png, expert_load.png");
        return 0;
    }
}
