// Launchers of the CUDA kernels: plain C++ over raw device pointers and a stream, no torch
// headers, so the .cu files compile with nvcc alone (CI builds them for sm_90 without a GPU).
// csrc/cuda/bindings.cpp adapts them to the arcdae_fast:: operators (CUDA dispatch key).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../kernel_math.h"

namespace arcdae_fast::cuda {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2 };

struct AdaGNShape {
  int64_t B, C, HW, G;
  bool nhwc;  // memory (B, H, W, C); else contiguous NCHW
};

using arcdae_fast::AdaGNParams;  // float32 device pointers (kernel_math.h)

// y = SiLU(((x - mean) rstd w + bias)(1 + scale) + shift)(1 + zscale); writes mean, rstd (B, G).
cudaError_t adagn_forward(DType dt, const void* x, void* y, float* mean, float* rstd,
                          AdaGNParams p, AdaGNShape s, float eps, cudaStream_t stream);

// dx, and T1 = sum dh, T2 = sum dh * xhat per (b, c) (for the parameter gradients).
// work: device scratch of adagn_backward_work_floats(s) floats. channels_last needs C <= 2048.
cudaError_t adagn_backward(DType dt, const void* dy, const void* x, void* dx, float* T1,
                           float* T2, float* work, const float* mean, const float* rstd,
                           AdaGNParams p, AdaGNShape s, cudaStream_t stream);

int64_t adagn_backward_work_floats(AdaGNShape s);

// TAPA augmentation + noising (SPEC section 2). Strides in elements, (b, c, h, w) order.
// With draw_noise, noise is written from Philox(seed, offset); else it is read.
cudaError_t augment_forward(DType dt, const void* x, const float* params, const float* alpha,
                            const float* sigma, void* noise, bool draw_noise, uint64_t seed,
                            uint64_t offset, void* x_t, void* view, int64_t B, int64_t H,
                            int64_t W, const int64_t* x_strides, const int64_t* noise_strides,
                            const int64_t* out_strides, float* mean_work, cudaStream_t stream);

}  // namespace arcdae_fast::cuda
