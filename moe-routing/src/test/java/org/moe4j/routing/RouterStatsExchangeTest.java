package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;

/**
 * With a {@link BalanceStats.Exchange}, the auxiliary losses of a batch split over several routers
 * ("ranks") are those of the whole batch, bit for bit: the same loss values on every part, and each
 * part's logit gradients equal the rows of the whole batch's. Without the exchange they are per part.
 */
class RouterStatsExchangeTest {
    static final int HIDDEN = 24;
    static final int EXPERTS = 8;

    /** Pretends to be the collective: returns the statistics every part produced, in part order. */
    static final class Recorded implements BalanceStats.Exchange {
        final List<List<BalanceStats>> byCall = new ArrayList<>(); // [call][part]
        int part;
        int call;
        boolean replay;

        @Override
        public BalanceStats gather(BalanceStats local) {
            if (!replay) {
                while (byCall.size() <= call) {
                    byCall.add(new ArrayList<>());
                }
                byCall.get(call++).add(local);
                return local;
            }
            List<BalanceStats> all = byCall.get(call++);
            assertArrayEquals(all.get(part).probSum(), local.probSum(), 0f, "replayed statistics differ");
            return concat(all);
        }

        void startPart(int p) {
            part = p;
            call = 0;
        }
    }

    static BalanceStats concat(List<BalanceStats> parts) {
        int e = parts.get(0).experts();
        int segs = parts.stream().mapToInt(BalanceStats::segments).sum();
        float[] prob = new float[segs * e];
        int[] counts = new int[segs * e];
        int[] valid = new int[segs];
        float[] lse = new float[segs];
        int at = 0;
        for (BalanceStats p : parts) {
            System.arraycopy(p.probSum(), 0, prob, at * e, p.segments() * e);
            System.arraycopy(p.counts(), 0, counts, at * e, p.segments() * e);
            System.arraycopy(p.valid(), 0, valid, at, p.segments());
            System.arraycopy(p.lseSq(), 0, lse, at, p.segments());
            at += p.segments();
        }
        return new BalanceStats(e, prob, counts, valid, lse);
    }

    record Part(AuxLosses aux, float[] dLogits) {
    }

    static Part route(MoeConfig cfg, BalanceStats.Exchange ex, float[] x, int from, int tokens, float[] gate) {
        Router r = Router.builder(cfg).statsExchange(ex).build();
        try (HostBuffer hx = HostBuffer.ofFloats(Arrays.copyOfRange(x, from * HIDDEN, (from + tokens) * HIDDEN), tokens,
                HIDDEN);
             HostBuffer hg = HostBuffer.ofFloats(gate, EXPERTS, HIDDEN);
             RouterOutput out = r.forward(hx, hg);
             RouterGrads g = r.backward(out, null)) {
            return new Part(out.auxLosses(), ((HostBuffer) g.dLogits()).toFloatArray());
        } finally {
            r.expertBias().close();
        }
    }

    @ParameterizedTest(name = "{0} seqLength={1}")
    @CsvSource({"SOFTMAX,0", "SIGMOID,0", "SOFTMAX,64", "SIGMOID,128"})
    void splitBatchWithTheExchangeHasTheWholeBatchLossesBitForBit(ScoreFunction sf, int seqLength) {
        long seed = System.nanoTime();
        System.out.println("RouterStatsExchangeTest seed=" + seed);
        Random rnd = new Random(seed);
        MoeConfig cfg = MoeConfig.builder().hidden(HIDDEN).experts(EXPERTS).topK(2).ffn(1).scoreFunction(sf)
                .auxLoss(new AuxLoss(0.01, 0.003, 0.001, seqLength)).build();
        int[] parts = {128, 256, 0, 128};
        int total = Arrays.stream(parts).sum();
        float[] x = new float[total * HIDDEN];
        float[] gate = new float[EXPERTS * HIDDEN];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < gate.length; i++) {
            gate[i] = (float) rnd.nextGaussian() * 0.3f;
        }
        Part whole = route(cfg, null, x, 0, total, gate);
        Recorded ex = new Recorded();
        for (int replay = 0; replay < 2; replay++) {
            ex.replay = replay == 1;
            int from = 0;
            float[] dLogits = new float[0];
            for (int p = 0; p < parts.length; p++) {
                ex.startPart(p);
                Part part = route(cfg, ex, x, from, parts[p], gate);
                from += parts[p];
                if (!ex.replay) {
                    continue;
                }
                assertEquals(whole.aux(), part.aux(), "aux losses of part " + p);
                float[] joined = Arrays.copyOf(dLogits, dLogits.length + part.dLogits().length);
                System.arraycopy(part.dLogits(), 0, joined, dLogits.length, part.dLogits().length);
                dLogits = joined;
            }
            if (ex.replay) {
                assertArrayEquals(whole.dLogits(), dLogits, 0f, "dLogits of the parts vs the whole batch");
            }
        }
        // without the exchange, a part's losses are its own (the property above is not vacuous)
        assertNotEquals(whole.aux(), route(cfg, null, x, 0, parts[0], gate).aux());
    }

    @ParameterizedTest
    @CsvSource({"0", "64"})
    void anExchangeThatAnswersWithTheWrongExpertCountIsRefused(int seqLength) {
        MoeConfig cfg = MoeConfig.builder().hidden(HIDDEN).experts(EXPERTS).topK(2).ffn(1)
                .auxLoss(new AuxLoss(0.01, 0.01, 0, seqLength)).build();
        BalanceStats.Exchange bad = local -> new BalanceStats(EXPERTS + 1, new float[0], new int[0], new int[0],
                new float[0]);
        float[] x = new float[64 * HIDDEN];
        Arrays.fill(x, 0.5f);
        assertThrows(IllegalStateException.class, () -> route(cfg, bad, x, 0, 64, new float[EXPERTS * HIDDEN]));
    }
}
