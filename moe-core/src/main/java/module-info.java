/**
 * moe4j's foundation: dtypes and shapes, host buffers and the {@code Buffer} interface, {@code MoeConfig}
 * (with its JSON format and the Hugging Face {@code config.json} import), the backend seam
 * ({@code Backend}, {@code KernelProvider}, {@code Backends}) with the CPU backend, CPU threading and
 * parameter initialisation.
 *
 * <p>Backends and kernel families are found with {@link java.util.ServiceLoader}: a module that adds
 * one declares {@code provides org.moe4j.core.backend.Backend} or
 * {@code provides org.moe4j.core.backend.KernelProvider}.
 */
module org.moe4j.core {
    requires transitive org.slf4j;
    requires com.fasterxml.jackson.databind;
    requires transitive jdk.incubator.vector; // org.moe4j.core.cpu.VectorMath takes and returns FloatVector

    exports org.moe4j.core;
    exports org.moe4j.core.backend;
    exports org.moe4j.core.buffer;
    exports org.moe4j.core.config;
    exports org.moe4j.core.cpu;
    exports org.moe4j.core.init;

    uses org.moe4j.core.backend.Backend;
    uses org.moe4j.core.backend.KernelProvider;

    provides org.moe4j.core.backend.Backend with org.moe4j.core.backend.CpuBackend;
}
