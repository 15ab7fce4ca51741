// RMSNorm and the ZAYA residual merge + RMSNorm on the CPU, fp32 (input, residual, vectors and
// weight all fp32, so the twin's dtype round trips are no-ops). The C++ twins of
// rmsnorm_ref.rmsnorm / merge_rmsnorm: one pass per row instead of ten whole-tensor ops.
// Loaded with ctypes by kernels/cpu_ops.py, which owns the checks.
//
// Shapes (T rows, H hidden): x, branch, residual, merged, normed (T, H); the vectors (H,).

#include <cmath>
#include <cstdint>

namespace {

inline void norm_row(const float* x, const float* weight, float* y, int64_t H, float eps) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t h = 0; h < H; ++h) ss += x[h] * x[h];
  const float r = 1.f / std::sqrt(ss / static_cast<float>(H) + eps);
#pragma omp simd
  for (int64_t h = 0; h < H; ++h) y[h] = weight[h] * (x[h] * r);
}

}  // namespace

extern "C" void rsa_rmsnorm_f32(const float* x, const float* weight, float* y, int64_t T, int64_t H, float eps,
                                int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T * H > 65536)
  for (int64_t t = 0; t < T; ++t) norm_row(x + t * H, weight, y + t * H, H, eps);
}

// merged = (branch + hs_bias) * hs_scale + (residual + res_bias) * res_scale; normed = rmsnorm(merged)
extern "C" void rsa_merge_rmsnorm_f32(const float* branch, const float* residual, const float* hs_scale,
                                      const float* hs_bias, const float* res_scale, const float* res_bias,
                                      const float* weight, float* merged, float* normed, int64_t T, int64_t H,
                                      float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T * H > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* b = branch + t * H;
    const float* r = residual + t * H;
    float* m = merged + t * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) m[h] = (b[h] + hs_bias[h]) * hs_scale[h] + (r[h] + res_bias[h]) * res_scale[h];
    norm_row(m, weight, normed + t * H, H, eps);
  }
}
