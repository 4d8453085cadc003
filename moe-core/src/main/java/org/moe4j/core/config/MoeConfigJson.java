package org.moe4j.core.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.core.DType;
import org.moe4j.core.config.internal.JsonFields;

/**
 * moe4j's own JSON form of a {@link MoeConfig}: one object whose field names are the record
 * components, with {@code auxLoss}, {@code capacity} and {@code features} as nested objects and enums
 * written by name.
 *
 * <p>Reading is strict: an unknown field (at any level) is an error that lists the known fields,
 * a value of the wrong type is an error naming the field. {@code hidden}, {@code experts},
 * {@code topK} and {@code ffn} are required; every other field may be left out and then takes the
 * {@link MoeConfig#builder()} default. The result is validated like any built config; {@link #write}
 * followed by {@link #read(String)} gives an equal config.
 *
 * <pre>{@code
 * {"hidden": 1024, "experts": 64, "topK": 6, "ffn": 512,
 *  "scoreFunction": "SIGMOID", "expertGroups": 8, "limitedGroups": 3, "routeNorm": true,
 *  "auxLoss": {"seqCoeff": 0.0001}, "capacity": {"factor": 1.25, "policy": "BY_SCORE"},
 *  "dispatch": {"strategy": "static-all-to-all", "chunkFactor": 1.5}}
 * }</pre>
 */
public final class MoeConfigJson {
    /** Top-level fields, in the order {@link #write} emits them. */
    public static final List<String> FIELDS = List.of("hidden", "experts", "topK", "ffn", "scoreFunction",
            "expertGroups", "limitedGroups", "groupScore", "routeNorm", "routeScale", "expertBiasCoeff",
            "biasCentering", "auxLoss", "capacity", "sharedExperts", "sharedFfn", "expertParallel",
            "groupAlignment", "expertDtype", "dispatch", "features");
    /** Fields of the nested {@code auxLoss} object. */
    public static final List<String> AUX_LOSS_FIELDS = List.of("switchCoeff", "seqCoeff", "zCoeff", "seqLength");
    /** Fields of the nested {@code capacity} object. */
    public static final List<String> CAPACITY_FIELDS = List.of("factor", "policy");
    /** Fields of the nested {@code dispatch} object. */
    public static final List<String> DISPATCH_FIELDS = List.of("strategy", "perRankDedup", "weightBeforeReturn",
            "chunkFactor", "chunkRows");
    /** Fields of the nested {@code features} object ({@link LayerFeatures}). */
    public static final List<String> FEATURES_FIELDS = List.of("sharedExpertGate", "scoreBeforeExperts", "routerBias",
            "expertLinearBias", "activation", "swigluLimit", "swigluAlpha");

    private static final String SOURCE = "MoeConfig JSON";

    private MoeConfigJson() {
    }

    /**
     * Reads a config file.
     *
     * @param file a JSON file in this format
     * @return the validated config
     * @throws IOException              if the file cannot be read
     * @throws IllegalArgumentException naming the file and the offending field
     */
    public static MoeConfig read(Path file) throws IOException {
        return parse(Files.readString(file, StandardCharsets.UTF_8), SOURCE + " " + file);
    }

    /**
     * Reads a config from JSON text.
     *
     * @param json JSON text in this format
     * @return the validated config
     * @throws IllegalArgumentException naming the offending field (unknown, mistyped, missing or invalid)
     */
    public static MoeConfig read(String json) {
        return parse(json, SOURCE);
    }

    private static MoeConfig parse(String json, String source) {
        JsonFields f = JsonFields.parse(json, source);
        f.rejectUnknown(FIELDS);
        MoeConfig.Builder b = MoeConfig.builder()
                .hidden(f.requireInt("hidden", ""))
                .experts(f.requireInt("experts", ""))
                .topK(f.requireInt("topK", ""))
                .ffn(f.requireInt("ffn", ""));
        if (f.has("scoreFunction")) {
            b.scoreFunction(f.enumOr("scoreFunction", ScoreFunction.class, null));
        }
        if (f.has("expertGroups")) {
            b.expertGroups(f.requireInt("expertGroups", ""));
        }
        if (f.has("limitedGroups")) {
            b.limitedGroups(f.requireInt("limitedGroups", ""));
        }
        if (f.has("groupScore")) {
            b.groupScore(f.enumOr("groupScore", GroupScore.class, null));
        }
        if (f.has("routeNorm")) {
            b.routeNorm(f.booleanOr("routeNorm", false));
        }
        if (f.has("routeScale")) {
            b.routeScale(f.requireDouble("routeScale", ""));
        }
        if (f.has("expertBiasCoeff")) {
            b.expertBiasCoeff(f.requireDouble("expertBiasCoeff", ""));
        }
        if (f.has("biasCentering")) {
            b.biasCentering(f.enumOr("biasCentering", BiasCentering.class, null));
        }
        JsonFields aux = f.objectOrNull("auxLoss");
        if (aux != null) {
            aux.rejectUnknown(AUX_LOSS_FIELDS);
            b.auxLoss(new AuxLoss(aux.doubleOr("switchCoeff", 0), aux.doubleOr("seqCoeff", 0),
                    aux.doubleOr("zCoeff", 0), aux.intOr("seqLength", 0)));
        }
        JsonFields cap = f.objectOrNull("capacity");
        if (cap != null) {
            cap.rejectUnknown(CAPACITY_FIELDS);
            b.capacity(new Capacity(cap.doubleOr("factor", Capacity.DROPLESS.factor()),
                    cap.enumOr("policy", DropPolicy.class, Capacity.DROPLESS.policy())));
        }
        int sharedExperts = f.intOr("sharedExperts", 0);
        int sharedFfn = f.intOr("sharedFfn", 0);
        b.sharedExperts(sharedExperts, sharedFfn);
        if (f.has("expertParallel")) {
            b.expertParallel(f.requireInt("expertParallel", ""));
        }
        if (f.has("groupAlignment")) {
            b.groupAlignment(f.requireInt("groupAlignment", ""));
        }
        if (f.has("expertDtype")) {
            String s = f.requireString("expertDtype", "");
            try {
                b.expertDtype(DType.parse(s));
            } catch (IllegalArgumentException e) {
                throw f.error("field 'expertDtype': " + e.getMessage());
            }
        }
        JsonFields feat = f.objectOrNull("features");
        if (feat != null) {
            feat.rejectUnknown(FEATURES_FIELDS);
            LayerFeatures d = LayerFeatures.NONE;
            ExpertActivation act = feat.enumOr("activation", ExpertActivation.class, d.activation());
            boolean clamped = act == ExpertActivation.CLAMPED_SWIGLU;
            b.features(new LayerFeatures(feat.booleanOr("sharedExpertGate", d.sharedExpertGate()),
                    feat.booleanOr("scoreBeforeExperts", d.scoreBeforeExperts()),
                    feat.booleanOr("routerBias", d.routerBias()),
                    feat.booleanOr("expertLinearBias", d.expertLinearBias()), act,
                    feat.doubleOr("swigluLimit", clamped ? GPT_OSS_SWIGLU_LIMIT : d.swigluLimit()),
                    feat.doubleOr("swigluAlpha", clamped ? GPT_OSS_SWIGLU_ALPHA : d.swigluAlpha())));
        }
        JsonFields dispatch = f.objectOrNull("dispatch");
        if (dispatch != null) {
            dispatch.rejectUnknown(DISPATCH_FIELDS);
            DispatchOptions d = DispatchOptions.DEFAULT;
            try {
                b.dispatch(new DispatchOptions(dispatch.stringOr("strategy", d.strategy()),
                        dispatch.booleanOr("perRankDedup", false), dispatch.booleanOr("weightBeforeReturn", false),
                        dispatch.doubleOr("chunkFactor", 0), dispatch.intOr("chunkRows", 0)));
            } catch (IllegalArgumentException e) {
                throw dispatch.error("field 'dispatch': " + e.getMessage());
            }
        }
        try {
            return b.build();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
    }

    /** Default clamp of {@code CLAMPED_SWIGLU} when {@code features.swigluLimit} is left out (gpt-oss). */
    private static final double GPT_OSS_SWIGLU_LIMIT = 7.0;
    /** Default gain of {@code CLAMPED_SWIGLU} when {@code features.swigluAlpha} is left out (gpt-oss). */
    private static final double GPT_OSS_SWIGLU_ALPHA = 1.702;

    /**
     * Returns pretty-printed JSON with every field, in {@link #FIELDS} order.
     * @param config the config
     * @return pretty-printed JSON with every field, in {@link #FIELDS} order
     */
    public static String write(MoeConfig config) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("hidden", config.hidden());
        m.put("experts", config.experts());
        m.put("topK", config.topK());
        m.put("ffn", config.ffn());
        m.put("scoreFunction", config.scoreFunction().name());
        m.put("expertGroups", config.expertGroups());
        m.put("limitedGroups", config.limitedGroups());
        m.put("groupScore", config.groupScore().name());
        m.put("routeNorm", config.routeNorm());
        m.put("routeScale", config.routeScale());
        m.put("expertBiasCoeff", config.expertBiasCoeff());
        m.put("biasCentering", config.biasCentering().name());
        Map<String, Object> aux = new LinkedHashMap<>();
        aux.put("switchCoeff", config.auxLoss().switchCoeff());
        aux.put("seqCoeff", config.auxLoss().seqCoeff());
        aux.put("zCoeff", config.auxLoss().zCoeff());
        aux.put("seqLength", config.auxLoss().seqLength());
        m.put("auxLoss", aux);
        Map<String, Object> cap = new LinkedHashMap<>();
        cap.put("factor", config.capacity().factor());
        cap.put("policy", config.capacity().policy().name());
        m.put("capacity", cap);
        m.put("sharedExperts", config.sharedExperts());
        m.put("sharedFfn", config.sharedFfn());
        m.put("expertParallel", config.expertParallel());
        m.put("groupAlignment", config.groupAlignment());
        m.put("expertDtype", config.expertDtype().name());
        Map<String, Object> dispatch = new LinkedHashMap<>();
        dispatch.put("strategy", config.dispatch().strategy());
        dispatch.put("perRankDedup", config.dispatch().perRankDedup());
        dispatch.put("weightBeforeReturn", config.dispatch().weightBeforeReturn());
        dispatch.put("chunkFactor", config.dispatch().chunkFactor());
        dispatch.put("chunkRows", config.dispatch().chunkRows());
        m.put("dispatch", dispatch);
        LayerFeatures lf = config.features();
        Map<String, Object> feat = new LinkedHashMap<>();
        feat.put("sharedExpertGate", lf.sharedExpertGate());
        feat.put("scoreBeforeExperts", lf.scoreBeforeExperts());
        feat.put("routerBias", lf.routerBias());
        feat.put("expertLinearBias", lf.expertLinearBias());
        feat.put("activation", lf.activation().name());
        feat.put("swigluLimit", lf.swigluLimit());
        feat.put("swigluAlpha", lf.swigluAlpha());
        m.put("features", feat);
        try {
            return JsonFields.MAPPER.writer().with(SerializationFeature.INDENT_OUTPUT).writeValueAsString(m) + "\n";
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e); // cannot happen for maps of numbers and strings
        }
    }

    /**
     * Writes {@link #write(MoeConfig)} to a file (UTF-8), replacing it.
     *
     * @param config the config
     * @param file   destination
     * @throws IOException if the file cannot be written
     */
    public static void write(MoeConfig config, Path file) throws IOException {
        Files.writeString(file, write(config), StandardCharsets.UTF_8);
    }
}
