package org.moe4j.core.config.internal;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * Typed, error-reporting access to the fields of one JSON object, for the config readers. Every
 * error is an {@link IllegalArgumentException} that starts with the source (file or description) and
 * names the field by its dotted path. A JSON {@code null} counts as absent.
 */
public final class JsonFields {
    /** Strict parser: duplicate keys and trailing content are errors. */
    public static final ObjectMapper MAPPER = JsonMapper.builder()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    private final ObjectNode node;
    private final String source;
    private final String prefix;

    private JsonFields(ObjectNode node, String source, String prefix) {
        this.node = node;
        this.source = source;
        this.prefix = prefix;
    }

    /**
     * @param json   JSON text whose top level must be an object
     * @param source what the text is, for messages (e.g. a file path)
     * @return the fields of the top-level object
     * @throws IllegalArgumentException if the text is not a JSON object
     */
    public static JsonFields parse(String json, String source) {
        JsonNode root;
        try {
            root = MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(source + ": invalid JSON: " + e.getOriginalMessage()
                    + (e.getLocation() == null ? "" : " at line " + e.getLocation().getLineNr()
                    + ", column " + e.getLocation().getColumnNr()), e);
        }
        if (!(root instanceof ObjectNode obj)) {
            throw new IllegalArgumentException(source + ": expected a JSON object at the top level, got "
                    + (root == null || root.isMissingNode() ? "nothing" : root.getNodeType().toString().toLowerCase(Locale.ROOT)));
        }
        return new JsonFields(obj, source, "");
    }

    /** @return the source named in messages */
    public String source() {
        return source;
    }

    /**
     * @param name field name
     * @return true if present and not null
     */
    public boolean has(String name) {
        JsonNode v = node.get(name);
        return v != null && !v.isNull();
    }

    /**
     * @param name field name
     * @return true if the field is present with the JSON value {@code null}
     */
    public boolean isNull(String name) {
        JsonNode v = node.get(name);
        return v != null && v.isNull();
    }

    /**
     * @param name field name
     * @return the field's value as compact JSON text (for messages), or {@code null} when absent
     */
    public String rawText(String name) {
        JsonNode v = node.get(name);
        return v == null ? null : v.toString();
    }

    /** @return the field names present, in document order */
    public List<String> names() {
        List<String> names = new ArrayList<>();
        node.fieldNames().forEachRemaining(names::add);
        return names;
    }

    /**
     * Refuses fields not in {@code known}.
     *
     * @param known the accepted field names, in the order to list them
     * @throws IllegalArgumentException naming the first unknown field and listing the known ones
     */
    public void rejectUnknown(Collection<String> known) {
        for (String name : names()) {
            if (!known.contains(name)) {
                throw error("unknown field '" + prefix + name + "'; known fields"
                        + (prefix.isEmpty() ? "" : " of " + prefix.substring(0, prefix.length() - 1)) + ": "
                        + String.join(", ", known));
            }
        }
    }

    /**
     * @param message what is wrong
     * @return an exception whose message starts with the source
     */
    public IllegalArgumentException error(String message) {
        return new IllegalArgumentException(source + ": " + message);
    }

    private JsonNode required(String name, String context) {
        if (!has(name)) {
            throw error("missing required field '" + prefix + name + "'" + context);
        }
        return node.get(name);
    }

    private IllegalArgumentException wrongType(String name, String expected) {
        return error("field '" + prefix + name + "' must be " + expected + ", got " + node.get(name));
    }

    /**
     * @param name    field name
     * @param context appended to the missing-field message (e.g. " (model_type deepseek_v3)"), or ""
     * @return the integer value
     * @throws IllegalArgumentException if missing or not an int
     */
    public int requireInt(String name, String context) {
        JsonNode v = required(name, context);
        if (!v.isIntegralNumber() || !v.canConvertToInt()) {
            throw wrongType(name, "an integer");
        }
        return v.intValue();
    }

    /**
     * @param name     field name
     * @param fallback value when absent
     * @return the integer value or the fallback
     */
    public int intOr(String name, int fallback) {
        return has(name) ? requireInt(name, "") : fallback;
    }

    /**
     * @param name    field name
     * @param context appended to the missing-field message, or ""
     * @return the numeric value
     */
    public double requireDouble(String name, String context) {
        JsonNode v = required(name, context);
        if (!v.isNumber()) {
            throw wrongType(name, "a number");
        }
        return v.doubleValue();
    }

    /**
     * @param name     field name
     * @param fallback value when absent
     * @return the numeric value or the fallback
     */
    public double doubleOr(String name, double fallback) {
        return has(name) ? requireDouble(name, "") : fallback;
    }

    /**
     * @param name     field name
     * @param fallback value when absent
     * @return the boolean value or the fallback
     */
    public boolean booleanOr(String name, boolean fallback) {
        if (!has(name)) {
            return fallback;
        }
        JsonNode v = node.get(name);
        if (!v.isBoolean()) {
            throw wrongType(name, "true or false");
        }
        return v.booleanValue();
    }

    /**
     * @param name    field name
     * @param context appended to the missing-field message, or ""
     * @return the string value
     */
    public String requireString(String name, String context) {
        JsonNode v = required(name, context);
        if (!v.isTextual()) {
            throw wrongType(name, "a string");
        }
        return v.textValue();
    }

    /**
     * @param name     field name
     * @param fallback value when absent
     * @return the string value or the fallback
     */
    public String stringOr(String name, String fallback) {
        return has(name) ? requireString(name, "") : fallback;
    }

    /**
     * @param name     field name
     * @param type     enum class
     * @param fallback value when absent
     * @param <E>      enum type
     * @return the constant named by the field (case-insensitive), or the fallback
     */
    public <E extends Enum<E>> E enumOr(String name, Class<E> type, E fallback) {
        if (!has(name)) {
            return fallback;
        }
        String s = requireString(name, "");
        for (E e : type.getEnumConstants()) {
            if (e.name().equalsIgnoreCase(s.trim())) {
                return e;
            }
        }
        throw error("field '" + prefix + name + "' must be one of "
                + Arrays.stream(type.getEnumConstants()).map(Enum::name).collect(Collectors.joining(", "))
                + ", got \"" + s + "\"");
    }

    /**
     * @param name field name
     * @return the nested object's fields, or null when absent
     * @throws IllegalArgumentException if present but not an object
     */
    public JsonFields objectOrNull(String name) {
        if (!has(name)) {
            return null;
        }
        if (!(node.get(name) instanceof ObjectNode obj)) {
            throw wrongType(name, "an object");
        }
        return new JsonFields(obj, source, prefix + name + ".");
    }
}
