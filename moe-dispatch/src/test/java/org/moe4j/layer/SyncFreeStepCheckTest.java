package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.Capacity;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.routing.ExpertBias;

/**
 * {@link MoeLayer#requireSyncFreeStep()} names the option that makes a step read device memory back
 * to the host, and the CPU backend keeps eager routing (its non-finite check throws in the forward).
 */
class SyncFreeStepCheckTest {

    private static MoeConfig staticConfig() {
        return StaticDispatchLayerTest.config(1, 1, DType.F32, DispatchOptions.of(DispatchOptions.STATIC_ALL_TO_ALL));
    }

    /** The message of {@code requireSyncFreeStep} for a W = 1 CPU layer of that config. */
    private static String refusal(MoeConfig cfg, UnaryOperator<MoeLayer.Builder> builder) {
        return LocalGroup.run(1, comm -> {
            try (MoeLayer layer = builder.apply(MoeLayer.builder(cfg, comm).seed(3)).build()) {
                assertFalse(layer.router().syncFree(), "the CPU router checks eagerly");
                assertFalse(layer.expertBias().onDevice(), "the CPU bias is host state");
                IllegalStateException e = assertThrows(IllegalStateException.class, layer::requireSyncFreeStep);
                layer.checkStep(); // eager routing: nothing deferred, nothing to raise
                return e.getMessage();
            }
        }).get(0);
    }

    private static void assertNames(String message, String... parts) {
        assertTrue(message.startsWith("MoeLayer step is not host-sync-free: "), message);
        for (String p : parts) {
            assertTrue(message.contains(p), "expected '" + p + "' in: " + message);
        }
    }

    @Test
    void theCountExchangeStrategyIsNamed() {
        MoeConfig cfg = StaticDispatchLayerTest.config(1, 1, DType.F32, DispatchOptions.DEFAULT);
        assertNames(refusal(cfg, b -> b), "dispatch strategy 'all-to-all'", "dispatch=static-all-to-all");
    }

    @Test
    void scoreBeforeExpertsIsNamed() {
        assertNames(refusal(staticConfig().toBuilder().scoreBeforeExperts(true).build(), b -> b),
                "features.scoreBeforeExperts");
    }

    @Test
    void aCapacityWithDropsIsNamed() {
        MoeConfig cfg = staticConfig().toBuilder().capacity(new Capacity(1.25, DropPolicy.BY_SCORE)).build();
        assertNames(refusal(cfg, b -> b), "capacity", "dropless");
    }

    @Test
    void auxiliaryLossesAreNamed() {
        MoeConfig cfg = staticConfig().toBuilder().auxLoss(new AuxLoss(1e-2, 0, 0, 0)).build();
        assertNames(refusal(cfg, b -> b), "auxLoss", "expertBiasCoeff");
    }

    @Test
    void aSuppliedExpertBiasIsNamed() {
        MoeConfig cfg = staticConfig();
        try (ExpertBias bias = ExpertBias.of(cfg)) {
            assertNames(refusal(cfg, b -> b.expertBias(bias)), "MoeLayer.Builder.expertBias");
        }
    }

    @Test
    void theCpuRoutingKernelsAreNamedLast() {
        assertNames(refusal(staticConfig(), b -> b), "routing kernels CpuRoutingKernels",
                "RoutingKernels.deviceStatistics() is false");
    }
}
