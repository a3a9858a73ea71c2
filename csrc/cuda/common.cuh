// Device helpers shared by the .cu files: dtype conversion and block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch.h"

namespace arcdae_fast::cuda {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// Sum of v over the block (blockDim.x a multiple of 32, <= 1024); result valid in thread 0.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? warp_sums[lane] : 0.f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

// Dispatch a templated launch over the element type.
#define ARCDAE_CUDA_DISPATCH(dt, ...)                                  \
  switch (dt) {                                                        \
    case DType::F32: { using T = float; __VA_ARGS__; break; }          \
    case DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
    case DType::F16: { using T = __half; __VA_ARGS__; break; }         \
  }

}  // namespace arcdae_fast::cuda
