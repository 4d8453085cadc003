package org.moe4j.dispatch;

import java.util.Collections;
import java.util.List;

/** Thrown by {@link LocalGroup#run} when any rank failed; carries every rank's error. */
public final class LocalGroupException extends CommunicatorException {
    private static final long serialVersionUID = 1L;

    private final transient List<Throwable> rankErrors;

    /**
     * Creates the exception.
     * @param message    summary naming the first failure
     * @param cause      the root cause (the exception of the rank that failed first), or null
     * @param rankErrors per-rank errors, null where a rank succeeded
     */
    public LocalGroupException(String message, Throwable cause, List<Throwable> rankErrors) {
        super(message, cause);
        this.rankErrors = Collections.unmodifiableList(rankErrors);
    }

    /**
     * Returns the error of each rank, indexed by rank; null where that rank succeeded.
     * @return the error of each rank, indexed by rank; null where that rank succeeded
     */
    public List<Throwable> rankErrors() {
        return rankErrors;
    }
}
