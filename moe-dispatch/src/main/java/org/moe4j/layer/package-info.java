/**
 * The whole MoE layer ({@link org.moe4j.layer.MoeLayer}): route, dispatch, experts, combine, forward and
 * backward, with its parameters, gradient reduction over ranks and expert-bias update.
 */
package org.moe4j.layer;
