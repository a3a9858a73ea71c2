// Attention-pooling primitives on CPU (see arcdae_fast/ops/attn_pool.py), with the key
// projection folded into the queries (qk = scale * query @ key_weight, (K, C)): keys are
// never formed. One batch element per task (at::parallel_for); per element, direct simd.h
// loops over the channels (the products are too small for GEMM calls to pay):
//   forward:  s[k, u] = <qk_k, x_u>;  p = softmax_u(s);  out_k = sum_u p[k, u] x_u
//   backward: ds = p (<dout_k, x_u> - delta_k);  dx_u = sum_k p[k, u] dout_k + ds[k, u] qk_k;
//             dqk = sum_b sum_u ds[k, u] x_u (per-element partials, summed in a fixed order).
// Queries go in register blocks of 8 (K zero-padded), so each chunk of a token row is loaded
// once for all of them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "simd.h"

namespace arcdae_fast {
namespace {

using namespace simd;


constexpr int64_t KB = 8;  // queries per register block (K is padded to a multiple)

// out[j] = <rows[j], x_u> for the KB rows of a block: each chunk of x_u is loaded once
template <typename T>
ARCDAE_INLINE void dots(const float* rows, const T* xu, int64_t C, float* out) {
  vf acc[KB] = {};
  for_vectors(C, [&](int64_t c, int64_t n) ARCDAE_LAMBDA {
    const vf xv = vload(xu + c, n);
#pragma GCC unroll 8
    for (int64_t j = 0; j < KB; ++j) acc[j] += vload(rows + j * C + c, n) * xv;
  });
  for (int64_t j = 0; j < KB; ++j) out[j] = hsum(acc[j]);
}

// rows[j] += w[j] * x_u for the KB rows of a block
template <typename T>
ARCDAE_INLINE void axpys(float* rows, const float* w, const T* xu, int64_t C) {
  for_vectors(C, [&](int64_t c, int64_t n) ARCDAE_LAMBDA {
    const vf xv = vload(xu + c, n);
#pragma GCC unroll 8
    for (int64_t j = 0; j < KB; ++j) vstore(rows + j * C + c, vload(rows + j * C + c, n) + w[j] * xv, n);
  });
}

// Per-element work; qk and dout are (Kp, C) with Kp = K rounded up to KB, padding rows zero.
// s: (Kp, N) scratch. Forward: out (K, C), lse (K).
template <typename T>
ARCDAE_INLINE void forward_t(const T* x, int64_t sx, const float* qk, int64_t N, int64_t C,
                             int64_t K, int64_t Kp, float* s, float* out, float* lse) {
  float col[KB];
  for (int64_t u = 0; u < N; ++u)
    for (int64_t k0 = 0; k0 < Kp; k0 += KB) {
      dots(qk + k0 * C, x + u * sx, C, col);
      for (int64_t j = 0; j < KB; ++j) s[(k0 + j) * N + u] = col[j];
    }
  for (int64_t k = 0; k < K; ++k) {  // softmax over the tokens
    float* row = s + k * N;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t u = 0; u < N; ++u) mx = row[u] > mx ? row[u] : mx;
    for_vectors(N, [&](int64_t u, int64_t n) ARCDAE_LAMBDA {
      vstore(row + u, exp(vload(row + u, n) - mx), n);
    });
    float sum = 0.f;
    for (int64_t u = 0; u < N; ++u) sum += row[u];
    for (int64_t u = 0; u < N; ++u) row[u] /= sum;
    lse[k] = mx + std::log(sum);
  }
  for (int64_t k = K; k < Kp; ++k) std::fill(s + k * N, s + (k + 1) * N, 0.f);
  std::vector<float> acc(static_cast<size_t>(Kp * C), 0.f);
  float w[KB];
  for (int64_t u = 0; u < N; ++u)
    for (int64_t k0 = 0; k0 < Kp; k0 += KB) {
      for (int64_t j = 0; j < KB; ++j) w[j] = s[(k0 + j) * N + u];
      axpys(acc.data() + k0 * C, w, x + u * sx, C);
    }
  std::copy(acc.begin(), acc.begin() + K * C, out);
}

ARCDAE_CLONES void forward_one(at::ScalarType st, const void* x, int64_t sx, const float* qk,
                               int64_t N, int64_t C, int64_t K, int64_t Kp, float* s, float* out,
                               float* lse) {
  ARCDAE_DISPATCH(st, forward_t(static_cast<const T*>(x), sx, qk, N, C, K, Kp, s, out, lse));
}

// Backward for one element: dx (N, C) float, dqk (Kp, C) partial. dout: (Kp, C), zero-padded.
template <typename T>
ARCDAE_INLINE void backward_t(const T* x, int64_t sx, const float* dout, const float* qk,
                              const float* delta, const float* lse, int64_t N, int64_t C,
                              int64_t K, int64_t Kp, float* dx, float* dqk) {
  std::fill(dqk, dqk + Kp * C, 0.f);
  float logit[KB], dp[KB], p[KB], ds[KB];
  for (int64_t u = 0; u < N; ++u) {
    const T* xu = x + u * sx;
    float* dxu = dx + u * C;
    std::fill(dxu, dxu + C, 0.f);
    for (int64_t k0 = 0; k0 < Kp; k0 += KB) {
      dots(qk + k0 * C, xu, C, logit);
      dots(dout + k0 * C, xu, C, dp);
      for (int64_t j = 0; j < KB; ++j) {
        const int64_t k = k0 + j;
        p[j] = k < K ? std::exp(logit[j] - lse[k]) : 0.f;
        ds[j] = k < K ? p[j] * (dp[j] - delta[k]) : 0.f;
      }
      // dx_u += sum_j p_j dout_j + ds_j qk_j, stored once per chunk
      const float* dr = dout + k0 * C;
      const float* qr = qk + k0 * C;
      for_vectors(C, [&](int64_t c, int64_t n) ARCDAE_LAMBDA {
        vf acc = vload(dxu + c, n);
#pragma GCC unroll 8
        for (int64_t j = 0; j < KB; ++j)
          acc += p[j] * vload(dr + j * C + c, n) + ds[j] * vload(qr + j * C + c, n);
        vstore(dxu + c, acc, n);
      });
      axpys(dqk + k0 * C, ds, xu, C);
    }
  }
}

ARCDAE_CLONES void backward_one(at::ScalarType st, const void* x, int64_t sx, const float* dout,
                                const float* qk, const float* delta, const float* lse,
                                int64_t N, int64_t C, int64_t K, int64_t Kp, float* dx,
                                float* dqk) {
  ARCDAE_DISPATCH(st, backward_t(static_cast<const T*>(x), sx, dout, qk, delta, lse, N, C, K, Kp,
                                 dx, dqk));
}

// rows padded with zeros to a multiple of KB
at::Tensor padded_rows(const at::Tensor& t, int64_t Kp) {
  const at::Tensor f = t.to(at::kFloat).contiguous();
  if (f.size(-2) == Kp) return f;
  std::vector<int64_t> shape(f.sizes().begin(), f.sizes().end());
  shape[shape.size() - 2] = Kp;
  at::Tensor out = at::zeros(shape, f.options());
  out.narrow(-2, 0, f.size(-2)).copy_(f);
  return out;
}

// x with unit channel stride (any batch / token strides)
at::Tensor channels_dense(const at::Tensor& x) { return x.stride(2) == 1 ? x : x.contiguous(); }

void check(const at::Tensor& x, const at::Tensor& qk) {
  TORCH_CHECK(x.dim() == 3 && qk.dim() == 2 && qk.size(1) == x.size(2),
              "attn_pool: x must be (B, N, C) and qk (K, C)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                  x.scalar_type() == at::kHalf,
              "attn_pool (CPU): x must be float32, bfloat16 or float16");
}

std::tuple<at::Tensor, at::Tensor> attn_pool_forward_cpu(const at::Tensor& x_in,
                                                         const at::Tensor& qk_in) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  check(x_in, qk_in);
  const at::Tensor x = channels_dense(x_in);
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), K = qk_in.size(0);
  const int64_t Kp = (K + KB - 1) / KB * KB;
  const at::Tensor qk = padded_rows(qk_in, Kp);
  at::Tensor out = at::empty({B, K, C}, x.options().dtype(at::kFloat));
  at::Tensor lse = at::empty({B, K}, out.options());
  const char* xp = static_cast<const char*>(x.const_data_ptr());
  const int64_t es = x.element_size();
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> s(static_cast<size_t>(Kp * N));
    for (int64_t b = lo; b < hi; ++b)
      forward_one(x.scalar_type(), xp + b * x.stride(0) * es, x.stride(1),
                  qk.const_data_ptr<float>(), N, C, K, Kp, s.data(),
                  out.data_ptr<float>() + b * K * C, lse.data_ptr<float>() + b * K);
  });
  return {out.to(x.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor> attn_pool_backward_cpu(const at::Tensor& dout_in,
                                                          const at::Tensor& x_in,
                                                          const at::Tensor& qk_in,
                                                          const at::Tensor& delta_in,
                                                          const at::Tensor& lse_in) {
  at::NoGradGuard no_grad;
  check(x_in, qk_in);
  const at::Tensor x = channels_dense(x_in);
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), K = qk_in.size(0);
  const int64_t Kp = (K + KB - 1) / KB * KB;
  const at::Tensor qk = padded_rows(qk_in, Kp), dout = padded_rows(dout_in, Kp);
  const at::Tensor delta = delta_in.to(at::kFloat).contiguous();
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  at::Tensor dx = at::empty({B, N, C}, qk.options());
  at::Tensor partial = at::empty({B, Kp, C}, qk.options());
  const char* xp = static_cast<const char*>(x.const_data_ptr());
  const int64_t es = x.element_size();
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      backward_one(x.scalar_type(), xp + b * x.stride(0) * es, x.stride(1),
                   dout.const_data_ptr<float>() + b * Kp * C, qk.const_data_ptr<float>(),
                   delta.const_data_ptr<float>() + b * K, lse.const_data_ptr<float>() + b * K,
                   N, C, K, Kp, dx.data_ptr<float>() + b * N * C,
                   partial.data_ptr<float>() + b * Kp * C);
  });
  return {dx.to(x.scalar_type()), partial.sum(0).narrow(0, 0, K).contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast_C, CPU, m) {
  m.impl("attn_pool_forward", &attn_pool_forward_cpu);
  m.impl("attn_pool_backward", &attn_pool_backward_cpu);
}

}  // namespace arcdae_fast
