// TAPA augmentation + noising CUDA kernels (SPEC section 2; see csrc/cuda/launch.h), with the
// reference's arithmetic: (1) a block per image sums the gray of its cropped [0, 1] view;
// (2) a thread per output pixel: bilinear crop/flip (border clamp), brightness, contrast,
// saturation, hue (YIQ rotation), clamp, x_t = alpha view + sigma noise, the noise read or
// drawn with Philox4x32-10 + Box-Muller (counter = pixel index and offset, key = seed).
#include <cmath>

#include "../kernel_math.h"
#include "common.cuh"

namespace arcdae_fast::cuda {
namespace {

constexpr int kThreads = 256;

struct Strides {
  int64_t b, c, h, w;
};

template <typename T>
__device__ __forceinline__ float at01(const T* x, Strides st, int64_t b, int c, int64_t i,
                                      int64_t j) {
  return (to_f(x[b * st.b + c * st.c + i * st.h + j * st.w]) + 1.f) * 0.5f;
}

template <typename T>
__device__ __forceinline__ float sample(const T* x, Strides st, int64_t b, int c, Tap ty,
                                        Tap tx) {
  return aug_bilinear(at01(x, st, b, c, ty.lo, tx.lo), at01(x, st, b, c, ty.hi, tx.lo),
                      at01(x, st, b, c, ty.lo, tx.hi), at01(x, st, b, c, ty.hi, tx.hi), ty, tx);
}

template <typename T>
__global__ void mean_gray_kernel(const T* __restrict__ x, const float* params, float* mean,
                                 int64_t H, int64_t W, Strides st) {
  const int64_t b = blockIdx.x;
  const float* p = params + b * 9;
  float acc = 0.f;
  for (int64_t e = threadIdx.x; e < H * W; e += blockDim.x) {
    const Tap ty = aug_tap(e / W, H, p[1], p[3], false);
    const Tap tx = aug_tap(e % W, W, p[0], p[2], p[4] > 0.5f);
    acc += 0.299f * sample(x, st, b, 0, ty, tx) + 0.587f * sample(x, st, b, 1, ty, tx) +
           0.114f * sample(x, st, b, 2, ty, tx);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) mean[b] = acc / static_cast<float>(H * W);
}

template <typename T>
__global__ void augment_kernel(const T* __restrict__ x, const float* params, const float* alpha,
                               const float* sigma, const float* mean, T* noise, bool draw,
                               uint64_t seed, uint64_t offset, T* x_t, T* view, int64_t B,
                               int64_t H, int64_t W, Strides sx, Strides sn, Strides so, Yiq y) {
  const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (idx >= B * H * W) return;
  const int64_t b = idx / (H * W), i = (idx / W) % H, j = idx % W;
  const float* p = params + b * 9;
  const Tap ty = aug_tap(i, H, p[1], p[3], false), tx = aug_tap(j, W, p[0], p[2], p[4] > 0.5f);
  float rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = sample(x, sx, b, c, ty, tx);
  aug_color(rgb, p, mean[b], y);
  float eps[3];
  if (draw) {
    const Normal4 r = philox_normal4(seed, static_cast<uint64_t>(idx), offset);
    for (int c = 0; c < 3; ++c) eps[c] = r.v[c];
  }
  const float a = alpha[b], s = sigma[b];
  for (int c = 0; c < 3; ++c) {
    const float out = aug_clamp01(rgb[c]) * 2.f - 1.f;
    const int64_t on = b * sn.b + c * sn.c + i * sn.h + j * sn.w;
    if (draw) {
      noise[on] = from_f<T>(eps[c]);
    } else {
      eps[c] = to_f(noise[on]);
    }
    const int64_t o = b * so.b + c * so.c + i * so.h + j * so.w;
    view[o] = from_f<T>(out);
    x_t[o] = from_f<T>(a * out + s * eps[c]);
  }
}

}  // namespace

cudaError_t augment_forward(DType dt, const void* x, const float* params, const float* alpha,
                            const float* sigma, void* noise, bool draw_noise, uint64_t seed,
                            uint64_t offset, void* x_t, void* view, int64_t B, int64_t H,
                            int64_t W, const int64_t* xs, const int64_t* ns, const int64_t* os,
                            float* mean_work, cudaStream_t stream) {
  const Strides sx{xs[0], xs[1], xs[2], xs[3]}, sn{ns[0], ns[1], ns[2], ns[3]},
      so{os[0], os[1], os[2], os[3]};
  static const Yiq yiq = yiq_constants();
  const int64_t n = B * H * W;
  ARCDAE_CUDA_DISPATCH(dt, {
    mean_gray_kernel<T><<<B, kThreads, 0, stream>>>(static_cast<const T*>(x), params, mean_work,
                                                      H, W, sx);
    augment_kernel<T><<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        static_cast<const T*>(x), params, alpha, sigma, mean_work, static_cast<T*>(noise),
        draw_noise, seed, offset, static_cast<T*>(x_t), static_cast<T*>(view), B, H, W, sx, sn,
        so, yiq);
  });
  return cudaGetLastError();
}

}  // namespace arcdae_fast::cuda
