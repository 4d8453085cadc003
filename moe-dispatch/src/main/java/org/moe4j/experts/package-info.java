/**
 * The experts: grouped SwiGLU experts over contiguous token groups
 * ({@link org.moe4j.experts.GroupedExperts}), shared experts applied to every token
 * ({@link org.moe4j.experts.SharedExperts}) and the {@link org.moe4j.experts.ExpertKernels} family.
 * See docs/experts.md.
 */
package org.moe4j.experts;
