// moe4j optimizer kernels: the device side of org.moe4j.optim.OptimizerKernels
// (accumulate, adamW); read CpuOptimizerKernels (moe-dispatch) first.
//
// Contract: all pointers are F32 arrays of n elements (n < 2^63), 4-byte aligned; in/out
// arrays may not alias other arguments.
//   moe_accumulate_f32:  acc[i] = acc[i] + x[i]
//   moe_adamw_f32:       m = b1*m + (1-b1)*g;  v = b2*v + ((1-b2)*g)*g;
//                        p = p*decay - (lr*(m/c1)) / (sqrt(v/c2) + eps)
// Every operation is a separately rounded IEEE fp32 operation (__fmul_rn, __fadd_rn, __fdiv_rn,
// __fsqrt_rn: no FMA contraction), in the order Java evaluates the CPU reference, so results are
// bitwise identical to the CPU for any launch shape. Element-wise: no reductions, no atomics.
//
//   moe_first_nonfinite_f32: *first = min(*first, lowest i with x[i] NaN or +-Inf) (the caller sets
//                        *first to LLONG_MAX; integer atomicMin, so the answer does not depend on
//                        the schedule). AdamW skips a step whose gradients hold such an element.
//
// Launch shapes: block 256, any 1-D grid (grid-stride loop); the launcher uses
// min(ceil(n/256), 2^20) blocks.

extern "C" __global__ void __launch_bounds__(256)
moe_accumulate_f32(float* __restrict__ acc, const float* __restrict__ x, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        acc[i] = __fadd_rn(acc[i], x[i]);
    }
}

namespace {

__device__ __forceinline__ void adamw_body(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                           float* __restrict__ v, long n, float lr, float b1, float b2, float c1,
                                           float c2, float eps, float decay) {
    const float one_b1 = __fadd_rn(1.0f, -b1);
    const float one_b2 = __fadd_rn(1.0f, -b2);
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float gi = g[i];
        const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(one_b1, gi));
        const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(one_b2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        const float num = __fmul_rn(lr, __fdiv_rn(mi, c1));
        const float den = __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, c2)), eps);
        p[i] = __fadd_rn(__fmul_rn(p[i], decay), -__fdiv_rn(num, den));
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
moe_adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
              long n, float lr, float b1, float b2, float c1, float c2, float eps, float decay) {
    adamw_body(p, g, m, v, n, lr, b1, b2, c1, c2, eps, decay);
}

// AdamW with the non-finite skip decided on the device (AdamW.stepOnDevice). state: int64 [4] =
// {applied steps t, skipped steps, skip flag, table base}; the base lives on the device so that the
// host can move the table on between replays of a captured step without changing a launch.
//   moe_flag_nonfinite_f32: state[2] = 1 when x holds a NaN or +-Inf (every writer stores 1).
//   moe_adamw_guarded_f32:  nothing when state[2] != 0; else the moe_adamw_f32 update with the bias
//                           corrections of step t = state[0] + 1 from the host-computed table
//                           [size][2] = (1 - b1^t, 1 - b2^t) for t = state[3]+1 .. state[3]+size (bitwise
//                           the host's values; a t outside the table updates nothing).
//   moe_adamw_finish:       block 1: state[1]++ if flagged else state[0]++; state[2] = 0.
extern "C" __global__ void __launch_bounds__(256)
moe_flag_nonfinite_f32(const float* __restrict__ x, long n, long long* __restrict__ state) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float v = x[i];
        if (!(v - v == 0.0f)) {
            state[2] = 1;
            return;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
moe_adamw_guarded_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                      long n, float lr, float b1, float b2, const float* __restrict__ table, long size,
                      float eps, float decay, const long long* __restrict__ state) {
    if (state[2] != 0) return;
    const long i0 = (long)(state[0] - state[3]);
    if (i0 < 0 || i0 >= size) return;
    adamw_body(p, g, m, v, n, lr, b1, b2, table[2 * i0], table[2 * i0 + 1], eps, decay);
}

extern "C" __global__ void __launch_bounds__(1)
moe_adamw_finish(long long* __restrict__ state) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    if (state[2] != 0) state[1] += 1;
    else state[0] += 1;
    state[2] = 0;
}

extern "C" __global__ void __launch_bounds__(256)
moe_first_nonfinite_f32(const float* __restrict__ x, long n, long long* __restrict__ first) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float v = x[i];
        if (!(v - v == 0.0f)) {  // NaN and +-Inf give NaN; every finite value gives 0
            atomicMin(first, (long long)i);
            return;  // later elements of this thread are larger
        }
    }
}
