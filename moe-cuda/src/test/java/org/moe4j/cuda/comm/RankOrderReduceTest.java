package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.dispatch.LocalGroup;

/**
 * The host side of the device communicators, checked without a GPU: a {@link LocalGroup} whose
 * reductions are replaced by {@code RankOrderReduce} must give the same bytes as {@link LocalGroup}
 * itself for every collective of the exercise.
 */
class RankOrderReduceTest {

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void rankOrderReduceMatchesLocalGroupBitForBit(int world) {
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " world " + world);
        List<Map<String, byte[]>> reference = LocalGroup.run(world, c -> CommExercise.run(c, CommExercise.host(), seed));
        List<Map<String, byte[]>> staged = LocalGroup.run(world, c -> CommExercise.run(new HostReducingCommunicator(c),
                CommExercise.host(), seed));
        assertEquals(world, staged.size());
        for (int r = 0; r < world; r++) {
            assertEquals(reference.get(r).keySet(), staged.get(r).keySet());
            for (String k : reference.get(r).keySet()) {
                assertArrayEquals(reference.get(r).get(k), staged.get(r).get(k), "rank " + r + " " + k + " seed " + seed);
            }
        }
    }
}
