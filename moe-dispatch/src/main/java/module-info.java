/**
 * Dispatch and combine of routed tokens over expert-parallel ranks ({@code Communicator}, in-process
 * {@code LocalGroup}s, TCP rendezvous), grouped SwiGLU and shared experts, the {@code MoeLayer},
 * the {@code AdamW} optimiser and safetensors checkpoints.
 *
 * <p>{@code org.moe4j.dispatch.spi} holds what another backend needs to implement the same contracts
 * (the CUDA backend uses it): the shared argument checks, rank threads and in-process rendezvous.
 * No {@code internal} package is exported, not even to another moe4j module.
 */
module org.moe4j.dispatch {
    requires transitive org.moe4j.routing;
    requires jdk.incubator.vector;
    requires com.fasterxml.jackson.databind;

    exports org.moe4j.dispatch;
    exports org.moe4j.dispatch.dist;
    exports org.moe4j.experts;
    exports org.moe4j.layer;
    exports org.moe4j.optim;
    exports org.moe4j.checkpoint;
    exports org.moe4j.dispatch.spi;

    uses org.moe4j.dispatch.DispatcherProvider;

    provides org.moe4j.dispatch.DispatcherProvider with
            org.moe4j.dispatch.internal.BuiltinDispatchers.AllToAll,
            org.moe4j.dispatch.internal.BuiltinDispatchers.AllGather,
            org.moe4j.dispatch.internal.BuiltinDispatchers.StaticAllToAll;
    provides org.moe4j.core.backend.KernelProvider with
            org.moe4j.dispatch.internal.CpuDispatchKernelProvider,
            org.moe4j.experts.internal.CpuExpertKernelsProvider,
            org.moe4j.optim.internal.CpuOptimizerKernelsProvider;
}
