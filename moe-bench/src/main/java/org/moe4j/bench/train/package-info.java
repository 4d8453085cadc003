/**
 * {@code moe train}, the CPU training demo: option handling and the run header
 * ({@link org.moe4j.bench.train.TrainCommand}), presets, scaling a real model down, the trainer and its
 * reports (metrics.json and the plots). See docs/training.md.
 */
package org.moe4j.bench.train;
