// Portable SIMD for the CPU kernels: GCC vector extensions (8 float lanes) plus function
// multiversioning. Hot loops are written once against these types and compiled by
// ARCDAE_CLONES into AVX-512, AVX2 and baseline x86-64 versions, picked at load time by the
// CPU (an ifunc), so the extension runs, vectorized, on any x86-64 machine. Helpers are
// static + always_inline so each clone gets its own copy for its ISA.
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(ARCDAE_ONE_ISA)  // one ISA only (bench/isa_check.py: e.g. an AVX2 build anywhere)
#define ARCDAE_STR2(x) #x
#define ARCDAE_STR(x) ARCDAE_STR2(x)
#define ARCDAE_CLONES __attribute__((target(ARCDAE_STR(ARCDAE_ONE_ISA))))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ARCDAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ARCDAE_CLONES
#endif
#define ARCDAE_INLINE [[gnu::always_inline]] static inline
// for lambdas passed to for_vectors: an out-of-line lambda would be compiled for the
// baseline ISA instead of the caller's clone
#define ARCDAE_LAMBDA __attribute__((always_inline))

// Run __VA_ARGS__ with T bound to the element type of at::ScalarType st (float/bf16/fp16).
#define ARCDAE_DISPATCH(st, ...)                                         \
  switch (st) {                                                          \
    case at::kFloat: { using T = float; __VA_ARGS__; break; }            \
    case at::kBFloat16: { using T = c10::BFloat16; __VA_ARGS__; break; } \
    case at::kHalf: { using T = c10::Half; __VA_ARGS__; break; }         \
    default: break;                                                      \
  }

namespace arcdae_fast::simd {

// 8 float lanes (256 bits): AVX2's register width. With 16 lanes the AVX2 clone kept every
// vector in memory (loads through xmm pieces, stack spills, element-wise selects: the C++
// AdaGN measured 3-8x slower than the eager reference on AVX2, bench/isa_check.py); the
// kernels are memory-bound, so AVX-512 loses nothing measurable at this width.
constexpr int64_t W = 8;
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));
typedef uint32_t vu __attribute__((vector_size(W * 4)));

ARCDAE_INLINE vf splat(float x) { return vf{} + x; }

// Load/store up to W elements (n < W: the rest of the vector is zero / not written).
template <typename T>
ARCDAE_INLINE vf vload(const T* p, int64_t n = W) {
  if constexpr (std::is_same_v<T, float>) {
    vf v = {};
    if (n == W) {
      std::memcpy(&v, p, sizeof v);
    } else {
      std::memcpy(&v, p, static_cast<size_t>(n) * sizeof(float));
    }
    return v;
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    uint16_t raw[W] = {};
    if (n == W) {
      std::memcpy(raw, p, sizeof raw);
    } else {
      std::memcpy(raw, p, static_cast<size_t>(n) * 2);
    }
    vu bits = {};
    for (int64_t i = 0; i < W; ++i) bits[i] = static_cast<uint32_t>(raw[i]) << 16;
    vf v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  } else {
    vf v = {};
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(p[i]);
    return v;
  }
}

template <typename T>
ARCDAE_INLINE void vstore(T* p, vf v, int64_t n = W) {
  if constexpr (std::is_same_v<T, float>) {
    if (n == W) {
      std::memcpy(p, &v, sizeof v);
    } else {
      std::memcpy(p, &v, static_cast<size_t>(n) * sizeof(float));
    }
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    vu bits;
    std::memcpy(&bits, &v, sizeof bits);
    const vu nan = (bits & 0x7fffffffu) > 0x7f800000u;  // round to nearest even, NaN kept
    const vu rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const vu out = nan ? (vu{} + 0x7fc0u) : rounded;
    uint16_t raw[W];
    for (int64_t i = 0; i < W; ++i) raw[i] = static_cast<uint16_t>(out[i]);
    if (n == W) {
      std::memcpy(p, raw, sizeof raw);
    } else {
      std::memcpy(p, raw, static_cast<size_t>(n) * 2);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(v[i]);
  }
}

// exp: Cody-Waite reduction and the Cephes expf polynomial, within 2 ulp on [-87, 88];
// inputs are clamped there (exp(88) = 1.65e38 stays finite); NaN propagates.
ARCDAE_INLINE vf exp(vf x) {
  x = x < -87.33654f ? splat(-87.33654f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const vf f = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  const vf y = (p * f) * f + f + 1.0f;
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof scale);
  return y * scale;
}

ARCDAE_INLINE vf sigmoid(vf h) { return 1.0f / (1.0f + exp(-h)); }

// Calls f(i, k) for full vectors (k == W, a compile-time constant after inlining, so loads
// and stores are single vector moves) and once for the tail (k < W).
template <typename F>
ARCDAE_INLINE void for_vectors(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + W <= n; i += W) f(i, W);
  if (i < n) f(i, n - i);
}

// horizontal sum: a shuffle tree (log2 W steps) instead of W scalar extracts
ARCDAE_INLINE float hsum(vf v) {
  typedef float h4 __attribute__((vector_size(16)));
  const h4 b = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

}  // namespace arcdae_fast::simd
