package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/** The router reuses the memory of closed outputs; these tests pin down that this is invisible. */
class RouterWorkspaceTest {

    /** Routers made by the running test, closed after it. */
    private static final List<Router> ROUTERS = new ArrayList<>();

    static Router track(Router r) {
        ROUTERS.add(r);
        return r;
    }

    @AfterEach
    void closeRouters() {
        ROUTERS.forEach(Router::close);
        ROUTERS.clear();
    }
    private static MoeConfig config() {
        return MoeConfig.builder().hidden(1).experts(64).topK(6).ffn(1).scoreFunction(ScoreFunction.SIGMOID)
                .groups(8, 4).routeNorm(true).routeScale(2.5).build();
    }

    private static HostBuffer randomLogits(Random rnd, int tokens, int experts) {
        float[] l = new float[tokens * experts];
        for (int i = 0; i < l.length; i++) {
            l[i] = (float) rnd.nextGaussian();
        }
        return HostBuffer.ofFloats(l, tokens, experts);
    }

    @Test
    void reusedMemoryGivesTheSameResultsAndOpenOutputsNeverShareMemory() {
        long seed = Long.getLong("moe4j.test.seed", System.nanoTime());
        System.out.println("RouterWorkspaceTest seed=" + seed);
        Random rnd = new Random(seed);
        try (CpuParallel pool = new CpuParallel(2); HostBuffer a = randomLogits(rnd, 300, 64);
                HostBuffer b = randomLogits(rnd, 300, 64)) {
            Router router = track(Router.builder(config()).parallel(pool).accumulateLoad(false).build());
            int[] idxA;
            float[] scoresA;
            try (RouterOutput first = router.forwardLogits(a)) {
                idxA = ((HostBuffer) first.topkIdx()).toIntArray();
                scoresA = ((HostBuffer) first.scores()).toFloatArray();
            }
            // the second call reuses the first call's memory; then both stay open at once
            try (RouterOutput again = router.forwardLogits(a); RouterOutput other = router.forwardLogits(b)) {
                assertArrayEquals(idxA, ((HostBuffer) again.topkIdx()).toIntArray());
                assertArrayEquals(scoresA, ((HostBuffer) again.scores()).toFloatArray());
                HostBuffer s1 = (HostBuffer) again.scores();
                HostBuffer s2 = (HostBuffer) other.scores();
                assertFalse(s1.segment().address() == s2.segment().address(), "two open outputs share scores memory");
                assertArrayEquals(idxA, ((HostBuffer) again.topkIdx()).toIntArray(), "changed by another forward");
            }
            // a smaller batch fits in the retained memory
            try (HostBuffer small = randomLogits(rnd, 7, 64); RouterOutput o = router.forwardLogits(small)) {
                assertTrue(((HostBuffer) o.scores()).numel() == 7 * 64);
            }
        }
    }

    @Test
    void buffersOfAClosedOutputThrowEvenThoughTheirMemoryIsReused() {
        try (CpuParallel pool = new CpuParallel(1); HostBuffer a = randomLogits(new Random(1), 20, 64)) {
            Router router = track(Router.builder(config()).parallel(pool).accumulateLoad(false).build());
            RouterOutput out = router.forwardLogits(a);
            HostBuffer scores = (HostBuffer) out.scores();
            HostBuffer idx = (HostBuffer) out.topkIdx();
            HostBuffer counts = out.tokensPerExpert();
            out.close();
            try (RouterOutput next = router.forwardLogits(a)) {
                assertTrue(((HostBuffer) next.scores()).numel() > 0);
                assertThrows(BufferClosedException.class, scores::segment);
                assertThrows(BufferClosedException.class, () -> idx.getInt(0));
                assertThrows(BufferClosedException.class, () -> counts.getInt(0));
            }
        }
    }
}
