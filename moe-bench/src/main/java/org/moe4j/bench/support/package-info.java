/**
 * Shared JMH settings of the benchmarks.
 */
package org.moe4j.bench.support;
