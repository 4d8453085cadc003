// Smoke kernels: prove that the fatbin pipeline (nvcc -> resource -> cuModuleLoadData ->
// cuLaunchKernel with packed arguments) works end to end. Used by moe-cuda's GPU smoke tests.
//
// moe4j_saxpy(n, alpha, x, y):   y[i] = alpha * x[i] + y[i] for i < n (int64 n, any grid, grid-stride loop).
//   Launch: grid = min(ceil(n / 256), 65535), block = 256.
// moe4j_row_sum(rows, cols, in, out): out[r] = sum_c in[r * cols + c], fp32, fixed reduction order
//   (thread-strided partial sums, then warp/block butterfly), so results are run-to-run identical.
//   Launch: grid = rows, block = 256 (a multiple of 32, <= 1024).
#include "common.cuh"

MOE4J_KERNEL void moe4j_saxpy(int64_t n, float alpha, const float* __restrict__ x, float* __restrict__ y) {
    for (int64_t i = moe4j::global_thread(); i < n; i += moe4j::grid_stride()) {
        y[i] = fmaf(alpha, x[i], y[i]);
    }
}

MOE4J_KERNEL void moe4j_row_sum(int rows, int cols, const float* __restrict__ in, float* __restrict__ out) {
    MOE4J_SHARED(float, scratch, [32]);
    const int r = blockIdx.x;
    if (r >= rows) {
        return;
    }
    const float* row = in + static_cast<int64_t>(r) * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        acc += row[c];
    }
    const float total = moe4j::block_sum(acc, scratch);
    if (threadIdx.x == 0) {
        out[r] = total;
    }
}
