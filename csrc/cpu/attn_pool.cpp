// Attention-pooling primitives on CPU (see arcdae_fast/ops/attn_pool.py), with the key
// projection folded into the queries (qk = scale * query @ key_weight, (K, C)): keys are
// never formed. One batch element per task (at::parallel_for; the small products are
// single-threaded at::mm): logits (K, N) = qk x_b^T, softmax over tokens, out = p x_b.
// Backward: dlogits = p (dout x_b^T - delta), dx_b = p^T dout_b + dlogits^T qk,
// dqk = sum_b dlogits x_b (per-element partials, summed in a fixed order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace arcdae_fast {
namespace {

void check(const at::Tensor& x, const at::Tensor& qk) {
  TORCH_CHECK(x.dim() == 3 && qk.dim() == 2 && qk.size(1) == x.size(2),
              "attn_pool: x must be (B, N, C) and qk (K, C)");
}

std::tuple<at::Tensor, at::Tensor> attn_pool_forward_cpu(const at::Tensor& x_in,
                                                         const at::Tensor& qk_in) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  const at::Tensor x = x_in.detach();  // mm_out rejects views of grad-requiring tensors
  check(x, qk_in);
  const int64_t B = x.size(0), K = qk_in.size(0), C = x.size(2);
  const at::Tensor qk = qk_in.detach().to(at::kFloat).contiguous();
  at::Tensor out = at::empty({B, K, C}, x.options().dtype(at::kFloat));
  at::Tensor lse = at::empty({B, K}, x.options().dtype(at::kFloat));
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const at::Tensor xb = x[b].to(at::kFloat);  // (N, C)
      const at::Tensor logits = at::mm(qk, xb.t());  // (K, N)
      const at::Tensor l = at::logsumexp(logits, {1});
      lse[b].copy_(l);
      at::Tensor ob = out[b];
      at::mm_out(ob, (logits - l.unsqueeze(1)).exp_(), xb);
    }
  });
  return {out.to(x.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor> attn_pool_backward_cpu(const at::Tensor& dout_in,
                                                          const at::Tensor& x_in,
                                                          const at::Tensor& qk_in,
                                                          const at::Tensor& delta_in,
                                                          const at::Tensor& lse_in) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  // mm_out rejects views of tensors that require grad, even without grad mode
  const at::Tensor x = x_in.detach(), dout = dout_in.detach(), delta = delta_in.detach(),
                   lse = lse_in.detach();
  check(x, qk_in);
  const int64_t B = x.size(0), K = qk_in.size(0), C = x.size(2);
  const at::Tensor qk = qk_in.detach().to(at::kFloat).contiguous();
  at::Tensor dx = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  at::Tensor partial = at::empty({B, K, C}, x.options().dtype(at::kFloat));
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const at::Tensor xb = x[b].to(at::kFloat), db = dout[b].to(at::kFloat);
      const at::Tensor p = (at::mm(qk, xb.t()) - lse[b].unsqueeze(1)).exp_();  // (K, N)
      const at::Tensor ds = p * (at::mm(db, xb.t()) - delta[b].unsqueeze(1));
      at::Tensor dxb = dx[b], pb = partial[b];
      at::mm_out(dxb, p.t(), db);
      dxb.addmm_(ds.t(), qk);
      at::mm_out(pb, ds, xb);
    }
  });
  return {dx.to(x.scalar_type()), partial.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast, CPU, m) {
  m.impl("attn_pool_forward", &attn_pool_forward_cpu);
  m.impl("attn_pool_backward", &attn_pool_backward_cpu);
}

}  // namespace arcdae_fast
