/**
 * The token-choice top-k router: scores, expert groups, expert bias, top-k, weight normalisation and
 * scaling, load statistics, auxiliary losses and capacity, forward and backward. Its CPU kernels use
 * the incubating Vector API, which this module requires (on the class path, add the JVM flag
 * {@code --add-modules jdk.incubator.vector}).
 */
module org.moe4j.routing {
    requires transitive org.moe4j.core;
    requires jdk.incubator.vector;

    exports org.moe4j.routing;

    provides org.moe4j.core.backend.KernelProvider with org.moe4j.routing.internal.CpuRoutingKernelsProvider;
}
