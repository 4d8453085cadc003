package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class MoeNameMapTest {
    @Test
    void familiesNameTheirTensorsAsTransformersDoes() {
        MoeNameMap ds = MoeNameMap.forModelType("deepseek_v3");
        assertEquals("experts.17.gate_proj.weight", ds.expertGate(17));
        assertEquals("experts.17.down_proj.weight_scale_inv", ds.fp8Scale(ds.expertDown(17)));
        assertEquals("gate.e_score_correction_bias", ds.scoreCorrectionBias());
        assertEquals("shared_experts.up_proj.weight", ds.sharedUpProj());

        MoeNameMap qwen3 = MoeNameMap.forModelType("Qwen3_MoE");
        assertNull(qwen3.scoreCorrectionBias());
        assertFalse(qwen3.hasSharedExperts());

        MoeNameMap qwen2 = MoeNameMap.forModelType("qwen2_moe");
        assertEquals("shared_expert.gate_proj.weight", qwen2.sharedGateProj());
        assertEquals("shared_expert_gate.weight", qwen2.sharedExpertGate());

        MoeNameMap mixtral = MoeNameMap.forModelType("mixtral");
        assertEquals("experts.3.w1.weight", mixtral.expertGate(3));
        assertEquals("experts.3.w3.weight", mixtral.expertUp(3));
        assertEquals("experts.3.w2.weight", mixtral.expertDown(3));

        MoeNameMap llama4 = MoeNameMap.forModelType("llama4_text");
        assertEquals(MoeNameMap.ExpertLayout.FUSED_CHUNKED, llama4.expertLayout());
        assertEquals("router.weight", llama4.routerWeight());
        assertEquals("shared_expert.down_proj.weight", llama4.sharedDownProj());

        MoeNameMap oss = MoeNameMap.forModelType("gpt_oss");
        assertEquals(MoeNameMap.ExpertLayout.FUSED_INTERLEAVED, oss.expertLayout());
        assertEquals("experts.gate_up_proj_blocks", oss.mxfp4Blocks(oss.gateProj()));
        assertEquals("experts.down_proj_scales", oss.mxfp4Scales(oss.downProj()));
        assertEquals("router.bias", oss.routerBias());
        assertTrue(oss.fused());
        assertThrows(IllegalStateException.class, () -> oss.expertGate(0));
    }

    @Test
    void badMapsAndTypesAreRefusedByName() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MoeNameMap.forModelType("llama"));
        assertTrue(e.getMessage().contains("'llama'"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MoeNameMap.forModelType(null));
        e = assertThrows(IllegalArgumentException.class, () -> new MoeNameMap("x", "gate.weight", null, null,
                MoeNameMap.ExpertLayout.PER_EXPERT, "experts.gate_proj.weight", "experts.{e}.up_proj.weight",
                "experts.{e}.down_proj.weight", null, null, null, null, null, null, "_scale_inv", "_blocks", "_scales"));
        assertTrue(e.getMessage().contains("gateProj"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeNameMap("x", "gate.weight", null, null,
                MoeNameMap.ExpertLayout.PER_EXPERT, "experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight",
                "experts.{e}.down_proj.weight", null, null, "s.gate", null, null, null, "_scale_inv", "_blocks", "_scales"));
        assertTrue(e.getMessage().contains("shared"), e.getMessage());
        // per-expert bias patterns (the training state's) need the expert placeholder like the weights
        e = assertThrows(IllegalArgumentException.class, () -> new MoeNameMap("x", "gate.weight", null, null,
                MoeNameMap.ExpertLayout.PER_EXPERT, "experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight",
                "experts.{e}.down_proj.weight", "experts.gate_up_proj.bias", null, null, null, null, null, "_scale_inv",
                "_blocks", "_scales"));
        assertTrue(e.getMessage().contains("gateUpBias='experts.gate_up_proj.bias'"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MoeNameMap.expert("experts.{e}.w1.weight", -1));
    }
}
