/**
 * Basic value types of moe4j: element types ({@link org.moe4j.core.DType}, with exact bf16/fp16
 * conversion), shapes ({@link org.moe4j.core.Shape}), devices ({@link org.moe4j.core.Device}) and the
 * JVM flags moe4j needs ({@link org.moe4j.core.JvmRequirements}).
 */
package org.moe4j.core;
