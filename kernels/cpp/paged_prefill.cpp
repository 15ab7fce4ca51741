// Paged causal attention for prefill chunks on the CPU: each sequence's n new queries (the last n
// of its seq_len positions) against its block-table K/V cache, which already holds the chunk's own
// keys. The C++ twin of attention_ref.attention_prefill (same math, fp32 scores and softmax).
// Plain C ABI (no torch headers); loaded with ctypes by kernels/cpu_ops.py, which owns the checks.
//
// Shapes (T query tokens, B sequences, Hq query heads, KV kv heads, G = Hq / KV, D head dim, BS block size):
//   q            (T, Hq, D)            float32, contiguous; sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]
//   k_cache      (NB, BS, KV, D)       float32 or bfloat16 (raw uint16), contiguous
//   v_cache      (NB, BS, KV, D)       same dtype as k_cache
//   cu_seqlens   (B + 1,)              int32 query offsets
//   seq_lens     (B,)                  int32 keys visible to each sequence's last query (>= its query count)
//   block_tables (B, max_blocks)       int32
//   out          (T, Hq, D)            float32, written
// Query i of sequence b sits at position seq_lens[b] - n_b + i and sees keys 0 ..= that position.
//
// First each (sequence, kv head) copies its keys transposed (D, S) and its values (S, D) out of the
// pages, once. Then each work item = (sequence, kv head, block of query positions) runs two small
// GEMMs whose inner loops read contiguous rows: scores = Q K^T with 4 query rows x 16 keys of
// accumulators, a row softmax over each row's own causal range, then P V with 2 rows x D of accumulators.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vec8.h"

namespace {

using rsa_cpu::f8;
using rsa_cpu::load8;
using rsa_cpu::softmax_row;
using rsa_cpu::splat;
using rsa_cpu::store8;
using rsa_cpu::to_float;

constexpr int kRowsPerItem = 64;  // query rows (positions x G heads) per work item
constexpr int kMaxD8 = 32;        // head dim up to 256
constexpr int kKeyChunk = 128;    // value rows per P V pass

struct Scratch {
  std::vector<float> qs, s, acc, inv;  // (R, D) scaled queries, (R, S16) scores, (R, D) P V sums,
                                       // (R,) 1 / softmax sum
  std::vector<int32_t> count;          // (R,) keys each row sees
};

// One sequence's keys and values for one kv head, unpacked from the pages: kt (D, ld) transposed,
// its padding columns zero (score tiles read them); vs (ld, D), rows past seq_len never read.
struct Unpacked {
  float* kt;
  float* vs;
  int64_t ld;
};

// seq_len rounded up to 16, plus 16 so that kt's rows are not a power-of-two stride apart (a score
// tile reads D of them, which would otherwise share a few L1 sets)
inline int64_t unpacked_ld(int64_t len) { return (len + 15) / 16 * 16 + 16; }

template <typename T>
void unpack(const T* k_cache, const T* v_cache, const int32_t* table, int64_t len, int64_t h, int64_t KV,
            int64_t D, int64_t BS, const Unpacked& u) {
  std::fill(u.kt, u.kt + D * u.ld, 0.f);
  for (int64_t p = 0; p < len; ++p) {
    const int64_t row = (static_cast<int64_t>(table[p / BS]) * BS + p % BS) * KV + h;
    const T* kr = k_cache + row * D;
    const T* vr = v_cache + row * D;
    for (int64_t d = 0; d < D; ++d) {
      u.kt[d * u.ld + p] = to_float(kr[d]);
      u.vs[p * D + d] = to_float(vr[d]);
    }
  }
}

// One 4 x 16 tile of scores: s[r][k0 + j] = qs[r] . kt[:, k0 + j] for r < 4, j < 16 (kt's columns
// have stride ld, s's rows s16): 8 accumulators, 2 key loads and 4 broadcasts per step of d.
inline void scores_tile(const float* qs, const float* kt, float* s, int64_t D, int64_t ld, int64_t s16) {
  f8 a00 = splat(0), a01 = splat(0), a10 = splat(0), a11 = splat(0);
  f8 a20 = splat(0), a21 = splat(0), a30 = splat(0), a31 = splat(0);
  const float* col = kt;
  for (int64_t d = 0; d < D; ++d, col += ld) {
    const f8 k_lo = load8(col), k_hi = load8(col + 8);
    const f8 q0 = splat(qs[d]), q1 = splat(qs[D + d]), q2 = splat(qs[2 * D + d]), q3 = splat(qs[3 * D + d]);
    a00 += q0 * k_lo; a01 += q0 * k_hi;
    a10 += q1 * k_lo; a11 += q1 * k_hi;
    a20 += q2 * k_lo; a21 += q2 * k_hi;
    a30 += q3 * k_lo; a31 += q3 * k_hi;
  }
  store8(s, a00), store8(s + 8, a01);
  store8(s + s16, a10), store8(s + s16 + 8, a11);
  store8(s + 2 * s16, a20), store8(s + 2 * s16 + 8, a21);
  store8(s + 3 * s16, a30), store8(s + 3 * s16 + 8, a31);
}

// acc rows 0, 1 += p0 V, p1 V over `keys` value rows: 2 x D8 accumulators in registers, one value
// row load per key.
template <int D8_>
inline void pv_2rows(const float* p0, const float* p1, const float* vs, int64_t keys, int64_t d8_rt, float* acc0,
                     float* acc1) {
  const int64_t d8 = D8_ ? D8_ : d8_rt, D = 8 * d8;
  f8 a0[D8_ ? D8_ : kMaxD8], a1[D8_ ? D8_ : kMaxD8];
  for (int64_t j = 0; j < d8; ++j) a0[j] = load8(acc0 + 8 * j), a1[j] = load8(acc1 + 8 * j);
  const float* v = vs;
  for (int64_t k = 0; k < keys; ++k, v += D) {
    const f8 w0 = splat(p0[k]), w1 = splat(p1[k]);
    for (int64_t j = 0; j < d8; ++j) {
      const f8 x = load8(v + 8 * j);
      a0[j] += w0 * x;
      a1[j] += w1 * x;
    }
  }
  for (int64_t j = 0; j < d8; ++j) store8(acc0 + 8 * j, a0[j]), store8(acc1 + 8 * j, a1[j]);
}

using PvFn = void (*)(const float*, const float*, const float*, int64_t, int64_t, float*, float*);

PvFn pick_pv(int64_t d8) {
  switch (d8) {
    case 4: return pv_2rows<4>;
    case 8: return pv_2rows<8>;
    case 16: return pv_2rows<16>;
    default: return pv_2rows<0>;
  }
}

struct Item {
  int32_t b, h, i0, i1;  // sequence, kv head, query positions [i0, i1) of the sequence's chunk
};

// keys the item's last query sees: query i of sequence b sits at position seq_lens[b] - n_b + i
inline int64_t item_keys(const Item& it, const int32_t* cu_seqlens, const int32_t* seq_lens) {
  return seq_lens[it.b] - (cu_seqlens[it.b + 1] - cu_seqlens[it.b]) + it.i1;
}

void prefill_item(const Item& it, const float* q, const Unpacked& u, const int32_t* cu_seqlens,
                  const int32_t* seq_lens, float* out, int64_t Hq, int64_t KV, int64_t D, float scale, PvFn pv,
                  Scratch& sc) {
  const int64_t G = Hq / KV, n = cu_seqlens[it.b + 1] - cu_seqlens[it.b], len = seq_lens[it.b];
  const int64_t first = len - n;  // position of query 0
  const int64_t keys = item_keys(it, cu_seqlens, seq_lens);
  const int64_t s16 = (keys + 15) / 16 * 16;
  const int64_t rows = (it.i1 - it.i0) * G, rows4 = (rows + 3) / 4 * 4;
  sc.qs.assign(static_cast<size_t>(rows4 * D), 0.f);
  sc.s.resize(static_cast<size_t>(rows4 * s16));
  sc.count.assign(static_cast<size_t>(rows4), 1);
  // rows are (query position, head) pairs: row (i - i0) * G + g is head h * G + g of query i
  for (int64_t i = it.i0; i < it.i1; ++i)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t r = (i - it.i0) * G + g;
      const float* src = q + ((cu_seqlens[it.b] + i) * Hq + it.h * G + g) * D;
      for (int64_t d = 0; d < D; ++d) sc.qs[r * D + d] = src[d] * scale;
      sc.count[r] = static_cast<int32_t>(first + i + 1);
    }
  // scores tile by tile, keys outermost: a 16-key slice of kt (D x 16) stays in L1 for all rows
  float* sp = sc.s.data();
  for (int64_t k0 = 0; k0 < keys; k0 += 16)
    for (int64_t r = 0; r < rows4; r += 4)
      if (sc.count[r] > k0 || sc.count[r + 3] > k0)  // else all four rows are causally masked here
        scores_tile(sc.qs.data() + r * D, u.kt + k0, sp + r * s16 + k0, D, u.ld, s16);
  sc.inv.resize(static_cast<size_t>(rows4));
  for (int64_t r = 0; r < rows4; ++r) sc.inv[r] = softmax_row(sp + r * s16, sc.count[r], s16);
  // P V in chunks of kKeyChunk keys, row pairs inside: the chunk's values stay in L1
  sc.acc.assign(static_cast<size_t>(rows4 * D), 0.f);
  for (int64_t c0 = 0; c0 < keys; c0 += kKeyChunk)
    for (int64_t r = 0; r < rows; r += 2) {
      const int64_t upto = std::min<int64_t>(std::max(sc.count[r], sc.count[r + 1]), c0 + kKeyChunk);
      if (upto > c0)  // the pair's other row sees more keys? its extra p are 0 in this row
        pv(sp + r * s16 + c0, sp + (r + 1) * s16 + c0, u.vs + c0 * D, upto - c0, D / 8, sc.acc.data() + r * D,
           sc.acc.data() + (r + 1) * D);
    }
  for (int64_t r = 0; r < rows; ++r) {  // row (i - i0) * G + g is head h * G + g of query i
    float* o = out + ((cu_seqlens[it.b] + it.i0 + r / G) * Hq + it.h * G + r % G) * D;
    const f8 inv = splat(sc.inv[r]);
    for (int64_t j = 0; j < D; j += 8) store8(o + j, load8(sc.acc.data() + r * D + j) * inv);
  }
}

template <typename T>
void prefill(const float* q, const T* k_cache, const T* v_cache, const int32_t* cu_seqlens, const int32_t* seq_lens,
             const int32_t* block_tables, float* out, int64_t B, int64_t Hq, int64_t KV, int64_t D, int64_t BS,
             int64_t max_blocks, float scale, int threads) {
  const int64_t G = Hq / KV;
  const int32_t per_item = static_cast<int32_t>(std::max<int64_t>(1, kRowsPerItem / G));
  std::vector<Item> items;
  for (int32_t b = 0; b < B; ++b) {
    const int32_t n = cu_seqlens[b + 1] - cu_seqlens[b];
    for (int32_t i0 = 0; i0 < n; i0 += per_item)
      for (int32_t h = 0; h < KV; ++h) items.push_back({b, h, i0, std::min(n, i0 + per_item)});
  }
  // longest key ranges first, so the dynamic schedule does not end on one long item
  std::sort(items.begin(), items.end(), [&](const Item& x, const Item& y) {
    return item_keys(x, cu_seqlens, seq_lens) > item_keys(y, cu_seqlens, seq_lens);
  });
  std::vector<int64_t> offset(static_cast<size_t>(B * KV + 1), 0);  // of each (b, h)'s unpacked K and V
  for (int64_t bh = 0; bh < B * KV; ++bh) {
    const int64_t b = bh / KV, n = cu_seqlens[b + 1] - cu_seqlens[b];
    offset[bh + 1] = offset[bh] + (n ? 2 * D * unpacked_ld(seq_lens[b]) : 0);
  }
  std::vector<float> kv_rows(static_cast<size_t>(offset[B * KV]));
  const auto unpacked = [&](int64_t b, int64_t h) {
    float* base = kv_rows.data() + offset[b * KV + h];
    const int64_t ld = unpacked_ld(seq_lens[b]);
    return Unpacked{base, base + D * ld, ld};
  };
  const PvFn pv = pick_pv(D / 8);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * KV; ++bh) {
      const int64_t b = bh / KV;
      if (cu_seqlens[b + 1] > cu_seqlens[b])
        unpack(k_cache, v_cache, block_tables + b * max_blocks, seq_lens[b], bh % KV, KV, D, BS,
               unpacked(b, bh % KV));
    }
    Scratch sc;
#pragma omp for schedule(dynamic, 1)
    for (size_t k = 0; k < items.size(); ++k)
      prefill_item(items[k], q, unpacked(items[k].b, items[k].h), cu_seqlens, seq_lens, out, Hq, KV, D, scale, pv,
                   sc);
  }
}

}  // namespace

extern "C" {

void rsa_paged_prefill_f32(const float* q, const float* k_cache, const float* v_cache, const int32_t* cu_seqlens,
                           const int32_t* seq_lens, const int32_t* block_tables, float* out, int64_t B, int64_t Hq,
                           int64_t KV, int64_t D, int64_t BS, int64_t max_blocks, float scale, int threads) {
  prefill(q, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, out, B, Hq, KV, D, BS, max_blocks, scale, threads);
}

void rsa_paged_prefill_bf16(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                            const int32_t* cu_seqlens, const int32_t* seq_lens, const int32_t* block_tables,
                            float* out, int64_t B, int64_t Hq, int64_t KV, int64_t D, int64_t BS, int64_t max_blocks,
                            float scale, int threads) {
  prefill(q, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, out, B, Hq, KV, D, BS, max_blocks, scale, threads);
}

}  // extern "C"
