/**
 * The CUDA backend: CUDA driver-API and NCCL bindings over the Foreign Function and Memory API,
 * fatbin kernels for routing, dispatch, experts and the optimiser, device buffers and
 * {@code NcclCommunicator}. Native access must be enabled for this module
 * ({@code --enable-native-access=org.moe4j.cuda} on the module path,
 * {@code --enable-native-access=ALL-UNNAMED} on the class path).
 */
module org.moe4j.cuda {
    requires transitive org.moe4j.dispatch;

    exports org.moe4j.cuda;
    exports org.moe4j.cuda.comm;
    exports org.moe4j.cuda.kernels;

    provides org.moe4j.core.backend.Backend with org.moe4j.cuda.CudaBackend;
    provides org.moe4j.core.backend.KernelProvider with
            org.moe4j.cuda.kernels.CudaDispatchKernelsProvider,
            org.moe4j.cuda.kernels.CudaRoutingKernelsProvider,
            org.moe4j.cuda.kernels.CudaExpertKernelsProvider,
            org.moe4j.cuda.kernels.CudaOptimizerKernelsProvider;
}
