// Top-1 SwiGLU experts with a skip slot on the CPU, fp32, for steps where each expert sees only a
// few tokens (decode). There a BLAS GEMM re-packs the whole expert weight for a handful of rows;
// here each weight row is streamed once and dotted with every token of the expert while in L1.
// The C++ twin of moe_ref.moe_experts; loaded with ctypes by kernels/cpu_ops.py, which owns the
// checks and sends large steps (prefill) to the twin, where BLAS wins.
//
// Shapes (T tokens, E experts, H hidden, I expert FFN):
//   hidden (T, H)  expert_ids (T,) int64 in [0, E], E = skip (output 0)  gate (T,)
//   gate_up (E, 2I, H): rows [0, I) gate, [I, 2I) up   down (E, H, I)   out (T, H) written
// H and I must be multiples of 8.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec8.h"

namespace {

using rsa_cpu::f8;
using rsa_cpu::hsum;
using rsa_cpu::hsum8;
using rsa_cpu::load8;

// y[m][o], y[m][o + 1] for MN tokens m (MN <= 4, a template constant so the 2 x MN accumulators
// stay in registers): w0, w1 two weight rows of K, x MN token rows of K, y rows of stride O
template <int MN>
inline void pair_times_tokens(const float* w0, const float* w1, const float* x, int64_t K, float* y, int64_t O,
                              bool pair) {
  f8 acc[MN][2] = {};
  for (int64_t j = 0; j < K; j += 8) {
    const f8 a = load8(w0 + j), b = load8(w1 + j);
    for (int m = 0; m < MN; ++m) {
      const f8 xv = load8(x + m * K + j);
      acc[m][0] += xv * a;
      acc[m][1] += xv * b;
    }
  }
  if constexpr (MN == 4) {  // the eight sums in one transpose-add
    const f8 s = hsum8(&acc[0][0]);
    for (int m = 0; m < 4; ++m) {
      y[m * O] = s[2 * m];
      if (pair) y[m * O + 1] = s[2 * m + 1];
    }
  } else {
    for (int m = 0; m < MN; ++m) {
      y[m * O] = hsum(acc[m][0]);
      if (pair) y[m * O + 1] = hsum(acc[m][1]);
    }
  }
}

// y (M, O) = x (M, K) @ w (O, K)^T, two weight rows by up to four tokens at a time
void rows_times_tokens(const float* x, int64_t M, const float* w, int64_t K, float* y, int64_t O) {
  for (int64_t o = 0; o < O; o += 2) {
    const bool pair = o + 1 < O;
    const float* w0 = w + o * K;
    const float* w1 = pair ? w0 + K : w0;
    // fetch the next pair of rows while this one is used: streaming the weights is the cost here
    if (o + 3 < O)
      for (int64_t k = 0; k < 2 * K; k += 16) __builtin_prefetch(w0 + 2 * K + k, 0, 3);
    int64_t m0 = 0;
    for (; m0 + 4 <= M; m0 += 4) pair_times_tokens<4>(w0, w1, x + m0 * K, K, y + m0 * O + o, O, pair);
    switch (M - m0) {
      case 3: pair_times_tokens<3>(w0, w1, x + m0 * K, K, y + m0 * O + o, O, pair); break;
      case 2: pair_times_tokens<2>(w0, w1, x + m0 * K, K, y + m0 * O + o, O, pair); break;
      case 1: pair_times_tokens<1>(w0, w1, x + m0 * K, K, y + m0 * O + o, O, pair); break;
      default: break;
    }
  }
}

}  // namespace

extern "C" void rsa_moe_experts_f32(const float* hidden, const int64_t* expert_ids, const float* gate,
                                    const float* gate_up, const float* down, float* out, int64_t T, int64_t H,
                                    int64_t I, int64_t E, int threads) {
  // tokens grouped by expert (counting sort; the skip slot's rows are written as zeros)
  std::vector<int64_t> count(E + 2, 0), order(T);
  for (int64_t t = 0; t < T; ++t) ++count[expert_ids[t] + 1];
  for (int64_t e = 0; e <= E; ++e) count[e + 1] += count[e];
  std::vector<int64_t> fill(count.begin(), count.end() - 1);
  for (int64_t t = 0; t < T; ++t) order[fill[expert_ids[t]]++] = t;
  std::memset(out, 0, sizeof(float) * T * H);

  int64_t most = 0;
  for (int64_t e = 0; e < E; ++e) most = count[e + 1] - count[e] > most ? count[e + 1] - count[e] : most;
  // experts in parallel, each whole on one thread: a token belongs to one expert, so the output
  // rows never overlap, and no thread waits on another inside an expert
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> x(most * H), a(most * 2 * I), act(most * I), y(most * H);
#pragma omp for schedule(dynamic, 1)
    for (int64_t e = 0; e < E; ++e) {
      const int64_t n = count[e + 1] - count[e];
      if (n == 0) continue;
      const int64_t* rows = order.data() + count[e];
      for (int64_t r = 0; r < n; ++r) std::memcpy(x.data() + r * H, hidden + rows[r] * H, sizeof(float) * H);
      rows_times_tokens(x.data(), n, gate_up + e * 2 * I * H, H, a.data(), 2 * I);  // (n, 2I) = [g | u]
      for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < I; ++i) {
          const float g = a[r * 2 * I + i], u = a[r * 2 * I + I + i];
          act[r * I + i] = g / (1.f + std::exp(-g)) * u;  // silu(g) * u
        }
      rows_times_tokens(act.data(), n, down + e * H * I, I, y.data(), H);  // (n, H)
      for (int64_t r = 0; r < n; ++r) {
        const float w = gate[rows[r]];
        float* dst = out + rows[r] * H;
        for (int64_t h = 0; h < H; ++h) dst[h] = y[r * H + h] * w;
      }
    }
  }
}
