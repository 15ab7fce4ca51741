// Eight-float vectors for the CPU kernels (GCC/Clang vector extensions: one AVX register, two
// NEON ones): the type, unaligned loads from fp32 and bf16, a horizontal sum, exp and the softmax
// row both attention kernels use.
#pragma once

#include <cstdint>
#include <cstring>

namespace rsa_cpu {

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));  // its lanes as integers

inline f8 load8(const float* p) {
  f8 x;
  std::memcpy(&x, p, sizeof(x));
  return x;
}

inline float to_float(float x) { return x; }

inline float to_float(uint16_t x) {  // bfloat16 -> float32 is a 16-bit left shift
  const uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline f8 load8(const uint16_t* p) {
  f8 x;
  for (int i = 0; i < 8; ++i) x[i] = to_float(p[i]);
  return x;
}

inline float hsum(f8 x) { return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7])); }

#if defined(__clang__)
#define SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shuffle(a, b, i8{i0, i1, i2, i3, i4, i5, i6, i7})
#endif

// lanes [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]
inline f8 hadd(f8 a, f8 b) {
  return SHUFFLE8(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + SHUFFLE8(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// the eight horizontal sums of x[0..7] as one vector: a transpose-add instead of eight hsums
inline f8 hsum8(const f8* x) {
  const f8 u0 = hadd(hadd(x[0], x[1]), hadd(x[2], x[3]));  // [x0..x3 low-half sums | x0..x3 high-half sums]
  const f8 u1 = hadd(hadd(x[4], x[5]), hadd(x[6], x[7]));
  return SHUFFLE8(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE8(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

inline f8 splat(float x) { return f8{x, x, x, x, x, x, x, x}; }

inline void store8(float* p, f8 x) { std::memcpy(p, &x, sizeof(x)); }

// e^x for softmax arguments (x <= 0; clamped to [-87, 0]), relative error under 3e-7: x = n ln2 + r
// with |r| <= ln2 / 2, a degree-6 Taylor polynomial for e^r, and 2^n built in the exponent bits.
// About 12 vector instructions, a few times cheaper than libm's vector expf.
inline f8 exp8(f8 x) {
  x = x < splat(-87.f) ? splat(-87.f) : x;
  x = x > splat(0.f) ? splat(0.f) : x;
  const i8 n = __builtin_convertvector(x * splat(1.44269504f) - splat(0.5f), i8);  // round(x / ln2), x <= 0
  const f8 nf = __builtin_convertvector(n, f8);
  const f8 r = (x - nf * splat(0.693145752f)) - nf * splat(1.42860677e-6f);  // ln2 split in two for precision
  f8 p = splat(1.f / 720);
  p = p * r + splat(1.f / 120);
  p = p * r + splat(1.f / 24);
  p = p * r + splat(1.f / 6);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.f);
  p = p * r + splat(1.f);
  const i8 bits = (n + 127) << 23;
  f8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Unnormalised softmax in place over s[0, width) (width a multiple of 8, count >= 1):
// s[0, count) -> exp(s - max), the rest -> 0; returns 1 / sum.
inline float softmax_row(float* s, int32_t count, int64_t width) {
  const int32_t full = count / 8 * 8;
  f8 mv = splat(s[0]);
  for (int32_t k = 0; k < full; k += 8) {
    const f8 x = load8(s + k);
    mv = x > mv ? x : mv;
  }
  float m = mv[0];
  for (int i = 1; i < 8; ++i) m = mv[i] > m ? mv[i] : m;
  for (int32_t k = full; k < count; ++k) m = s[k] > m ? s[k] : m;
  const f8 mm = splat(m);
  f8 sum = splat(0.f);
  for (int32_t k = 0; k < full; k += 8) {
    const f8 e = exp8(load8(s + k) - mm);
    store8(s + k, e);
    sum += e;
  }
  if (full < count) {  // the last partial vector: lanes at or past count become 0
    const f8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const f8 e = exp8(load8(s + full) - mm);
    const f8 kept = lane < splat(static_cast<float>(count - full)) ? e : splat(0.f);
    store8(s + full, kept);
    sum += kept;
  }
  for (int64_t k = (count + 7) / 8 * 8; k < width; ++k) s[k] = 0.f;
  return 1.f / hsum(sum);
}

}  // namespace rsa_cpu
