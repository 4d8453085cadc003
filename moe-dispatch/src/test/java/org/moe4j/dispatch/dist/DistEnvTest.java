package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.Map;
import java.util.OptionalInt;
import org.junit.jupiter.api.Test;

class DistEnvTest {

    private static Map<String, String> torchrun(String rank, String world, String localRank) {
        Map<String, String> m = new HashMap<>();
        m.put("RANK", rank);
        m.put("WORLD_SIZE", world);
        m.put("LOCAL_RANK", localRank);
        m.put("MASTER_ADDR", "node-17.cluster");
        m.put("MASTER_PORT", "29500");
        return m;
    }

    private static String error(Map<String, String> env) {
        return assertThrows(IllegalArgumentException.class, () -> DistEnv.fromMap(env)).getMessage();
    }

    @Test
    void torchrunVariablesAreParsedAndRoundTrip() {
        Map<String, String> m = torchrun("5", "8", "1");
        m.put("LOCAL_WORLD_SIZE", "4");
        DistEnv env = DistEnv.fromMap(m);
        assertEquals(new DistEnv(5, 8, 1, OptionalInt.of(4), "node-17.cluster", 29500), env);
        assertFalse(env.isMaster());
        assertEquals(env, DistEnv.fromMap(env.toMap()));
    }

    @Test
    void localWorldSizeIsOptional() {
        DistEnv env = DistEnv.fromMap(torchrun(" 0 ", "2", "0"));
        assertTrue(env.localWorldSize().isEmpty());
        assertTrue(env.isMaster());
    }

    @Test
    void missingVariableIsNamed() {
        for (String name : new String[] {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
            Map<String, String> m = torchrun("1", "2", "1");
            m.remove(name);
            String msg = error(m);
            assertTrue(msg.startsWith(name + " is not set"), msg);
        }
    }

    @Test
    void malformedNumberIsNamedWithItsValue() {
        assertTrue(error(torchrun("1", "four", "1")).contains("WORLD_SIZE='four' is not an integer"));
        Map<String, String> m = torchrun("1", "2", "1");
        m.put("MASTER_PORT", "29500x");
        assertTrue(error(m).contains("MASTER_PORT='29500x' is not an integer"));
    }

    @Test
    void inconsistentValuesAreRefused() {
        assertTrue(error(torchrun("4", "4", "0")).contains("RANK=4 must be in [0, WORLD_SIZE=4)"));
        assertTrue(error(torchrun("-1", "4", "0")).contains("RANK=-1 must be in [0, WORLD_SIZE=4)"));
        assertTrue(error(torchrun("0", "0", "0")).contains("WORLD_SIZE=0 must be >= 1"));
        assertTrue(error(torchrun("1", "4", "2")).contains("LOCAL_RANK=2 must be <= RANK=1"));
        Map<String, String> m = torchrun("3", "4", "2");
        m.put("LOCAL_WORLD_SIZE", "2");
        assertTrue(error(m).contains("LOCAL_RANK=2 must be < LOCAL_WORLD_SIZE=2"));
        m.put("LOCAL_WORLD_SIZE", "5");
        assertTrue(error(m).contains("LOCAL_WORLD_SIZE=5 must be in [1, WORLD_SIZE=4]"));
        Map<String, String> p = torchrun("1", "2", "1");
        p.put("MASTER_PORT", "70000");
        assertTrue(error(p).contains("MASTER_PORT=70000 must be in [1, 65535]"));
        Map<String, String> a = torchrun("1", "2", "1");
        a.put("MASTER_ADDR", "  ");
        assertTrue(error(a).contains("MASTER_ADDR must not be blank"));
    }

    @Test
    void singleProcessWorldIsRankZeroOfOne() {
        DistEnv env = DistEnv.single(29500);
        assertEquals(0, env.rank());
        assertEquals(1, env.worldSize());
        assertEquals(OptionalInt.of(1), env.localWorldSize());
    }
}
