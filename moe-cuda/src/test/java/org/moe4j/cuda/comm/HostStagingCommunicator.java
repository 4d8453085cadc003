package org.moe4j.cuda.comm;

import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.DevicePool;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.ReduceOp;

/**
 * Test adapter: lets host-side code (the CPU dispatcher) talk through a device communicator by
 * copying every input to the GPU and every output back, so the device collectives are exercised
 * by the real dispatcher.
 */
final class HostStagingCommunicator implements Communicator {
    private final Communicator device;
    private final DevicePool pool;

    HostStagingCommunicator(Communicator device, CudaContext ctx) {
        this.device = device;
        this.pool = ctx.createPool();
    }

    private DeviceBuffer up(Buffer h) {
        return pool.copyOf((HostBuffer) h);
    }

    private DeviceBuffer like(Buffer h) {
        return pool.allocate(h.dtype(), h.shape());
    }

    @Override
    public int rank() {
        return device.rank();
    }

    @Override
    public int size() {
        return device.size();
    }

    @Override
    public void allToAll(Buffer send, Buffer recv) {
        try (DeviceBuffer s = up(send); DeviceBuffer r = like(recv)) {
            device.allToAll(s, r);
            r.copyTo((HostBuffer) recv);
        }
    }

    @Override
    public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
        try (DeviceBuffer s = up(send); DeviceBuffer r = like(recv)) {
            device.allToAllV(s, sendRows, r, recvRows);
            r.copyTo((HostBuffer) recv);
        }
    }

    @Override
    public void allReduce(Buffer buffer, ReduceOp op) {
        try (DeviceBuffer b = up(buffer)) {
            device.allReduce(b, op);
            b.copyTo((HostBuffer) buffer);
        }
    }

    @Override
    public void allGather(Buffer send, Buffer recv) {
        try (DeviceBuffer s = up(send); DeviceBuffer r = like(recv)) {
            device.allGather(s, r);
            r.copyTo((HostBuffer) recv);
        }
    }

    @Override
    public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
        try (DeviceBuffer s = up(send); DeviceBuffer r = like(recv)) {
            device.allGatherV(s, r, recvRows);
            r.copyTo((HostBuffer) recv);
        }
    }

    @Override
    public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
        try (DeviceBuffer s = up(send); DeviceBuffer r = like(recv)) {
            device.reduceScatterV(s, rows, r, op);
            r.copyTo((HostBuffer) recv);
        }
    }

    @Override
    public void barrier() {
        device.barrier();
    }

    @Override
    public void close() {
        pool.close();
    }
}
