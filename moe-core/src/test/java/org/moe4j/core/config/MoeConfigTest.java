package org.moe4j.core.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.function.UnaryOperator;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.DType;

class MoeConfigTest {
    /** A valid starting point: every case below changes one thing. */
    static MoeConfig.Builder base() {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(32);
    }

    private static Arguments rule(String rule, UnaryOperator<MoeConfig.Builder> change, String message) {
        return Arguments.of(rule, change, message);
    }

    /** One failing case per validation rule, with the exact message (field and value named). */
    static Stream<Arguments> invalidConfigs() {
        return Stream.of(
                rule("hidden > 0", b -> b.hidden(0), "MoeConfig.hidden=0: must be > 0"),
                rule("experts > 0", b -> b.experts(-4), "MoeConfig.experts=-4: must be > 0"),
                rule("topK > 0", b -> b.topK(0), "MoeConfig.topK=0: must be > 0"),
                rule("ffn > 0", b -> b.ffn(0), "MoeConfig.ffn=0: must be > 0"),
                rule("expertGroups > 0", b -> b.groups(0, 1), "MoeConfig.expertGroups=0: must be > 0"),
                rule("limitedGroups > 0", b -> b.groups(2, 0), "MoeConfig.limitedGroups=0: must be > 0"),
                rule("expertParallel > 0", b -> b.expertParallel(0), "MoeConfig.expertParallel=0: must be > 0"),
                rule("groupAlignment > 0", b -> b.groupAlignment(0), "MoeConfig.groupAlignment=0: must be > 0"),
                rule("topK <= experts", b -> b.topK(9), "MoeConfig.topK=9: must not exceed experts (8)"),
                rule("groups divide experts", b -> b.groups(3, 3), "MoeConfig.expertGroups=3: must divide experts (8)"),
                rule("at least 2 experts per group", b -> b.groups(8, 8),
                        "MoeConfig.expertGroups=8: leaves 1 expert per group; node-limited routing needs at least 2 (experts=8)"),
                rule("limitedGroups <= expertGroups", b -> b.groups(2, 3),
                        "MoeConfig.limitedGroups=3: must not exceed expertGroups (2)"),
                rule("topK reachable in the limited groups", b -> b.groups(4, 1).topK(3),
                        "MoeConfig.topK=3: exceeds the 2 experts reachable in 1 limited group(s) of 2"),
                rule("routeScale > 0", b -> b.routeScale(0), "MoeConfig.routeScale=0.0: must be finite and > 0"),
                rule("routeScale finite", b -> b.routeScale(Double.POSITIVE_INFINITY),
                        "MoeConfig.routeScale=Infinity: must be finite and > 0"),
                rule("routeScale not NaN", b -> b.routeScale(Double.NaN), "MoeConfig.routeScale=NaN: must be finite and > 0"),
                rule("expertBiasCoeff >= 0", b -> b.expertBiasCoeff(-0.001),
                        "MoeConfig.expertBiasCoeff=-0.001: must be finite and >= 0"),
                rule("switchCoeff >= 0", b -> b.auxLoss(new AuxLoss(-1, 0, 0, 0)),
                        "MoeConfig.auxLoss.switchCoeff=-1.0: must be finite and >= 0"),
                rule("seqCoeff >= 0", b -> b.auxLoss(new AuxLoss(0, Double.NaN, 0, 0)),
                        "MoeConfig.auxLoss.seqCoeff=NaN: must be finite and >= 0"),
                rule("zCoeff >= 0", b -> b.auxLoss(new AuxLoss(0, 0, -0.5, 0)),
                        "MoeConfig.auxLoss.zCoeff=-0.5: must be finite and >= 0"),
                rule("seqLength >= 0", b -> b.auxLoss(new AuxLoss(0, 0.1, 0, -2)),
                        "MoeConfig.auxLoss.seqLength=-2: must be >= 0 (0 = whole batch)"),
                rule("capacity factor >= 0", b -> b.capacity(new Capacity(-1.25, DropPolicy.BY_SCORE)),
                        "MoeConfig.capacity.factor=-1.25: must be finite and >= 0"),
                rule("sharedExperts >= 0", b -> b.sharedExperts(-1, 32), "MoeConfig.sharedExperts=-1: must be >= 0"),
                rule("sharedFfn > 0 with shared experts", b -> b.sharedExperts(2, 0),
                        "MoeConfig.sharedFfn=0: must be > 0 when sharedExperts (2) > 0"),
                rule("sharedFfn >= 0", b -> b.sharedExperts(0, -8), "MoeConfig.sharedFfn=-8: must be >= 0"),
                rule("expertParallel divides experts", b -> b.expertParallel(3),
                        "MoeConfig.expertParallel=3: must divide experts (8)"),
                rule("expertDtype F32 or BF16", b -> b.expertDtype(DType.I32),
                        "MoeConfig.expertDtype=I32: must be F32 or BF16"),
                rule("shared-expert gate needs shared experts", b -> b.sharedExpertGate(true),
                        "MoeConfig.features.sharedExpertGate=true: needs shared experts (sharedExperts=0)"),
                rule("clamped SwiGLU limit > 0", b -> b.clampedSwiglu(0, 1.702),
                        "MoeConfig.features.swigluLimit=0.0: must be finite and > 0 with CLAMPED_SWIGLU"),
                rule("clamped SwiGLU alpha finite", b -> b.clampedSwiglu(7, Double.NaN),
                        "MoeConfig.features.swigluAlpha=NaN: must be finite and > 0 with CLAMPED_SWIGLU"),
                rule("limit and alpha only with the clamped SwiGLU",
                        b -> b.features(new LayerFeatures(false, false, false, false, ExpertActivation.SWIGLU, 7, 1)),
                        "MoeConfig.features.swigluLimit=7.0/1.0: limit and alpha apply to CLAMPED_SWIGLU only;"
                                + " SWIGLU needs limit 0 and alpha 1"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("invalidConfigs")
    void everyValidationRuleNamesTheFieldAndTheValue(String rule, UnaryOperator<MoeConfig.Builder> change,
            String message) {
        base().build(); // the base itself is valid
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> change.apply(base()).build());
        assertEquals(message, e.getMessage(), rule);
    }

    @Test
    void nullEnumsAndRecordsAreRefusedByName() {
        NullPointerException e = assertThrows(NullPointerException.class,
                () -> base().scoreFunction(null).build());
        assertEquals("MoeConfig.scoreFunction", e.getMessage());
        e = assertThrows(NullPointerException.class, () -> base().capacity(new Capacity(1, null)).build());
        assertEquals("MoeConfig.capacity.policy", e.getMessage());
        e = assertThrows(NullPointerException.class, () -> base().features(null).build());
        assertEquals("MoeConfig.features", e.getMessage());
        e = assertThrows(NullPointerException.class,
                () -> base().features(new LayerFeatures(false, false, false, false, null, 0, 1)).build());
        assertEquals("MoeConfig.features.activation", e.getMessage());
    }

    @Test
    void builderDefaultsAreDocumentedOnes() {
        MoeConfig c = base().build();
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertEquals(1, c.expertGroups());
        assertEquals(1, c.limitedGroups());
        assertEquals(GroupScore.TOP2_SUM, c.groupScore());
        assertFalse(c.routeNorm());
        assertEquals(1.0, c.routeScale());
        assertEquals(0.0, c.expertBiasCoeff());
        assertEquals(BiasCentering.ZERO_MEAN, c.biasCentering());
        assertEquals(AuxLoss.NONE, c.auxLoss());
        assertEquals(Capacity.DROPLESS, c.capacity());
        assertEquals(0, c.sharedExperts());
        assertEquals(1, c.expertParallel());
        assertEquals(1, c.groupAlignment());
        assertEquals(DType.F32, c.expertDtype());
        assertEquals(LayerFeatures.NONE, c.features());
        assertFalse(c.features().any());
        // limitedGroups left unset follows expertGroups
        assertEquals(4, base().expertGroups(4).build().limitedGroups());
    }

    @Test
    void derivedQuantitiesFollowTheFields() {
        MoeConfig c = base().experts(64).topK(6).groups(8, 3).expertParallel(4).sharedExperts(2, 48).build();
        assertEquals(16, c.localExperts());
        assertEquals(8, c.expertsPerGroup());
        assertTrue(c.groupLimited());
        assertEquals(96, c.sharedFfnTotal());
        assertFalse(base().groups(4, 4).build().groupLimited());
        assertEquals(c, c.toBuilder().build());
    }

    @Test
    void capacityPerExpertRoundsUpAndIsUnboundedWhenDropless() {
        assertEquals(Integer.MAX_VALUE, Capacity.DROPLESS.perExpert(100, 2, 8));
        assertEquals(32, new Capacity(1.25, DropPolicy.BY_SCORE).perExpert(100, 2, 8)); // 31.25 -> 32
        assertTrue(new AuxLoss(0, 0, 1e-3, 0).any());
        assertFalse(AuxLoss.NONE.any());
    }
}
