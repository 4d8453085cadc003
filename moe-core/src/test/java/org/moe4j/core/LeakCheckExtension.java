package org.moe4j.core;

import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.moe4j.core.buffer.LeakCheck;

/**
 * Every test of every module runs under this leak check (each module registers it through its own
 * {@code META-INF/services/org.junit.jupiter.api.extension.Extension} and
 * {@code junit-platform.properties}; the other modules get the class from moe-core's test-jar): a buffer allocated by a test (or by a class's
 * {@code @BeforeAll}) and still live after it fails the test with {@code memory leaked}, listing
 * the buffers; {@code -Dmoe4j.memory.debug=true} adds their allocation sites.
 */
public final class LeakCheckExtension implements BeforeAllCallback, AfterAllCallback, BeforeEachCallback,
        AfterEachCallback {
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(LeakCheckExtension.class);

    @Override
    public void beforeAll(ExtensionContext context) {
        context.getStore(NS).put("class", LeakCheck.start());
        context.getStore(NS).put("reported", new HashSet<String>());
    }

    @Override
    public void beforeEach(ExtensionContext context) {
        context.getStore(NS).put("method", LeakCheck.start());
    }

    @Override
    public void afterEach(ExtensionContext context) {
        LeakCheck check = context.getStore(NS).get("method", LeakCheck.class);
        Set<String> reported = reported(context);
        try {
            check.verify(context.getDisplayName() + " in " + context.getRequiredTestClass().getSimpleName());
        } finally {
            reported.addAll(check.live());
        }
    }

    @Override
    public void afterAll(ExtensionContext context) {
        LeakCheck check = context.getStore(NS).get("class", LeakCheck.class);
        check.verify(context.getDisplayName() + " (class)", reported(context));
    }

    @SuppressWarnings("unchecked")
    private static Set<String> reported(ExtensionContext context) {
        ExtensionContext c = context;
        while (c != null) {
            Set<String> s = c.getStore(NS).get("reported", Set.class);
            if (s != null) {
                return s;
            }
            c = c.getParent().orElse(null);
        }
        return new HashSet<>();
    }
}
