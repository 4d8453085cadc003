/**
 * Multi-process runs: the torchrun-style environment ({@link org.moe4j.dispatch.dist.DistEnv}) and the
 * TCP rendezvous that hands every rank the communicator's unique id. See docs/distributed.md.
 */
package org.moe4j.dispatch.dist;
