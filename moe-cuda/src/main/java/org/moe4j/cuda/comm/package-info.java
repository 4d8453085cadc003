/**
 * Communicators for GPU ranks: {@link org.moe4j.cuda.comm.NcclCommunicator} (one process per GPU) and
 * {@link org.moe4j.cuda.comm.VirtualRankGroup} (several in-process ranks on one GPU, all-to-all by
 * device-to-device copies).
 */
package org.moe4j.cuda.comm;
