package org.moe4j.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

class ExclusiveUseTest {
    @Test
    void aSecondThreadInsideACallIsRefusedNamingBothCallsAndThreads() throws Exception {
        ExclusiveUse use = new ExclusiveUse("Thing");
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        AtomicReference<Throwable> workerError = new AtomicReference<>();
        Thread worker = new Thread(() -> {
            use.enter("forward");
            try {
                inside.countDown();
                release.await(10, TimeUnit.SECONDS);
            } catch (Throwable t) {
                workerError.set(t);
            } finally {
                use.exit();
            }
        }, "worker-A");
        worker.start();
        assertTrue(inside.await(10, TimeUnit.SECONDS));
        ConcurrentUseException e = assertThrows(ConcurrentUseException.class, () -> use.enter("backward"));
        assertTrue(e.getMessage().startsWith("Thing.backward called on thread '" + Thread.currentThread().getName()
                + "' while Thing.forward is running on thread 'worker-A'"), e.getMessage());
        assertEquals("forward", use.current());
        release.countDown();
        worker.join(10_000);
        assertNull(workerError.get());
        assertNull(use.current());
        use.enter("backward"); // free again: sequential use from another thread is fine
        use.exit();
    }

    @Test
    void theOwningThreadMayReEnter() {
        ExclusiveUse use = new ExclusiveUse("Thing");
        use.enter("outer");
        use.enter("inner");
        use.exit();
        assertEquals("outer", use.current());
        use.exit();
        assertNull(use.current());
        use.exit(); // an unmatched exit on an idle guard changes nothing
        assertNull(use.current());
    }
}
