/**
 * The token-choice top-k router ({@link org.moe4j.routing.Router}): scores, node-limited expert groups,
 * the aux-loss-free expert bias ({@link org.moe4j.routing.ExpertBias}), top-k selection, weight
 * normalisation and scaling, load statistics, auxiliary losses and capacity, forward and backward. The
 * kernels it runs are the {@link org.moe4j.routing.RoutingKernels} family. See docs/routing.md.
 */
package org.moe4j.routing;
