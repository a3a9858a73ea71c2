// Scalar math shared by the CPU (.cpp) and CUDA (.cu) kernels, written once: __host__
// __device__ under nvcc, plain inline C++ otherwise. No torch headers.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define ARCDAE_HD __host__ __device__ __forceinline__
#else
#define ARCDAE_HD inline
#endif

namespace arcdae_fast {

// ---- AdaGN (SPEC section 3) -----------------------------------------------------------------

// Modulation inputs, float32; weight / bias / zscale may be null.
struct AdaGNParams {
  const float *weight, *bias, *scale, *shift, *zscale;
};

// Per-(b, c) coefficients: h = (x - mean) a + c with a = rstd k, k = w (1 + s)(1 + z),
// c = (bias (1 + s) + shift)(1 + z).
struct Coef {
  float a, c, k;
};

ARCDAE_HD Coef adagn_coef(const AdaGNParams& p, int64_t b, int64_t ch, int64_t C, float rstd) {
  const int64_t i = b * C + ch;
  const float one_s = 1.f + p.scale[i], one_z = p.zscale ? 1.f + p.zscale[i] : 1.f;
  const float k = (p.weight ? p.weight[ch] : 1.f) * one_s * one_z;
  return {k * rstd, ((p.bias ? p.bias[ch] : 0.f) * one_s + p.shift[i]) * one_z, k};
}

// ---- TAPA augmentation (SPEC section 2) --------------------------------------------------

// Clamp to [0, 1] keeping NaN (as torch.clamp does; fminf/fmaxf would drop it): NaN pixels
// propagate identically in every backend.
ARCDAE_HD float aug_clamp01(float v) {
  return v != v ? v : (v < 0.f ? 0.f : (v > 1.f ? 1.f : v));
}

// Bilinear source taps along one axis for output index j of n (border clamp): the output
// pixel centre u = (j + 0.5) / n (mirrored when flipping) maps to centre + (u - 0.5) extent.
struct Tap {
  int64_t lo, hi;
  float f;
};

ARCDAE_HD Tap aug_tap(int64_t j, int64_t n, float centre, float extent, bool flip) {
  float u = (static_cast<float>(j) + 0.5f) / static_cast<float>(n);
  if (flip) u = 1.f - u;
  float s = (centre + (u - 0.5f) * extent) * static_cast<float>(n) - 0.5f;
  s = fminf(fmaxf(s, 0.f), static_cast<float>(n - 1));
  const float lo = floorf(s);
  const int64_t l = static_cast<int64_t>(lo);
  return {l, l + 1 < n ? l + 1 : n - 1, s - lo};
}

// bilinear combination of the four taps, along H first, then W (the reference's order)
ARCDAE_HD float aug_bilinear(float top_lo, float bottom_lo, float top_hi, float bottom_hi,
                             const Tap& ty, const Tap& tx) {
  const float left = top_lo + (bottom_lo - top_lo) * ty.f;
  const float right = top_hi + (bottom_hi - top_hi) * ty.f;
  return left + (right - left) * tx.f;
}

// YIQ chroma rows of T and columns 1, 2 of T^-1 (hue rotation: I + Tinv[:,1:](R - I)T[1:]).
struct Yiq {
  float t[2][3], inv[3][2];
};

inline Yiq yiq_constants() {
  const double T[3][3] = {{0.299, 0.587, 0.114}, {0.596, -0.274, -0.322},
                          {0.211, -0.523, 0.312}};
  auto minor = [&](int r, int c) {  // cofactor of T[r][c] (cyclic form)
    return T[(r + 1) % 3][(c + 1) % 3] * T[(r + 2) % 3][(c + 2) % 3] -
           T[(r + 1) % 3][(c + 2) % 3] * T[(r + 2) % 3][(c + 1) % 3];
  };
  double det = 0;
  for (int c = 0; c < 3; ++c) det += T[0][c] * minor(0, c);
  Yiq y{};
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) y.t[r][c] = static_cast<float>(T[r + 1][c]);
  for (int i = 0; i < 3; ++i)
    for (int r = 0; r < 2; ++r)  // (T^-1)[i][r + 1] = cofactor(r + 1, i) / det
      y.inv[i][r] = static_cast<float>(minor(r + 1, i) / det);
  return y;
}

// Colour steps on a cropped [0, 1] pixel, in place: brightness, contrast around the view's
// mean gray (mean_gray: before brightness), saturation, hue. p: the (9,) parameter row.
ARCDAE_HD void aug_color(float rgb[3], const float* p, float mean_gray, const Yiq& y) {
  const float bright = p[5], contrast = p[6], sat = p[7];
  const float m = mean_gray * bright;
  for (int c = 0; c < 3; ++c) rgb[c] = (rgb[c] * bright - m) * contrast + m;
  const float g = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
  for (int c = 0; c < 3; ++c) rgb[c] = (rgb[c] - g) * sat + g;
  const float theta = 6.283185307179586f * p[8];
  const float cs = cosf(theta) - 1.f, sn = sinf(theta);
  const float ci = y.t[0][0] * rgb[0] + y.t[0][1] * rgb[1] + y.t[0][2] * rgb[2];
  const float cq = y.t[1][0] * rgb[0] + y.t[1][1] * rgb[1] + y.t[1][2] * rgb[2];
  const float di = cs * ci - sn * cq, dq = sn * ci + cs * cq;
  for (int c = 0; c < 3; ++c) rgb[c] += y.inv[c][0] * di + y.inv[c][1] * dq;
}

// ---- random numbers ------------------------------------------------------------------------

// Philox4x32-10 (Salmon et al., SC 2011): counter (4 words) and key (2 words) -> 4 words.
struct Words4 {
  uint32_t x, y, z, w;
};

ARCDAE_HD Words4 philox4x32(Words4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = 0xD2511F53ull * c.x, p1 = 0xCD9E8D57ull * c.z;
    c = {static_cast<uint32_t>(p1 >> 32) ^ c.y ^ k0, static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c.w ^ k1, static_cast<uint32_t>(p0)};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Four N(0, 1) samples at stream position `index` (counter = index, offset; key = seed),
// by Box-Muller on the Philox words.
struct Normal4 {
  float v[4];
};

ARCDAE_HD Normal4 philox_normal4(uint64_t seed, uint64_t index, uint64_t offset) {
  const Words4 r = philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                               static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)},
                              static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const float k = 2.3283064365386963e-10f;  // 2^-32: uniforms in (0, 1] for the logs
  const float u0 = (static_cast<float>(r.x) + 1.f) * k, u1 = static_cast<float>(r.y) * k;
  const float u2 = (static_cast<float>(r.z) + 1.f) * k, u3 = static_cast<float>(r.w) * k;
  const float ra = sqrtf(-2.f * logf(u0)), rb = sqrtf(-2.f * logf(u2));
  const float t0 = 6.283185307179586f * u1, t1 = 6.283185307179586f * u3;
  return {{ra * cosf(t0), ra * sinf(t0), rb * cosf(t1), rb * sinf(t1)}};
}

}  // namespace arcdae_fast
