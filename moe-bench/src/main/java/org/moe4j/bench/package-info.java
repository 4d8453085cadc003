/**
 * JMH benchmarks of the CPU path (router, dispatch and combine, grouped experts, the whole layer), run
 * with {@code ./moe jmh}. Numbers and their peers are in docs/benchmarks.md.
 */
package org.moe4j.bench;
