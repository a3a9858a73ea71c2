// AdaGN CUDA kernels (see csrc/cuda/launch.h):
// forward:  stats (one block per (b, g): Welford per thread, merged across the block) ->
//           apply (elementwise in memory order: coalesced for NCHW and channels_last).
// backward: per-(b, c) sums T1 = sum dh, T2 = sum dh xhat (NCHW: a block per (b, c);
//           channels_last: blocks over (b, pixel tile) with threads along channels, partials
//           reduced in a fixed order) -> group means -> dx (elementwise).
// Deterministic (no atomics). float32 statistics for fp32/bf16/fp16 inputs.
#include <cmath>

#include "../kernel_math.h"
#include "common.cuh"

namespace arcdae_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPixTile = 64;     // pixels per block in the channels_last sums
constexpr int kMaxChPerThread = 8;  // channels_last sums support C <= 8 * 256

// (b, c, group) of the element at memory position i
struct Where {
  int64_t b, c, g;
};
__device__ __forceinline__ Where where(const AdaGNShape& s, int64_t i) {
  const int64_t c = s.nhwc ? i % s.C : (i / s.HW) % s.C, b = i / (s.C * s.HW);
  return {b, c, b * s.G + c / (s.C / s.G)};
}

__device__ __forceinline__ int64_t offset(const AdaGNShape& s, int64_t b, int64_t c, int64_t p) {
  return s.nhwc ? (b * s.HW + p) * s.C + c : (b * s.C + c) * s.HW + p;
}

// ---- forward ------------------------------------------------------------------------------

template <typename T>
__global__ void stats_kernel(const T* __restrict__ x, float* mean, float* rstd, AdaGNShape s,
                             float eps) {
  const int64_t bg = blockIdx.x, b = bg / s.G, Cg = s.C / s.G, c0 = (bg % s.G) * Cg;
  const int64_t n_el = Cg * s.HW;
  float n = 0.f, mu = 0.f, m2 = 0.f;  // Welford per thread
  for (int64_t e = threadIdx.x; e < n_el; e += blockDim.x) {
    // NCHW: the group is one contiguous run; channels_last: (pixel, channel) pairs
    const int64_t c = s.nhwc ? c0 + e % Cg : c0 + e / s.HW;
    const int64_t p = s.nhwc ? e / Cg : e % s.HW;
    const float v = to_f(x[offset(s, b, c, p)]);
    n += 1.f;
    const float d = v - mu;
    mu += d / n;
    m2 += d * (v - mu);
  }
  // merge (n, mu, m2) across the warp, then across warps (Chan's formula)
  for (int o = 16; o > 0; o >>= 1) {
    const float nb = __shfl_down_sync(0xffffffffu, n, o);
    const float mb = __shfl_down_sync(0xffffffffu, mu, o);
    const float qb = __shfl_down_sync(0xffffffffu, m2, o);
    const float nn = n + nb;
    if (nb > 0.f) {
      const float d = mb - mu;
      mu += d * nb / nn;
      m2 += qb + d * d * n * nb / nn;
      n = nn;
    }
  }
  __shared__ float sh[3][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh[0][warp] = n;
    sh[1][warp] = mu;
    sh[2][warp] = m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float N = 0.f, M = 0.f, Q = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) {
      const float nb = sh[0][w];
      if (nb == 0.f) continue;
      const float nn = N + nb, d = sh[1][w] - M;
      M += d * nb / nn;
      Q += sh[2][w] + d * d * N * nb / nn;
      N = nn;
    }
    mean[bg] = M;
    rstd[bg] = rsqrtf(Q / N + eps);
  }
}

template <typename T>
__global__ void apply_kernel(const T* __restrict__ x, T* __restrict__ y, const float* mean,
                             const float* rstd, AdaGNParams p, AdaGNShape s) {
  const int64_t n = s.B * s.C * s.HW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const Where w = where(s, i);
    const Coef k = adagn_coef(p, w.b, w.c, s.C, rstd[w.g]);
    const float h = (to_f(x[i]) - mean[w.g]) * k.a + k.c;
    y[i] = from_f<T>(h / (1.f + expf(-h)));
  }
}

// ---- backward -----------------------------------------------------------------------------

__device__ __forceinline__ float dh_of(float dy, float xc, const Coef& k) {
  const float h = xc * k.a + k.c, sg = 1.f / (1.f + expf(-h));
  return dy * sg * (1.f + h * (1.f - sg));
}

template <typename T>
__global__ void sums_nchw_kernel(const T* __restrict__ dy, const T* __restrict__ x, float* T1,
                                 float* T2, const float* mean, const float* rstd, AdaGNParams p,
                                 AdaGNShape s) {
  const int64_t bc = blockIdx.x, b = bc / s.C, c = bc % s.C, g = b * s.G + c / (s.C / s.G);
  const Coef k = adagn_coef(p, b, c, s.C, rstd[g]);
  const float mu = mean[g], rs = rstd[g];
  float t1 = 0.f, t2 = 0.f;
  for (int64_t q = threadIdx.x; q < s.HW; q += blockDim.x) {
    const float xc = to_f(x[bc * s.HW + q]) - mu;
    const float dh = dh_of(to_f(dy[bc * s.HW + q]), xc, k);
    t1 += dh;
    t2 += dh * xc * rs;
  }
  t1 = block_sum(t1);
  t2 = block_sum(t2);
  if (threadIdx.x == 0) {
    T1[bc] = t1;
    T2[bc] = t2;
  }
}

// channels_last: block (b, pixel tile); thread t handles channels t, t + 256, ...
template <typename T>
__global__ void sums_nhwc_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                 float* partial, const float* mean, const float* rstd,
                                 AdaGNParams p, AdaGNShape s, int64_t tiles) {
  const int64_t b = blockIdx.x / tiles, p0 = (blockIdx.x % tiles) * kPixTile;
  const int64_t Cg = s.C / s.G;
  float t1[kMaxChPerThread] = {}, t2[kMaxChPerThread] = {};
  for (int64_t q = p0; q < min(p0 + (int64_t)kPixTile, s.HW); ++q) {
    for (int j = 0; j < kMaxChPerThread; ++j) {
      const int64_t c = threadIdx.x + (int64_t)j * blockDim.x;
      if (c >= s.C) break;
      const int64_t g = b * s.G + c / Cg, o = (b * s.HW + q) * s.C + c;
      const Coef k = adagn_coef(p, b, c, s.C, rstd[g]);
      const float xc = to_f(x[o]) - mean[g];
      const float dh = dh_of(to_f(dy[o]), xc, k);
      t1[j] += dh;
      t2[j] += dh * xc * rstd[g];
    }
  }
  float* out = partial + blockIdx.x * 2 * s.C;
  for (int j = 0; j < kMaxChPerThread; ++j) {
    const int64_t c = threadIdx.x + (int64_t)j * blockDim.x;
    if (c >= s.C) break;
    out[c] = t1[j];
    out[s.C + c] = t2[j];
  }
}

__global__ void reduce_tiles_kernel(const float* partial, float* T1, float* T2, AdaGNShape s,
                                    int64_t tiles) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;  // (b, c)
  if (i >= s.B * s.C) return;
  const int64_t b = i / s.C, c = i % s.C;
  float t1 = 0.f, t2 = 0.f;
  for (int64_t t = 0; t < tiles; ++t) {
    const float* part = partial + (b * tiles + t) * 2 * s.C;
    t1 += part[c];
    t2 += part[s.C + c];
  }
  T1[i] = t1;
  T2[i] = t2;
}

// m1 = mean_g(k T1), m2 = mean_g(k T2) over the group's channels and pixels
__global__ void group_means_kernel(const float* T1, const float* T2, const float* rstd,
                                   AdaGNParams p, AdaGNShape s, float* m1, float* m2) {
  const int64_t bg = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (bg >= s.B * s.G) return;
  const int64_t b = bg / s.G, Cg = s.C / s.G, c0 = (bg % s.G) * Cg;
  float a1 = 0.f, a2 = 0.f;
  for (int64_t c = c0; c < c0 + Cg; ++c) {
    const float k = adagn_coef(p, b, c, s.C, rstd[bg]).k;
    a1 += k * T1[b * s.C + c];
    a2 += k * T2[b * s.C + c];
  }
  const float inv = 1.f / static_cast<float>(Cg * s.HW);
  m1[bg] = a1 * inv;
  m2[bg] = a2 * inv;
}

template <typename T>
__global__ void dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          const float* mean, const float* rstd, const float* m1,
                          const float* m2, AdaGNParams p, AdaGNShape s) {
  const int64_t n = s.B * s.C * s.HW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const Where w = where(s, i);
    const float rs = rstd[w.g];
    const Coef k = adagn_coef(p, w.b, w.c, s.C, rs);
    const float xc = to_f(x[i]) - mean[w.g];
    const float dh = dh_of(to_f(dy[i]), xc, k);
    dx[i] = from_f<T>(rs * (k.k * dh - m1[w.g] - xc * rs * m2[w.g]));
  }
}

int elementwise_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8));
}

}  // namespace

cudaError_t adagn_forward(DType dt, const void* x, void* y, float* mean, float* rstd,
                          AdaGNParams p, AdaGNShape s, float eps, cudaStream_t stream) {
  ARCDAE_CUDA_DISPATCH(dt, {
    stats_kernel<T><<<s.B * s.G, kThreads, 0, stream>>>(static_cast<const T*>(x), mean, rstd,
                                                          s, eps);
    apply_kernel<T><<<elementwise_blocks(s.B * s.C * s.HW), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), mean, rstd, p, s);
  });
  return cudaGetLastError();
}

cudaError_t adagn_backward(DType dt, const void* dy, const void* x, void* dx, float* T1,
                           float* T2, float* work, const float* mean, const float* rstd,
                           AdaGNParams p, AdaGNShape s, cudaStream_t stream) {
  if (s.nhwc && s.C > kMaxChPerThread * kThreads) return cudaErrorInvalidValue;
  float *m1 = work, *m2 = work + s.B * s.G, *partial = work + 2 * s.B * s.G;
  const int64_t tiles = (s.HW + kPixTile - 1) / kPixTile;
  ARCDAE_CUDA_DISPATCH(dt, {
    const T* dyp = static_cast<const T*>(dy);
    const T* xp = static_cast<const T*>(x);
    if (s.nhwc) {
      sums_nhwc_kernel<T><<<s.B * tiles, kThreads, 0, stream>>>(dyp, xp, partial, mean, rstd,
                                                                  p, s, tiles);
      reduce_tiles_kernel<<<(s.B * s.C + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          partial, T1, T2, s, tiles);
    } else {
      sums_nchw_kernel<T><<<s.B * s.C, kThreads, 0, stream>>>(dyp, xp, T1, T2, mean, rstd, p,
                                                                s);
    }
    group_means_kernel<<<(s.B * s.G + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        T1, T2, rstd, p, s, m1, m2);
    dx_kernel<T><<<elementwise_blocks(s.B * s.C * s.HW), kThreads, 0, stream>>>(
        dyp, xp, static_cast<T*>(dx), mean, rstd, m1, m2, p, s);
  });
  return cudaGetLastError();
}

int64_t adagn_backward_work_floats(AdaGNShape s) {
  const int64_t tiles = (s.HW + kPixTile - 1) / kPixTile;
  return 2 * s.B * s.G + (s.nhwc ? s.B * tiles * 2 * s.C : 0);
}

}  // namespace arcdae_fast::cuda
