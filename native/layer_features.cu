// moe4j kernel family "layer_features": the element-wise kernels of the model-family layer variants
// (org.moe4j.core.config.LayerFeatures), launched by CudaExpertKernels. Contract: ExpertKernels
// (moe-dispatch), the CPU reference CpuExpertKernels; docs/config.md lists the families.
//
//   moe_clamped_swiglu_fwd_f32 / _bwd_f32   gpt-oss activation: g = min(gate, limit),
//                                           u = clamp(up, -limit, limit), out = (u + 1) * g * sigmoid(alpha * g);
//                                           backward passes a clamp's gradient inside the closed interval
//   moe_group_bias_add_f32                  out[r, :] += bias[g, :] for the rows r of group g (offsets I32)
//   moe_group_bias_grad_f32                 dBias[g, :] += sum of dOut[r, :] over group g's rows, r ascending
//   moe_row_scale_fwd_f32                   out[r, :] (+)= f(scale[r]) * x[r, :], f = sigmoid or identity
//   moe_row_scale_bwd_f32                   dX[r, :] = f(s) * dOut[r, :]; dScale[r] = f'(s) * sum_c dOut * x, c ascending
//   moe_scale_expand_f32                    out[t*K + k, :] = w[t, k] * x[t, :]
//   moe_scale_expand_bwd_dx_f32             dX[t, :] = sum_k w[t, k] * dOut[t*K + k, :], k ascending
//   moe_scale_expand_bwd_dw_f32             dW[t, k] = sum_c dOut[t*K + k, c] * x[t, c], c ascending
//   moe_sum_slots_f32                       out[t, :] = sum_k y[t*K + k, :], k ascending
//
// Every output element is written by one thread with the CPU reference's operation order and IEEE
// single operations (the _rn intrinsics), so results match the CPU bit for bit except where sigmoid
// is involved (expf vs the CPU's double exp: within 1 ulp). No atomics, no shared memory.
// Launch shape: block 256, any grid (grid-stride loops over the stated index space).

#include "common.cuh"

namespace {

__device__ __forceinline__ float sigmoid_rn(float v) {
    return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v)));
}

__device__ __forceinline__ long stride() {
    return (long)gridDim.x * blockDim.x;
}

__device__ __forceinline__ long first() {
    return (long)blockIdx.x * blockDim.x + threadIdx.x;
}

// The group of row r: the g with off[g] <= r < off[g + 1], or -1 outside every group.
__device__ __forceinline__ int group_of(const int* __restrict__ off, int groups, long r) {
    if (groups <= 0 || r < off[0] || r >= off[groups]) {
        return -1;
    }
    int lo = 0, hi = groups - 1;
    while (lo < hi) {  // last g with off[g] <= r
        const int mid = (lo + hi + 1) >> 1;
        if (off[mid] <= r) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

}  // namespace

MOE4J_KERNEL void __launch_bounds__(256)
moe_clamped_swiglu_fwd_f32(const float* __restrict__ gate, const float* __restrict__ up, long n, float limit,
                           float alpha, float* __restrict__ out) {
    for (long i = first(); i < n; i += stride()) {
        const float gv = gate[i], uv = up[i];
        const float g = gv < limit ? gv : limit;
        const float u = uv < -limit ? -limit : (uv > limit ? limit : uv);
        const float s = sigmoid_rn(__fmul_rn(alpha, g));
        out[i] = __fmul_rn(__fadd_rn(u, 1.0f), __fmul_rn(g, s));
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_clamped_swiglu_bwd_f32(const float* __restrict__ gate, const float* __restrict__ up,
                           const float* __restrict__ dOut, long n, float limit, float alpha,
                           float* __restrict__ dGate, float* __restrict__ dUp) {
    for (long i = first(); i < n; i += stride()) {
        const float gv = gate[i], uv = up[i], dy = dOut[i];
        const float g = gv < limit ? gv : limit;
        const float u = uv < -limit ? -limit : (uv > limit ? limit : uv);
        const float s = sigmoid_rn(__fmul_rn(alpha, g));
        const float glu = __fmul_rn(g, s);
        const float dGlu = __fmul_rn(dy, __fadd_rn(u, 1.0f));
        // s + alpha*g*s*(1 - s), left to right as the CPU reference
        const float ds = __fadd_rn(s, __fmul_rn(__fmul_rn(__fmul_rn(alpha, g), s), __fsub_rn(1.0f, s)));
        dGate[i] = gv <= limit ? __fmul_rn(dGlu, ds) : 0.0f;
        dUp[i] = (uv >= -limit && uv <= limit) ? __fmul_rn(dy, glu) : 0.0f;
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_group_bias_add_f32(float* __restrict__ out, long rows, int n, const float* __restrict__ bias,
                       const int* __restrict__ off, int groups) {
    const long total = rows * n;
    for (long i = first(); i < total; i += stride()) {
        const long r = i / n;
        const int c = (int)(i - r * n);
        const int g = group_of(off, groups, r);
        if (g >= 0) {
            out[i] = __fadd_rn(out[i], bias[(long)g * n + c]);
        }
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_group_bias_grad_f32(const float* __restrict__ dOut, int n, const int* __restrict__ off, int groups,
                        float* __restrict__ dBias) {
    const long total = (long)groups * n;
    for (long i = first(); i < total; i += stride()) {
        const int g = (int)(i / n);
        const int c = (int)(i - (long)g * n);
        float acc = dBias[i];
        for (long r = off[g]; r < off[g + 1]; r++) {
            acc = __fadd_rn(acc, dOut[r * n + c]);
        }
        dBias[i] = acc;
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_row_scale_fwd_f32(const float* __restrict__ scale, int useSigmoid, const float* __restrict__ x, long rows, int n,
                      float* __restrict__ out, int accumulate) {
    const long total = rows * n;
    for (long i = first(); i < total; i += stride()) {
        const long r = i / n;
        const float f = useSigmoid ? sigmoid_rn(scale[r]) : scale[r];
        const float v = __fmul_rn(f, x[i]);
        out[i] = accumulate ? __fadd_rn(out[i], v) : v;
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_row_scale_bwd_f32(const float* __restrict__ scale, int useSigmoid, const float* __restrict__ x,
                      const float* __restrict__ dOut, long rows, int n, float* __restrict__ dX,
                      float* __restrict__ dScale) {
    for (long r = first(); r < rows; r += stride()) {
        const float raw = scale[r];
        const float f = useSigmoid ? sigmoid_rn(raw) : raw;
        const float df = useSigmoid ? __fmul_rn(f, __fsub_rn(1.0f, f)) : 1.0f;
        float dot = 0.0f;
        for (int c = 0; c < n; c++) {
            const float dy = dOut[r * n + c];
            dot = __fadd_rn(dot, __fmul_rn(dy, x[r * n + c]));
            dX[r * n + c] = __fmul_rn(f, dy);
        }
        dScale[r] = __fmul_rn(df, dot);
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_scale_expand_f32(const float* __restrict__ x, const float* __restrict__ w, long tokens, int k, int n,
                     float* __restrict__ out) {
    const long total = tokens * k * n;
    for (long i = first(); i < total; i += stride()) {
        const long row = i / n;
        const int c = (int)(i - row * n);
        const long t = row / k;
        out[i] = __fmul_rn(w[row], x[t * n + c]);
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_scale_expand_bwd_dx_f32(const float* __restrict__ w, const float* __restrict__ dOut, long tokens, int k, int n,
                            float* __restrict__ dX) {
    const long total = tokens * n;
    for (long i = first(); i < total; i += stride()) {
        const long t = i / n;
        const int c = (int)(i - t * n);
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            acc = __fadd_rn(acc, __fmul_rn(w[t * k + j], dOut[(t * k + j) * n + c]));
        }
        dX[i] = acc;
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_scale_expand_bwd_dw_f32(const float* __restrict__ x, const float* __restrict__ dOut, long tokens, int k, int n,
                            float* __restrict__ dW) {
    const long total = tokens * k;
    for (long i = first(); i < total; i += stride()) {
        const long t = i / k;
        float dot = 0.0f;
        for (int c = 0; c < n; c++) {
            dot = __fadd_rn(dot, __fmul_rn(dOut[i * n + c], x[t * n + c]));
        }
        dW[i] = dot;
    }
}

MOE4J_KERNEL void __launch_bounds__(256)
moe_sum_slots_f32(const float* __restrict__ y, long tokens, int k, int n, float* __restrict__ out) {
    const long total = tokens * n;
    for (long i = first(); i < total; i += stride()) {
        const long t = i / n;
        const int c = (int)(i - t * n);
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            acc = __fadd_rn(acc, y[(t * k + j) * n + c]);
        }
        out[i] = acc;
    }
}
