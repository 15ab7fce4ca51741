// Eight-float vectors for the CPU kernels (GCC/Clang vector extensions: one AVX register, two
// NEON ones): the type, unaligned loads from fp32 and bf16, and a horizontal sum.
#pragma once

#include <cstdint>
#include <cstring>

namespace rsa_cpu {

typedef float f8 __attribute__((vector_size(32)));

inline f8 load8(const float* p) {
  f8 x;
  std::memcpy(&x, p, sizeof(x));
  return x;
}

inline f8 load8(const uint16_t* p) {  // bfloat16 -> float32 is a 16-bit left shift
  f8 x;
  for (int i = 0; i < 8; ++i) {
    uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    std::memcpy(&x[i], &bits, 4);
  }
  return x;
}

inline float hsum(f8 x) { return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7])); }

}  // namespace rsa_cpu
