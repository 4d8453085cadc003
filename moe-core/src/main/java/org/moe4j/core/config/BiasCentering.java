package org.moe4j.core.config;

/** What the expert-bias update does after its sign step. */
public enum BiasCentering {
    /** Subtract the mean so the bias keeps zero mean (torchtitan). */
    ZERO_MEAN,
    /** Leave the bias as stepped (Megatron-Core). */
    NONE
}
