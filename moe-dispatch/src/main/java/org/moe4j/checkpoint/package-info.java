/**
 * Checkpoints in the safetensors format: reading ({@link org.moe4j.checkpoint.SafetensorsFile}), writing
 * ({@link org.moe4j.checkpoint.SafetensorsWriter}) and saving or loading a layer's named tensors
 * ({@link org.moe4j.checkpoint.Checkpoints}).
 */
package org.moe4j.checkpoint;
