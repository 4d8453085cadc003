package org.moe4j.routing.internal;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.Supplier;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.routing.RouteParams;

/**
 * {@link CpuRoutingKernels#select} against a naive reference: top-k of the choice values,
 * descending, ties (IEEE equality) to the lower expert index, restricted to the top
 * {@code limitedGroups} groups (group score ties to the lower group index). Every shape is run
 * for enough tokens that the JIT's C2 code is what gets checked, not only the interpreter.
 * The build also runs this class with 4 and 16 float lanes ({@code moe4j.routing.vectorBits}).
 */
class CpuSelectTest {

    /**
     * Inputs drawn per shape and group score; fewer when the vector width is emulated (the Vector
     * API's Java fallback is slow), where C2 does not compile the vector code anyway.
     */
    static final int CALLS_PER_SHAPE = Integer.getInteger("moe4j.routing.vectorBits", 0) == 0 ? 200 : 6;

    static int[] naive(float[] c, RouteParams p) {
        int e = p.experts();
        int g = p.expertGroups();
        int per = e / g;
        boolean[] allowed = new boolean[e];
        Arrays.fill(allowed, true);
        if (p.groupLimited()) {
            float[] score = new float[g];
            for (int gi = 0; gi < g; gi++) {
                float[] v = Arrays.copyOfRange(c, gi * per, gi * per + per);
                Arrays.sort(v);
                score[gi] = p.groupScore() == GroupScore.MAX ? v[per - 1] : v[per - 1] + v[per - 2];
            }
            Arrays.fill(allowed, false);
            for (int gi = 0; gi < g; gi++) {
                int rank = 0;
                for (int h = 0; h < g; h++) {
                    rank += score[h] > score[gi] || (score[h] == score[gi] && h < gi) ? 1 : 0;
                }
                if (rank < p.limitedGroups()) {
                    Arrays.fill(allowed, gi * per, gi * per + per, true);
                }
            }
        }
        // selection sort with IEEE comparisons: -0.0 == 0.0 is a tie like in the kernel
        int[] out = new int[p.topK()];
        boolean[] taken = new boolean[e];
        for (int j = 0; j < out.length; j++) {
            int best = -1;
            for (int x = 0; x < e; x++) {
                if (allowed[x] && !taken[x] && (best < 0 || c[x] > c[best])) {
                    best = x;
                }
            }
            taken[best] = true;
            out[j] = best;
        }
        return out;
    }

    static int[] select(RouteParams p, float[] c, float[] topVal) {
        int[] topIdx = new int[p.topK()];
        int g = p.expertGroups();
        CpuRoutingKernels.select(p, c, topVal, topIdx, new float[g], new int[Math.max(g, 1)],
                new float[(g + 1) * Vec.L]);
        return topIdx;
    }

    /** The reported failure, minimal: 8 experts, top-2, one vector tail; wrong once C2 compiles. */
    @Test
    void smallSelectionStaysRightWhenCompiled() {
        RouteParams p = new RouteParams(8, 2, ScoreFunction.SOFTMAX, 1, 1, GroupScore.TOP2_SUM, true, 1f, false);
        float[] c = {0.1f, 0.5f, 0.2f, 0.4f, 0.3f, 0.05f, 0.6f, 0.01f};
        float[] topVal = new float[2];
        for (int it = 0; it < 200_000; it++) {
            int[] got = select(p, c, topVal);
            if (got[0] != 6 || got[1] != 1) {
                assertArrayEquals(new int[] {6, 1}, got, "call " + it);
            }
        }
        assertArrayEquals(new float[] {0.6f, 0.5f}, topVal);
    }

    /** experts, topK, groups, limitedGroups. */
    static List<int[]> shapes() {
        List<int[]> s = new ArrayList<>();
        int[] experts = {2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 32, 33, 48, 64, 65, 100, 128, 160, 256, 257, 300};
        for (int e : experts) {
            for (int k : new int[] {1, 2, 3, 8, 15, 16, 17, e - 1, e}) {
                if (k >= 1 && k <= e) {
                    s.add(new int[] {e, k, 1, 1});
                }
            }
            for (int g = 2; g <= e / 2; g++) {
                if (e % g != 0 || (g & (g - 1)) != 0 && g != 3 && g != 5) {
                    continue; // power-of-two groups plus 3 and 5
                }
                int per = e / g;
                for (int limited : new int[] {1, g / 2, g - 1}) {
                    if (limited < 1) {
                        continue;
                    }
                    for (int k : new int[] {1, 2, Math.min(8, limited * per), limited * per}) {
                        s.add(new int[] {e, k, g, limited});
                    }
                }
            }
        }
        return s.stream().map(a -> Arrays.stream(a).boxed().toList()).distinct()
                .map(l -> l.stream().mapToInt(Integer::intValue).toArray()).toList();
    }

    static List<Object[]> cases() {
        List<Object[]> c = new ArrayList<>();
        List<int[]> sh = shapes();
        for (int i = 0; i < sh.size(); i++) {
            int[] a = sh.get(i);
            c.add(new Object[] {a[0], a[1], a[2], a[3], 1000L + i});
        }
        return c;
    }

    @ParameterizedTest(name = "experts={0} k={1} groups={2}/{3} seed={4}")
    @MethodSource("cases")
    void selectEqualsTheNaiveReference(int experts, int k, int groups, int limited, long seed) {
        Random rnd = new Random(seed);
        for (GroupScore gs : GroupScore.values()) {
            RouteParams p = new RouteParams(experts, k, ScoreFunction.SIGMOID, groups, limited, gs, true, 1f, false);
            float[] topVal = new float[k];
            for (int call = 0; call < CALLS_PER_SHAPE; call++) {
                float[] c = draw(rnd, experts, call % 6);
                int[] want = naive(c, p);
                int[] got = select(p, c, topVal);
                int kind = call % 6;
                Supplier<String> what = () -> gs + ", lanes " + Vec.L + ", input kind " + kind + ", choice "
                        + Arrays.toString(c);
                assertArrayEquals(want, got, what);
                for (int j = 0; j < k; j++) {
                    assertEquals(c[want[j]], topVal[j], 0f, what);
                }
            }
        }
    }

    /** Choice values (score + bias) with the given kind of ties. */
    static float[] draw(Random rnd, int experts, int kind) {
        float[] c = new float[experts];
        float[] bias = new float[experts];
        for (int e = 0; e < experts; e++) {
            bias[e] = kind % 2 == 0 ? 0f : (float) rnd.nextGaussian() * 0.02f;
        }
        switch (kind) {
            case 0, 1 -> IntStream.range(0, experts).forEach(e -> c[e] = (float) rnd.nextDouble()); // distinct
            case 2, 3 -> IntStream.range(0, experts).forEach(e -> c[e] = rnd.nextInt(3) * 0.25f); // heavy ties
            case 4 -> IntStream.range(0, experts).forEach(e -> c[e] = rnd.nextBoolean() ? 0f : -0f); // all equal
            default -> { // duplicates of a few values, some tied at the top, negative choices
                float[] levels = {-1.5f, -0.25f, 0.5f, 0.5f, 2f};
                IntStream.range(0, experts).forEach(e -> c[e] = levels[rnd.nextInt(levels.length)]);
                if (experts > 2) {
                    c[rnd.nextInt(experts)] = 3f;
                    c[rnd.nextInt(experts)] = 3f;
                }
            }
        }
        for (int e = 0; e < experts; e++) {
            c[e] += bias[e];
        }
        return c;
    }
}
