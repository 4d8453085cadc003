package org.moe4j.routing;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.List;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.BiasCentering;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;

/** Loads the PyTorch reference fixtures written by scripts/fixtures/routing_fixtures.py. */
final class Fixture {
    static final List<String> CASES = List.of("titan_debug_node_limited", "deepseek_v3", "qwen3_moe",
            "mixtral_bf16_padded", "deepseek_v2_group_max", "aux_switch", "aux_sequence", "aux_z",
            "aux_all_sigmoid_grouped");
    static final List<String> TRAJECTORIES = List.of("bias_zero_mean", "bias_none");

    private static final ObjectMapper JSON = new ObjectMapper();

    private Fixture() {
    }

    static JsonNode load(String name) {
        String path = "/fixtures/routing_" + name + ".json";
        try (InputStream in = Fixture.class.getResourceAsStream(path)) {
            if (in == null) {
                throw new IllegalStateException("missing fixture " + path);
            }
            return JSON.readTree(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static float[] floats(JsonNode n) {
        float[] a = new float[n.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = (float) n.get(i).asDouble();
        }
        return a;
    }

    static int[] ints(JsonNode n) {
        int[] a = new int[n.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = n.get(i).asInt();
        }
        return a;
    }

    static MoeConfig.Builder config(JsonNode c, int hidden) {
        return MoeConfig.builder()
                .hidden(hidden)
                .experts(c.get("experts").asInt())
                .topK(c.get("topK").asInt())
                .ffn(1)
                .scoreFunction(ScoreFunction.valueOf(c.get("scoreFunction").asText()))
                .groups(c.get("expertGroups").asInt(), c.get("limitedGroups").asInt())
                .groupScore(GroupScore.valueOf(c.get("groupScore").asText()))
                .routeNorm(c.get("routeNorm").asBoolean())
                .routeScale(c.get("routeScale").asDouble())
                .auxLoss(new AuxLoss(c.get("switchCoeff").asDouble(), c.get("seqCoeff").asDouble(),
                        c.get("zCoeff").asDouble(), c.get("seqLength").asInt()));
    }

    static BiasCentering centering(JsonNode n) {
        return BiasCentering.valueOf(n.get("centering").asText());
    }
}
