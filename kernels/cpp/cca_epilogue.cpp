// The CCA epilogue on the CPU, fp32: everything between the q/k/v projections and attention for a
// flat varlen batch, one pass per token with no intermediate tensors. The C++ twin of
// cca_ref.cca_epilogue (see there for the math); loaded with ctypes by kernels/cpu_ops.py, which
// owns the shape and dtype checks.
//
// Shapes (T tokens, B sequences, Hq / KV heads, D head dim, G = Hq + KV conv groups, C = G * D,
// t0 / t1 conv kernels, W = t0 + t1 - 2 state columns, VD = KV * D / 2, R2 = rotary dim / 2):
//   qk (T, C)  v_cur, v_del (T, VD)  cos, sin (T, R2)
//   dw_weight (C, t0)  dw_bias (C)  g_weight (C, D, t1)  g_bias (C)  temp (KV)
//   conv_state (S, C, W) or null   value_state (S, VD) or null   (updated in place)
//   cu_seqlens (B + 1) int32   state_slots (B) int64   fresh (B) uint8
//   q_out (T, Hq, D)  k_out (T, KV, D)  v_out (T, KV, D)   written
// Scratch: none outside this file; each thread keeps its own small buffers.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec8.h"

namespace {

struct Args {
  const float *qk, *v_cur, *v_del, *cos, *sin, *dw_weight, *dw_bias, *g_weight, *g_bias, *temp;
  float *conv_state, *value_state;
  const int32_t* cu_seqlens;
  const int64_t* state_slots;
  const uint8_t* fresh;
  float *q_out, *k_out, *v_out;
  int64_t T, B, Hq, KV, D, t0, t1, R2;
  float eps;
};

using rsa_cpu::f8;
using rsa_cpu::load8;

// One token: `z[0..W]` are its W + 1 raw [Q0; K0] columns (oldest first), `dwt` the depthwise
// weight as (t0, C), `wg` the grouped conv weight as (G, t1, D_in, D_out), `dw` and `mix` scratch
// of t1 * C and C floats. D8 = D / 8 is a template constant for the usual head dims (the grouped
// conv's accumulators then live in registers), 0 for any other D.
template <int D8>
void token(const Args& a, int64_t t, const float* const* z, const float* dwt, const float* wg, float* dw,
           float* mix) {
  const int64_t D = D8 ? 8 * D8 : a.D, G = a.Hq + a.KV, C = G * D, t0 = a.t0, t1 = a.t1;
  // depthwise conv, "valid": dw[i][c] = bias[c] + sum_j z[i + j][c] * w[c][j]
  for (int64_t i = 0; i < t1; ++i) {
    float* out = dw + i * C;
    for (int64_t c = 0; c < C; ++c) out[c] = a.dw_bias[c];
    for (int64_t j = 0; j < t0; ++j) {
      const float* col = z[i + j];
      const float* w = dwt + j * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) out[c] += col[c] * w[c];
    }
  }
  // grouped conv per head: mix[g][o] = bias + sum_{i, d} dw[i][g, d] * wg[g][i][d][o]
  for (int64_t g = 0; g < G; ++g) {
    float* out = mix + g * D;
    if constexpr (D8 > 0) {
      f8 acc[D8];
      for (int j = 0; j < D8; ++j) acc[j] = load8(a.g_bias + g * D + 8 * j);
      for (int64_t i = 0; i < t1; ++i) {
        const float* x = dw + i * C + g * D;
        const float* w = wg + (g * t1 + i) * D * D;
        for (int64_t d = 0; d < D; ++d) {
          const float xd = x[d];
          for (int j = 0; j < D8; ++j) acc[j] += xd * load8(w + d * D + 8 * j);
        }
      }
      std::memcpy(out, acc, sizeof(acc));
    } else {
      for (int64_t o = 0; o < D; ++o) out[o] = a.g_bias[g * D + o];
      for (int64_t i = 0; i < t1; ++i) {
        const float* x = dw + i * C + g * D;
        const float* w = wg + (g * t1 + i) * D * D;
        for (int64_t d = 0; d < D; ++d) {
          const float xd = x[d];
          const float* wr = w + d * D;
#pragma omp simd
          for (int64_t o = 0; o < D; ++o) out[o] += xd * wr[o];
        }
      }
    }
  }
  // mean-residual mix: q head h = kv * Gq + r gets (q0[h] + k0[kv]) / 2, k head kv the mean of those
  const float* q0 = a.qk + t * C;
  const float* k0 = q0 + a.Hq * D;
  const int64_t gq = a.Hq / a.KV;
  for (int64_t kv = 0; kv < a.KV; ++kv) {
    float* kmix = mix + (a.Hq + kv) * D;
    for (int64_t r = 0; r < gq; ++r) {
      float* qmix = mix + (kv * gq + r) * D;
      const float* qh = q0 + (kv * gq + r) * D;
      for (int64_t o = 0; o < D; ++o) {
        const float res = (qh[o] + k0[kv * D + o]) * 0.5f;
        qmix[o] += res;
        kmix[o] += res / static_cast<float>(gq);
      }
    }
  }
  // L2 norm to sqrt(D) (key heads also times temp), NeoX RoPE on the first 2 * R2 dims, store
  const float* cs = a.cos + t * a.R2;
  const float* sn = a.sin + t * a.R2;
  for (int64_t g = 0; g < G; ++g) {
    float* x = mix + g * D;
    float ss = 0.f;
    for (int64_t o = 0; o < D; ++o) ss += x[o] * x[o];
    const float norm = std::sqrt(ss);
    const float scale = std::sqrt(static_cast<float>(D)) / (norm > a.eps ? norm : a.eps) *
                        (g < a.Hq ? 1.f : a.temp[g - a.Hq]);
    float* dst = g < a.Hq ? a.q_out + (t * a.Hq + g) * D : a.k_out + (t * a.KV + g - a.Hq) * D;
    for (int64_t r = 0; r < a.R2; ++r) {
      const float x1 = x[r] * scale, x2 = x[a.R2 + r] * scale;
      dst[r] = x1 * cs[r] - x2 * sn[r];
      dst[a.R2 + r] = x2 * cs[r] + x1 * sn[r];
    }
    for (int64_t o = 2 * a.R2; o < D; ++o) dst[o] = x[o] * scale;
  }
}

}  // namespace

extern "C" void rsa_cca_epilogue_f32(const Args* args, int threads) {
  const Args& a = *args;
  const int64_t D = a.D, G = a.Hq + a.KV, C = G * D, t1 = a.t1, W = a.t0 + a.t1 - 2, VD = a.KV * D / 2;
  // grouped conv weight (C_out = g * D + o, D_in, t1) -> (G, t1, D_in, D_out): rows contiguous in o
  std::vector<float> wg(static_cast<size_t>(G * t1 * D * D));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < D; ++o)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < t1; ++i)
          wg[((g * t1 + i) * D + d) * D + o] = a.g_weight[((g * D + o) * D + d) * t1 + i];
  // depthwise weight (C, t0) -> (t0, C): rows contiguous in c
  std::vector<float> dwt(static_cast<size_t>(a.t0 * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < a.t0; ++j) dwt[j * C + c] = a.dw_weight[c * a.t0 + j];
  auto* one = D == 32 ? token<4> : D == 64 ? token<8> : D == 128 ? token<16> : token<0>;
  // each sequence's W state columns as rows (W, C), zero when fresh or without a cache; read before
  // any state is written
  std::vector<float> hist(static_cast<size_t>(a.B * W * C), 0.f);
  for (int64_t b = 0; b < a.B; ++b) {
    if (a.conv_state == nullptr || a.fresh[b]) continue;
    const float* s = a.conv_state + a.state_slots[b] * C * W;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t w = 0; w < W; ++w) hist[(b * W + w) * C + c] = s[c * W + w];
  }
  std::vector<int64_t> seq_of(static_cast<size_t>(a.T));
  for (int64_t b = 0; b < a.B; ++b)
    for (int32_t t = a.cu_seqlens[b]; t < a.cu_seqlens[b + 1]; ++t) seq_of[t] = b;

  // the window of column l - W + j of a sequence: a state row while negative, else a qk row
  auto column = [&](int64_t b, int64_t local) -> const float* {
    return local >= 0 ? a.qk + (a.cu_seqlens[b] + local) * C : hist.data() + (b * W + W + local) * C;
  };
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dw(static_cast<size_t>(t1 * C)), mix(static_cast<size_t>(C));
    std::vector<const float*> z(static_cast<size_t>(W + 1));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t b = seq_of[t], local = t - a.cu_seqlens[b];
      for (int64_t j = 0; j <= W; ++j) z[j] = column(b, local - W + j);
      one(a, t, z.data(), dwt.data(), wg.data(), dw.data(), mix.data());
      // value: [current projection | the previous token's delayed projection]
      float* v = a.v_out + t * a.KV * D;
      std::memcpy(v, a.v_cur + t * VD, VD * sizeof(float));
      if (local > 0) {
        std::memcpy(v + VD, a.v_del + (t - 1) * VD, VD * sizeof(float));
      } else if (a.value_state != nullptr && !a.fresh[b]) {
        std::memcpy(v + VD, a.value_state + a.state_slots[b] * VD, VD * sizeof(float));
      } else {
        std::memset(v + VD, 0, VD * sizeof(float));
      }
    }
  }
  // carry state: the last W raw columns and the last delayed value of each sequence with tokens
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t n = a.cu_seqlens[b + 1] - a.cu_seqlens[b];
    if (n == 0) continue;
    if (a.conv_state != nullptr) {
      float* s = a.conv_state + a.state_slots[b] * C * W;
      for (int64_t w = 0; w < W; ++w) {
        const float* col = column(b, n - W + w);
        for (int64_t c = 0; c < C; ++c) s[c * W + w] = col[c];
      }
    }
    if (a.value_state != nullptr)
      std::memcpy(a.value_state + a.state_slots[b] * VD, a.v_del + (a.cu_seqlens[b + 1] - 1) * VD, VD * sizeof(float));
  }
}
