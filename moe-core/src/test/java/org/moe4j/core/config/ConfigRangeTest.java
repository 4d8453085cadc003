package org.moe4j.core.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Out-of-range values are refused wherever they enter: builder, moe4j JSON, Hugging Face import. */
class ConfigRangeTest {
    static MoeConfig.Builder base() {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(32);
    }

    @Test
    void negativeLimitedGroupsAreRefusedNotReadAsNoLimit() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> base().groups(4, -1).build());
        assertEquals("MoeConfig.limitedGroups=-1: must be > 0", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> base().expertGroups(4).limitedGroups(-3).build());
        assertEquals("MoeConfig.limitedGroups=-3: must be > 0", e.getMessage());
        // unset still means "no limit"
        assertEquals(4, base().expertGroups(4).build().limitedGroups());
    }

    @Test
    void negativeGroupCountsInMoe4jJsonAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MoeConfigJson.read(
                "{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"expertGroups\": 4, \"limitedGroups\": -2}"));
        assertEquals("MoeConfig JSON: MoeConfig.limitedGroups=-2: must be > 0", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> MoeConfigJson.read(
                "{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"expertGroups\": -4}"));
        assertEquals("MoeConfig JSON: MoeConfig.expertGroups=-4: must be > 0", e.getMessage());
    }

    @Test
    void negativeGroupCountsInAHuggingFaceConfigAreRefused() {
        String json = HfConfigImport.presetJson("deepseek-v3");
        String badTopkGroup = json.replaceFirst("\"topk_group\":\\s*\\d+", "\"topk_group\": -1");
        assertTrue(!badTopkGroup.equals(json), "the preset has a topk_group to corrupt");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> HfConfigImport.parse(badTopkGroup, "cfg", b -> { }));
        assertEquals("cfg: MoeConfig.limitedGroups=-1: must be > 0", e.getMessage());
        String badGroups = json.replaceFirst("\"n_group\":\\s*\\d+", "\"n_group\": -8");
        e = assertThrows(IllegalArgumentException.class, () -> HfConfigImport.parse(badGroups, "cfg", b -> { }));
        assertEquals("cfg: MoeConfig.expertGroups=-8: must be > 0", e.getMessage());
        String badShared = json.replaceFirst("\"n_shared_experts\":\\s*\\d+", "\"n_shared_experts\": -1");
        e = assertThrows(IllegalArgumentException.class, () -> HfConfigImport.parse(badShared, "cfg", b -> { }));
        assertEquals("cfg: MoeConfig.sharedExperts=-1: must be >= 0", e.getMessage());
    }

    @Test
    void sharedIntermediateSizeThatOverflowsIntIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> base().sharedExperts(4, 1 << 30).build());
        assertEquals("MoeConfig.sharedFfn=1073741824: times sharedExperts (4) = 4294967296 overflows the int range"
                + " of the shared intermediate size", e.getMessage());
    }

    @Test
    void aCopiedBuilderKeepsItsLimitedGroups() {
        MoeConfig c = base().groups(4, 2).build();
        assertEquals(c, c.toBuilder().build());
        assertEquals(2, c.toBuilder().expertGroups(2).build().limitedGroups());
    }
}
