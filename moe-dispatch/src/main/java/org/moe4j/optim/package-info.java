/**
 * Training the layer's parameters: {@link org.moe4j.optim.AdamW} over
 * {@link org.moe4j.optim.Parameter}s (value and gradient), running the
 * {@link org.moe4j.optim.OptimizerKernels} family of the parameters' backend.
 */
package org.moe4j.optim;
