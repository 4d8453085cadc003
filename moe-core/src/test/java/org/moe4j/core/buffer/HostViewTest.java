package org.moe4j.core.buffer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;

class HostViewTest {
    /** A "device" buffer whose memory the host reaches only through copies; counts them. */
    static final class FakeDeviceBuffer implements Buffer {
        final HostBuffer memory;
        int downloads;
        int uploads;

        FakeDeviceBuffer(float... values) {
            memory = HostBuffer.ofFloats(values, values.length);
        }

        public DType dtype() {
            return memory.dtype();
        }

        public Shape shape() {
            return memory.shape();
        }

        public Device device() {
            return Device.cuda(0);
        }

        public boolean isClosed() {
            return memory.isClosed();
        }

        public void close() {
            memory.close();
        }

        @Override
        public void copyTo(HostBuffer dst) {
            downloads++;
            memory.copyTo(dst);
        }

        @Override
        public void copyFrom(HostBuffer src) {
            uploads++;
            memory.copyFrom(src);
        }
    }

    @Test
    void aHostBufferIsViewedInPlaceWithoutCopies() {
        try (HostBuffer b = HostBuffer.ofFloats(new float[] {1, 2, 3}, 3)) {
            try (HostView v = b.hostView(HostView.Mode.READ_WRITE)) {
                assertFalse(v.isStaged());
                v.host().setFloat(1, 20f);
                assertEquals(20f, b.getFloat(1), "writes go straight to the buffer");
                assertFalse(v.host().ownsMemory());
            }
            assertEquals(20f, b.getFloat(1));
        }
    }

    @Test
    void deviceMemoryIsStagedDownloadedForReadsAndUploadedOnCloseForWrites() {
        try (FakeDeviceBuffer d = new FakeDeviceBuffer(1, 2, 3)) {
            try (HostView v = d.hostView(HostView.Mode.READ)) {
                assertTrue(v.isStaged());
                assertArrayEquals(new float[] {1, 2, 3}, v.host().toFloatArray());
                v.host().setFloat(0, 99f); // a read view is never written back
            }
            assertEquals(1, d.downloads);
            assertEquals(0, d.uploads);
            assertEquals(1f, d.memory.getFloat(0));
            try (HostView v = d.hostView(HostView.Mode.WRITE)) {
                v.host().copyFrom(new float[] {7, 8, 9});
            }
            assertEquals(1, d.downloads, "a write-only view downloads nothing");
            assertEquals(1, d.uploads);
            assertArrayEquals(new float[] {7, 8, 9}, d.memory.toFloatArray());
            HostView abandoned = d.hostView(HostView.Mode.READ_WRITE);
            abandoned.host().setFloat(2, -1f);
            abandoned.abandon();
            abandoned.close();
            assertEquals(1, d.uploads, "an abandoned view uploads nothing");
            assertEquals(9f, d.memory.getFloat(2));
            assertTrue(d.memory.isClosed() == false);
            assertThrows(BufferClosedException.class, abandoned::host);
        }
    }

    @Test
    void aClosedBufferCannotBeViewed() {
        FakeDeviceBuffer d = new FakeDeviceBuffer(1);
        d.close();
        assertThrows(BufferClosedException.class, () -> d.hostView(HostView.Mode.READ));
        HostBuffer h = HostBuffer.allocate(DType.F32, 1);
        h.close();
        assertThrows(BufferClosedException.class, () -> h.hostView(HostView.Mode.READ));
        assertThrows(NullPointerException.class, () -> HostView.staged(d, null));
    }
}
