/**
 * The {@code moe} command-line tool: its entry point and error handling
 * ({@link org.moe4j.bench.cli.MoeCli}), {@code moe info}, {@code moe jmh} and {@code moe launch}.
 */
package org.moe4j.bench.cli;
