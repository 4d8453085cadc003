/**
 * The description of one MoE layer: {@link org.moe4j.core.config.MoeConfig} (sizes, routing, balancing,
 * capacity, shared experts, expert parallelism) and its parts, moe4j's own JSON format
 * ({@link org.moe4j.core.config.MoeConfigJson}) and the import of a Hugging Face {@code config.json}
 * ({@link org.moe4j.core.config.HfConfigImport}). See docs/config.md.
 */
package org.moe4j.core.config;
