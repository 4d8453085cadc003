package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.Arrays;
import java.util.Comparator;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/** The vectorised selection equals a naive sort-based reference, including heavy ties. */
class RouterSelectionTest {

    /** Naive reference: group scores by sorting, kept groups by sorting, top-k by a stable sort. */
    static int[] naive(float[] choice, int experts, int k, int groups, int limited, GroupScore gs) {
        int per = experts / groups;
        boolean[] allowed = new boolean[experts];
        Arrays.fill(allowed, true);
        if (groups > 1 && limited < groups) {
            float[] score = new float[groups];
            for (int g = 0; g < groups; g++) {
                float[] v = Arrays.copyOfRange(choice, g * per, g * per + per);
                Arrays.sort(v);
                score[g] = gs == GroupScore.MAX ? v[per - 1] : v[per - 1] + v[per - 2];
            }
            Integer[] order = IntStream.range(0, groups).boxed().toArray(Integer[]::new);
            Arrays.sort(order, Comparator.comparingDouble((Integer g) -> -score[g]).thenComparingInt(g -> g));
            Arrays.fill(allowed, false);
            for (int i = 0; i < limited; i++) {
                Arrays.fill(allowed, order[i] * per, order[i] * per + per, true);
            }
        }
        Integer[] idx = IntStream.range(0, experts).filter(e -> allowed[e]).boxed().toArray(Integer[]::new);
        Arrays.sort(idx, Comparator.comparingDouble((Integer e) -> -choice[e]).thenComparingInt(e -> e));
        int[] out = new int[k];
        for (int j = 0; j < k; j++) {
            out[j] = idx[j];
        }
        return out;
    }

    @Test
    void selectionEqualsNaiveReferenceWithTiesAndGroups() {
        long seed = System.nanoTime();
        System.out.println("RouterSelectionTest seed=" + seed);
        Random rnd = new Random(seed);
        int[][] shapes = {{8, 3, 4, 2}, {16, 2, 1, 1}, {64, 6, 8, 4}, {256, 8, 8, 4}, {40, 5, 20, 3}, {24, 20, 1, 1}};
        try (CpuParallel pool = new CpuParallel(2)) {
            for (int[] sh : shapes) {
                for (GroupScore gs : GroupScore.values()) {
                    for (ScoreFunction sf : ScoreFunction.values()) {
                        int experts = sh[0];
                        int k = sh[1];
                        MoeConfig cfg = MoeConfig.builder().hidden(1).experts(experts).topK(k).ffn(1).scoreFunction(sf)
                                .groups(sh[2], sh[3]).groupScore(gs).build();
                        Router r = Router.builder(cfg).parallel(pool).accumulateLoad(false).build();
                        float[] bias = new float[experts];
                        for (int e = 0; e < experts; e++) {
                            bias[e] = rnd.nextInt(3) * 0.25f; // ties survive the bias too
                        }
                        r.expertBias().setValues(bias);
                        int tokens = 200;
                        float[] lv = new float[tokens * experts];
                        for (int i = 0; i < lv.length; i++) {
                            lv[i] = rnd.nextInt(4) - 1.5f; // few levels: many exact ties
                        }
                        try (HostBuffer l = HostBuffer.ofFloats(lv, tokens, experts); RouterOutput o = r.forwardLogits(l)) {
                            float[] s = ((HostBuffer) o.scores()).toFloatArray();
                            int[] got = ((HostBuffer) o.topkIdx()).toIntArray();
                            for (int t = 0; t < tokens; t++) {
                                float[] choice = new float[experts];
                                for (int e = 0; e < experts; e++) {
                                    choice[e] = s[t * experts + e] + bias[e];
                                }
                                assertArrayEquals(naive(choice, experts, k, sh[2], sh[3], gs),
                                        Arrays.copyOfRange(got, t * k, t * k + k),
                                        Arrays.toString(sh) + " " + gs + " " + sf + " token " + t);
                            }
                        }
                        r.expertBias().close();
                    }
                }
            }
        }
    }
}
