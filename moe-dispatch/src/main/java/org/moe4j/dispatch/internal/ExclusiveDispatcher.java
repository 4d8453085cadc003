package org.moe4j.dispatch.internal;

import java.util.Objects;
import org.moe4j.core.ExclusiveUse;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.Dispatcher;

/**
 * Wraps every strategy returned by {@link Dispatcher#create}: refuses a call from a second thread
 * while another call of the same dispatcher is running (its workspace and collectives assume one
 * caller), with a {@link org.moe4j.core.ConcurrentUseException} naming both calls.
 */
public final class ExclusiveDispatcher implements Dispatcher {
    private final Dispatcher inner;
    private final ExclusiveUse use = new ExclusiveUse("Dispatcher");

    /**
     * @param inner the strategy
     * @throws NullPointerException if {@code inner} is null
     */
    public ExclusiveDispatcher(Dispatcher inner) {
        this.inner = Objects.requireNonNull(inner, "inner");
    }

    @Override
    public DispatchResult dispatch(Buffer x, Buffer topkIdx, Buffer topkWeights) {
        use.enter("dispatch");
        try {
            return inner.dispatch(x, topkIdx, topkWeights);
        } finally {
            use.exit();
        }
    }

    @Override
    public Buffer combine(DispatchResult d, Buffer expertOutput) {
        use.enter("combine");
        try {
            return inner.combine(d, expertOutput);
        } finally {
            use.exit();
        }
    }

    @Override
    public CombineGrads combineBackward(DispatchResult d, Buffer dOut) {
        use.enter("combineBackward");
        try {
            return inner.combineBackward(d, dOut);
        } finally {
            use.exit();
        }
    }

    @Override
    public Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput) {
        use.enter("dispatchBackward");
        try {
            return inner.dispatchBackward(d, dExpertInput);
        } finally {
            use.exit();
        }
    }

    @Override
    public long hostReads() {
        return inner.hostReads();
    }
}
