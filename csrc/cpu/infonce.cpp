// InfoNCE primitives on CPU (see arcdae_fast/ops/infonce.py), tiled so that no N x N matrix
// exists: each thread holds one (BM x BN) logit tile at a time. Logit tiles come from at::mm
// on single threads (inside at::parallel_for, so MKL runs sequentially per tile); the online
// log-sum-exp and the gradient weights are simd.h loops. Fixed tile order: deterministic.
//   s_ij = <q_i, k_j> inv_q_i inv_k_j scale
//   lse_rows: logsumexp_j s_ij
//   grad_rows: scale * sum_j (c_own_i e^(s_ij - lse_own_i) + c_other_j e^(s_ij - lse_other_j))
//              * inv_k_j k_j
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
constexpr int64_t BM = 64, BN = 512;

// Online log-sum-exp update of rows [0, m) with the tile S (m x n, leading dim n).
ARCDAE_CLONES void lse_update(const float* S, int64_t m, int64_t n, float* row_max,
                              float* row_sum) {
  for (int64_t r = 0; r < m; ++r) {
    const float* s = S + r * n;
    float mx = row_max[r];
    for (int64_t j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    vf acc = {};
    int64_t j = 0;
    for (; j + W <= n; j += W) acc += exp(vload(s + j) - mx);
    float tail = 0.f;  // scalar tail: zero-padded lanes would add exp(-mx)
    for (; j < n; ++j) tail += std::exp(s[j] - mx);
    row_sum[r] = row_sum[r] * std::exp(row_max[r] - mx) + hsum(acc) + tail;
    row_max[r] = mx;
  }
}

// In place: S_ij <- (c_own_i e^(S_ij - lse_own_i) + c_other_j e^(S_ij - lse_other_j))
// (either term absent when its pointers are null).
ARCDAE_CLONES void grad_weights(float* S, int64_t m, int64_t n, const float* lse_own,
                                const float* c_own, const float* lse_other,
                                const float* c_other) {
  for (int64_t r = 0; r < m; ++r) {
    float* s = S + r * n;
    for_vectors(n, [&](int64_t j, int64_t k) ARCDAE_LAMBDA {
      const vf v = vload(s + j, k);
      vf out = {};
      if (lse_own) out += c_own[r] * exp(v - lse_own[r]);
      if (lse_other) out += vload(c_other + j, k) * exp(v - vload(lse_other + j, k));
      vstore(s + j, out, k);
    });
  }
}

at::Tensor scaled_rows(const at::Tensor& x, const at::Tensor& inv, double scale) {
  return (x.to(at::kFloat) * (inv.to(at::kFloat) * scale).unsqueeze(1)).contiguous();
}

void check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_q,
           const at::Tensor& inv_k) {
  TORCH_CHECK(q.dim() == 2 && q.sizes() == k.sizes(), "infonce: q and k must both be (N, D)");
  TORCH_CHECK(inv_q.numel() == q.size(0) && inv_k.numel() == q.size(0),
              "infonce: inv_q / inv_k must be (N,)");
}

at::Tensor infonce_lse_rows_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_q,
                                const at::Tensor& inv_k, double scale) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  check(q, k, inv_q, inv_k);
  const int64_t N = q.size(0);
  const at::Tensor qs = scaled_rows(q, inv_q, scale), ks = scaled_rows(k, inv_k, 1.0);
  at::Tensor lse = at::empty({N}, q.options().dtype(at::kFloat));
  float* out = lse.data_ptr<float>();
  at::parallel_for(0, (N + BM - 1) / BM, 1, [&](int64_t lo, int64_t hi) {
    at::Tensor buf = at::empty({BM * BN}, qs.options());
    std::vector<float> mx(BM), sum(BM);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = blk * BM, m = std::min(BM, N - i0);
      std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
      std::fill(sum.begin(), sum.end(), 0.f);
      const at::Tensor qb = qs.narrow(0, i0, m);
      for (int64_t j0 = 0; j0 < N; j0 += BN) {
        const int64_t n = std::min(BN, N - j0);
        at::Tensor S = buf.narrow(0, 0, m * n).view({m, n});
        at::mm_out(S, qb, ks.narrow(0, j0, n).t());
        lse_update(S.data_ptr<float>(), m, n, mx.data(), sum.data());
      }
      for (int64_t r = 0; r < m; ++r) out[i0 + r] = mx[r] + std::log(sum[r]);
    }
  });
  return lse;
}

at::Tensor infonce_grad_rows_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_q,
                                 const at::Tensor& inv_k, double scale,
                                 const std::optional<at::Tensor>& lse_own,
                                 const std::optional<at::Tensor>& c_own,
                                 const std::optional<at::Tensor>& lse_other,
                                 const std::optional<at::Tensor>& c_other) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  check(q, k, inv_q, inv_k);
  const int64_t N = q.size(0), D = q.size(1);
  const at::Tensor qs = scaled_rows(q, inv_q, scale), ks = scaled_rows(k, inv_k, 1.0);
  auto f32 = [](const std::optional<at::Tensor>& t) {
    return t ? t->to(at::kFloat).contiguous() : at::Tensor();
  };
  const at::Tensor lo_ = f32(lse_own), co = f32(c_own), lt = f32(lse_other), ct = f32(c_other);
  const float* LO = lo_.defined() ? lo_.const_data_ptr<float>() : nullptr;
  const float* CO = co.defined() ? co.const_data_ptr<float>() : nullptr;
  const float* LT = lt.defined() ? lt.const_data_ptr<float>() : nullptr;
  const float* CT = ct.defined() ? ct.const_data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({N, D}, qs.options());
  at::parallel_for(0, (N + BM - 1) / BM, 1, [&](int64_t lo, int64_t hi) {
    at::Tensor buf = at::empty({BM * BN}, qs.options());
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = blk * BM, m = std::min(BM, N - i0);
      at::Tensor acc = out.narrow(0, i0, m);
      acc.zero_();
      const at::Tensor qb = qs.narrow(0, i0, m);
      for (int64_t j0 = 0; j0 < N; j0 += BN) {
        const int64_t n = std::min(BN, N - j0);
        at::Tensor S = buf.narrow(0, 0, m * n).view({m, n});
        const at::Tensor kb = ks.narrow(0, j0, n);
        at::mm_out(S, qb, kb.t());
        grad_weights(S.data_ptr<float>(), m, n, LO ? LO + i0 : nullptr, CO ? CO + i0 : nullptr,
                     LT ? LT + j0 : nullptr, CT ? CT + j0 : nullptr);
        acc.addmm_(S, kb);
      }
      acc.mul_(scale);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast_C, CPU, m) {
  m.impl("infonce_forward", &infonce_lse_rows_cpu);
  m.impl("infonce_backward", &infonce_grad_rows_cpu);
}

}  // namespace arcdae_fast
