// Paged decode attention on the CPU: one query per sequence against its block-table K/V cache;
// gather + QK + softmax + PV in one pass per (sequence, kv head), nothing materialised but one
// row of scores per query head. The C++ twin of attention_ref._decode_rows (same math, fp32).
// Plain C ABI (no torch headers) so it builds in about a second; loaded with ctypes by
// kernels/cpu_ops.py, which owns the shape and dtype checks.
//
// Shapes (B sequences, Hq query heads, KV kv heads, G = Hq / KV, D head dim, BS block size):
//   q            (B, Hq, D)            float32, contiguous
//   k_cache      (NB, BS, KV, D)       float32 or bfloat16 (raw uint16), contiguous
//   v_cache      (NB, BS, KV, D)       same dtype as k_cache
//   seq_lens     (B,)                  int32, keys visible to each query, 1 .. max_blocks * BS
//   block_tables (B, max_blocks)       int32
//   out          (B, Hq, D)            float32, written
// Query head h * G + g reads kv head h (GQA without repeating K/V). D must be a multiple of 8.

#include <cstdint>
#include <cstring>
#include <vector>

#include "vec8.h"

namespace {

using rsa_cpu::f8;
using rsa_cpu::hsum;
using rsa_cpu::hsum8;
using rsa_cpu::load8;
using rsa_cpu::softmax_row;

constexpr int kMaxG = 16;   // query heads per kv head handled in registers
constexpr int kMaxD8 = 32;  // head dim up to 256

// One (sequence, kv head): G query rows (G, D) -> G output rows. G and D8 = D / 8 are template
// constants for the common shapes (registers, unrolled loops) and runtime values otherwise.
template <typename T, int G_, int D8_>
void decode_one(const float* q, const T* k_cache, const T* v_cache, int32_t len, const int32_t* table, float* out,
                int64_t h, int64_t G_rt, int64_t D8_rt, int64_t BS, int64_t KV, float scale,
                std::vector<float>& scores) {
  const int64_t G = G_ ? G_ : G_rt, d8 = D8_ ? D8_ : D8_rt, D = 8 * d8;
  const int64_t row_stride = KV * D, block_stride = BS * KV * D;
  const int32_t nblocks = static_cast<int32_t>((len + BS - 1) / BS);
  const int64_t ld = (len + 7) / 8 * 8;  // score row stride
  scores.resize(static_cast<size_t>(G * ld));
  float* s = scores.data();
  f8 qv[G_ ? G_ : kMaxG][D8_ ? D8_ : kMaxD8];
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < d8; ++j) qv[g][j] = load8(q + g * D + 8 * j) * scale;
  // QK, block by block: each key row is loaded once for the G query heads that share it
  for (int32_t blk = 0, p = 0; blk < nblocks; ++blk) {
    const T* krow = k_cache + table[blk] * block_stride + h * D;
    const int32_t rows = static_cast<int32_t>(len - p < BS ? len - p : BS);
    int32_t r = 0;
    for (; r + 8 <= rows; r += 8, p += 8) {  // eight keys at a time, reduced together
      f8 acc[G_ ? G_ : kMaxG][8];
      for (int k = 0; k < 8; ++k, krow += row_stride) {
        f8 kr[D8_ ? D8_ : kMaxD8];
        for (int64_t j = 0; j < d8; ++j) kr[j] = load8(krow + 8 * j);
        for (int64_t g = 0; g < G; ++g) {
          f8 a = qv[g][0] * kr[0];
          for (int64_t j = 1; j < d8; ++j) a += qv[g][j] * kr[j];
          acc[g][k] = a;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        const f8 s8 = hsum8(acc[g]);
        std::memcpy(s + g * ld + p, &s8, sizeof(s8));
      }
    }
    for (; r < rows; ++r, ++p, krow += row_stride) {
      f8 kr[D8_ ? D8_ : kMaxD8];
      for (int64_t j = 0; j < d8; ++j) kr[j] = load8(krow + 8 * j);
      for (int64_t g = 0; g < G; ++g) {
        f8 acc = qv[g][0] * kr[0];
        for (int64_t j = 1; j < d8; ++j) acc += qv[g][j] * kr[j];
        s[g * ld + p] = hsum(acc);
      }
    }
  }
  // softmax per query head (the 1 / sum is applied to the output)
  float inv[G_ ? G_ : kMaxG];
  for (int64_t g = 0; g < G; ++g) inv[g] = softmax_row(s + g * ld, len, ld);
  // PV
  f8 acc[G_ ? G_ : kMaxG][D8_ ? D8_ : kMaxD8] = {};
  for (int32_t blk = 0, p = 0; blk < nblocks; ++blk) {
    const T* vrow = v_cache + table[blk] * block_stride + h * D;
    const int32_t rows = static_cast<int32_t>(len - p < BS ? len - p : BS);
    for (int32_t r = 0; r < rows; ++r, ++p, vrow += row_stride) {
      f8 vr[D8_ ? D8_ : kMaxD8];
      for (int64_t j = 0; j < d8; ++j) vr[j] = load8(vrow + 8 * j);
      for (int64_t g = 0; g < G; ++g) {
        const float w = s[g * ld + p];
        for (int64_t j = 0; j < d8; ++j) acc[g][j] += w * vr[j];
      }
    }
  }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < d8; ++j) {
      f8 o = acc[g][j] * inv[g];
      std::memcpy(out + g * D + 8 * j, &o, sizeof(o));
    }
}

// The shapes with compile-time G and D / 8 (ZAYA1-8B: G 8, D 128; the tests and benchmarks: G 2-4, D 32).
template <typename T>
using DecodeOne = void (*)(const float*, const T*, const T*, int32_t, const int32_t*, float*, int64_t, int64_t,
                           int64_t, int64_t, int64_t, float, std::vector<float>&);

template <typename T, int G_>
DecodeOne<T> pick_d(int64_t d8) {
  switch (d8) {
    case 4: return decode_one<T, G_, 4>;
    case 8: return decode_one<T, G_, 8>;
    case 16: return decode_one<T, G_, 16>;
    default: return decode_one<T, G_, 0>;
  }
}

template <typename T>
DecodeOne<T> pick(int64_t g, int64_t d8) {
  switch (g) {
    case 1: return pick_d<T, 1>(d8);
    case 2: return pick_d<T, 2>(d8);
    case 4: return pick_d<T, 4>(d8);
    case 8: return pick_d<T, 8>(d8);
    default: return decode_one<T, 0, 0>;
  }
}

template <typename T>
void decode(const float* q, const T* k_cache, const T* v_cache, const int32_t* seq_lens, const int32_t* block_tables,
            float* out, int64_t B, int64_t Hq, int64_t KV, int64_t D, int64_t BS, int64_t max_blocks, float scale,
            int threads) {
  const int64_t G = Hq / KV;
  const DecodeOne<T> one = pick<T>(G, D / 8);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * KV; ++item) {
      const int64_t b = item / KV, h = item % KV;
      one(q + (b * Hq + h * G) * D, k_cache, v_cache, seq_lens[b], block_tables + b * max_blocks,
          out + (b * Hq + h * G) * D, h, G, D / 8, BS, KV, scale, scores);
    }
  }
}

}  // namespace

extern "C" {

int rsa_decode_limits(int64_t* max_g, int64_t* max_d) {
  *max_g = kMaxG;
  *max_d = 8 * kMaxD8;
  return 0;
}

void rsa_paged_decode_f32(const float* q, const float* k_cache, const float* v_cache, const int32_t* seq_lens,
                          const int32_t* block_tables, float* out, int64_t B, int64_t Hq, int64_t KV, int64_t D,
                          int64_t BS, int64_t max_blocks, float scale, int threads) {
  decode(q, k_cache, v_cache, seq_lens, block_tables, out, B, Hq, KV, D, BS, max_blocks, scale, threads);
}

void rsa_paged_decode_bf16(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* seq_lens,
                           const int32_t* block_tables, float* out, int64_t B, int64_t Hq, int64_t KV, int64_t D,
                           int64_t BS, int64_t max_blocks, float scale, int threads) {
  decode(q, k_cache, v_cache, seq_lens, block_tables, out, B, Hq, KV, D, BS, max_blocks, scale, threads);
}

}  // extern "C"

// Write T new key/value rows into the paged cache: row t goes to flat cache row slot_mapping[t]
// (block * block_size + offset), -1 = not stored. Rows are `row_bytes` bytes (KV * D elements of
// the cache dtype, which the caller makes the keys' dtype too).
extern "C" void rsa_store_kv(const char* k, const char* v, char* k_cache, char* v_cache, const int64_t* slot_mapping,
                             int64_t T, int64_t row_bytes) {
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    std::memcpy(k_cache + slot * row_bytes, k + t * row_bytes, row_bytes);
    std::memcpy(v_cache + slot * row_bytes, v + t * row_bytes, row_bytes);
  }
}
