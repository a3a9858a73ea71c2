// Attention-pooling primitives on CPU (see arcdae_fast/ops/attn_pool.py), with the key
// projection folded into the queries (qk = scale * query @ key_weight, (K, C)): keys are
// never formed. One batch element per task (at::parallel_for); per element, direct simd.h
// loops over the channels (the products are too small for GEMM calls to pay):
//   forward:  s[k, u] = <qk_k, x_u>;  p = softmax_u(s);  out_k = sum_u p[k, u] x_u
//   backward: ds = p (<dout_k, x_u> - delta_k);  dx_u = sum_k p[k, u] dout_k + ds[k, u] qk_k;
//             dqk = sum_b sum_u ds[k, u] x_u (per-element partials, summed in a fixed order).
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


template <typename T>
ARCDAE_INLINE float dot(const float* a, const T* b, int64_t n) {
  vf acc = {};
  for_vectors(n, [&](int64_t i, int64_t k) ARCDAE_LAMBDA { acc += vload(a + i, k) * vload(b + i, k); });
  return hsum(acc);
}

// acc[0:n] += w * v[0:n]
template <typename T>
ARCDAE_INLINE void axpy(float* acc, float w, const T* v, int64_t n) {
  for_vectors(n, [&](int64_t i, int64_t k) ARCDAE_LAMBDA {
    vstore(acc + i, vload(acc + i, k) + w * vload(v + i, k), k);
  });
}

// Logits s (K x N) of element x (N x C, row stride sx), then p = softmax in place; lse (K).
template <typename T>
ARCDAE_INLINE void softmax_rows(const T* x, int64_t sx, const float* qk, int64_t N, int64_t C,
                                int64_t K, float* s, float* lse, const float* given_lse) {
  for (int64_t k = 0; k < K; ++k) {
    float* row = s + k * N;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t u = 0; u < N; ++u) {
      row[u] = dot(qk + k * C, x + u * sx, C);
      mx = row[u] > mx ? row[u] : mx;
    }
    const float shift = given_lse ? given_lse[k] : mx;  // backward reuses the forward's lse
    for_vectors(N, [&](int64_t u, int64_t n) ARCDAE_LAMBDA {
      vstore(row + u, exp(vload(row + u, n) - shift), n);
    });
    if (given_lse) continue;
    float sum = 0.f;
    for (int64_t u = 0; u < N; ++u) sum += row[u];
    const float inv = 1.f / sum;
    for (int64_t u = 0; u < N; ++u) row[u] *= inv;
    lse[k] = mx + std::log(sum);
  }
}

template <typename T>
ARCDAE_INLINE void forward_t(const T* x, int64_t sx, const float* qk, int64_t N, int64_t C,
                             int64_t K, float* s, float* out, float* lse) {
  softmax_rows(x, sx, qk, N, C, K, s, lse, nullptr);
  std::fill(out, out + K * C, 0.f);
  for (int64_t u = 0; u < N; ++u)
    for (int64_t k = 0; k < K; ++k) axpy(out + k * C, s[k * N + u], x + u * sx, C);
}

ARCDAE_CLONES void forward_one(at::ScalarType st, const void* x, int64_t sx, const float* qk,
                               int64_t N, int64_t C, int64_t K, float* s, float* out,
                               float* lse) {
  ARCDAE_DISPATCH(st, forward_t(static_cast<const T*>(x), sx, qk, N, C, K, s, out, lse));
}

// dx_u (float, C), dqk partial (K x C) for one element; p / ds scratch (K x N each).
template <typename T>
ARCDAE_INLINE void backward_t(const T* x, int64_t sx, const float* dout, const float* qk,
                              const float* delta, const float* lse, int64_t N, int64_t C,
                              int64_t K, float* p, float* dx, float* dqk) {
  softmax_rows(x, sx, qk, N, C, K, p, nullptr, lse);
  std::fill(dqk, dqk + K * C, 0.f);
  for (int64_t u = 0; u < N; ++u) {
    float* dxu = dx + u * C;
    std::fill(dxu, dxu + C, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float pk = p[k * N + u];
      const float ds = pk * (dot(dout + k * C, x + u * sx, C) - delta[k]);
      axpy(dxu, pk, dout + k * C, C);
      axpy(dxu, ds, qk + k * C, C);
      axpy(dqk + k * C, ds, x + u * sx, C);
    }
  }
}

ARCDAE_CLONES void backward_one(at::ScalarType st, const void* x, int64_t sx, const float* dout,
                                const float* qk, const float* delta, const float* lse,
                                int64_t N, int64_t C, int64_t K, float* p, float* dx,
                                float* dqk) {
  ARCDAE_DISPATCH(st, backward_t(static_cast<const T*>(x), sx, dout, qk, delta, lse, N, C, K, p,
                                 dx, dqk));
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
  const at::Tensor qk = qk_in.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({B, K, C}, x.options().dtype(at::kFloat));
  at::Tensor lse = at::empty({B, K}, out.options());
  const char* xp = static_cast<const char*>(x.const_data_ptr());
  const int64_t es = x.element_size();
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> s(static_cast<size_t>(K * N));
    for (int64_t b = lo; b < hi; ++b)
      forward_one(x.scalar_type(), xp + b * x.stride(0) * es, x.stride(1), qk.const_data_ptr<float>(),
                  N, C, K, s.data(), out.data_ptr<float>() + b * K * C,
                  lse.data_ptr<float>() + b * K);
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
  const at::Tensor qk = qk_in.to(at::kFloat).contiguous();
  const at::Tensor dout = dout_in.to(at::kFloat).contiguous();
  const at::Tensor delta = delta_in.to(at::kFloat).contiguous();
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  at::Tensor dx = at::empty({B, N, C}, dout.options());
  at::Tensor partial = at::empty({B, K, C}, dout.options());
  const char* xp = static_cast<const char*>(x.const_data_ptr());
  const int64_t es = x.element_size();
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> p(static_cast<size_t>(K * N));
    for (int64_t b = lo; b < hi; ++b)
      backward_one(x.scalar_type(), xp + b * x.stride(0) * es, x.stride(1),
                   dout.const_data_ptr<float>() + b * K * C, qk.const_data_ptr<float>(),
                   delta.const_data_ptr<float>() + b * K, lse.const_data_ptr<float>() + b * K,
                   N, C, K, p.data(), dx.data_ptr<float>() + b * N * C,
                   partial.data_ptr<float>() + b * K * C);
  });
  return {dx.to(x.scalar_type()), partial.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast, CPU, m) {
  m.impl("attn_pool_forward", &attn_pool_forward_cpu);
  m.impl("attn_pool_backward", &attn_pool_backward_cpu);
}

}  // namespace arcdae_fast
