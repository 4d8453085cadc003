/**
 * Runnable examples of the library API, kept compiling and tested: the README's training loop.
 */
package org.moe4j.examples;
