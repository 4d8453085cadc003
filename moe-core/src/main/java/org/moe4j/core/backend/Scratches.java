package org.moe4j.core.backend;

import org.moe4j.core.buffer.Buffer;

/** Argument checks shared by the scratch implementations. */
final class Scratches {
    private Scratches() {
    }

    static void checkRows(Buffer b, long from, long to) {
        long rows = b.shape().rank() == 0 ? 1 : b.shape().dim(0);
        if (from < 0 || to > rows || from > to) {
            throw new IllegalArgumentException("zeroRows: rows [" + from + ", " + to + ") outside " + b.shape());
        }
    }
}
