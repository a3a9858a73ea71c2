// AdaGN on CPU: fused GroupNorm statistics + affine + (t, z) modulation + SiLU, and its
// backward, for NCHW and channels_last, fp32/bf16/fp16 inputs with float32 math.
// - statistics: two-pass sums over L1-sized runs, merged across runs with Welford/Chan's
//   formula (float32);
// - the forward saves s = sigmoid(h) (like x), so the backward needs no exp;
// - threads: at::parallel_for (PyTorch's OpenMP pool); loops: simd.h (AVX-512/AVX2/x86-64
//   clones). Every reduction has a fixed order: results are deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../adagn_common.h"
#include "../kernel_math.h"
#include "simd.h"

namespace arcdae_fast {
namespace {

using namespace simd;
constexpr int64_t kRun = 4096;  // elements per two-pass run (L1-resident)

struct Welford {
  float n = 0.f, mean = 0.f, m2 = 0.f;
  void merge(float nb, float mb, float m2b) {
    if (nb == 0.f) return;
    const float n_new = n + nb, delta = mb - mean;
    mean += delta * nb / n_new;
    m2 += m2b + delta * delta * n * nb / n_new;
    n = n_new;
  }
};

// A per-element parameter: broadcast (one value for a NCHW plane) or one value per lane
// along the run (channels_last: per channel).
struct Param {
  const float* p;
  bool lanes;
};
ARCDAE_INLINE vf param(const Param& q, int64_t i, int64_t n) {
  return q.lanes ? vload(q.p + i, n) : splat(*q.p);
}


// ---- vectorized runs (one cloned function each; the dtype is a runtime switch) ----------

template <typename T>
ARCDAE_INLINE void run_stats_t(const T* p, int64_t n, int64_t stride, float* mean, float* m2) {
  vf acc = {};
  int64_t i = 0;
  float tail = 0.f;
  if (stride == 1) {
    for (; i + W <= n; i += W) acc += vload(p + i);
  }
  for (; i < n; ++i) tail += static_cast<float>(p[i * stride]);
  const float m = (hsum(acc) + tail) / static_cast<float>(n);
  vf q = {};
  float qt = 0.f;
  i = 0;
  if (stride == 1) {
    for (; i + W <= n; i += W) {
      const vf d = vload(p + i) - m;
      q += d * d;
    }
  }
  for (; i < n; ++i) {
    const float d = static_cast<float>(p[i * stride]) - m;
    qt += d * d;
  }
  *mean = m;
  *m2 = hsum(q) + qt;
}
ARCDAE_CLONES void run_stats(at::ScalarType st, const void* p, int64_t n, int64_t stride,
                             float* mean, float* m2) {
  ARCDAE_DISPATCH(st, run_stats_t(static_cast<const T*>(p), n, stride, mean, m2));
}

// h = (x - mu) a + c ;  s = sigmoid(h) (saved when sig != nullptr) ;  y = h s
template <typename T>
ARCDAE_INLINE void fwd_run_t(const T* x, T* y, T* sig, int64_t n, Param mu, Param a, Param c) {
  for_vectors(n, [&](int64_t i, int64_t k) ARCDAE_LAMBDA {
    const vf h = (vload(x + i, k) - param(mu, i, k)) * param(a, i, k) + param(c, i, k);
    const vf s = sigmoid(h);
    if (sig) vstore(sig + i, s, k);
    vstore(y + i, h * s, k);
  });
}
ARCDAE_CLONES void fwd_run(at::ScalarType st, const void* x, void* y, void* sig, int64_t n,
                           Param mu, Param a, Param c) {
  ARCDAE_DISPATCH(st, fwd_run_t(static_cast<const T*>(x), static_cast<T*>(y),
                                static_cast<T*>(sig), n, mu, a, c));
}

// dh = dy s (1 + h (1 - s)), s saved (sig) or recomputed (sig == nullptr); adds dh and
// dh * xhat into t1 / t2: per lane (lanes=true, arrays of n) or summed into t1[0] / t2[0]
template <typename T>
ARCDAE_INLINE void sums_run_t(const T* dy, const T* x, const T* sig, int64_t n, Param mu,
                              Param a, Param c, Param rs, float* t1, float* t2, bool lanes) {
  vf s1 = {}, s2 = {};
  for_vectors(n, [&](int64_t i, int64_t k) ARCDAE_LAMBDA {  // tail lanes load zeros: dy = 0 -> dh = 0
    const vf xc = vload(x + i, k) - param(mu, i, k);
    const vf h = xc * param(a, i, k) + param(c, i, k);
    const vf s = sig ? vload(sig + i, k) : sigmoid(h);
    const vf dh = vload(dy + i, k) * s * (1.0f + h * (1.0f - s));
    if (lanes) {
      vstore(t1 + i, vload(t1 + i, k) + dh, k);
      vstore(t2 + i, vload(t2 + i, k) + dh * xc * param(rs, i, k), k);
    } else {
      s1 += dh;
      s2 += dh * xc * param(rs, i, k);
    }
  });
  if (!lanes) {
    *t1 += hsum(s1);
    *t2 += hsum(s2);
  }
}
ARCDAE_CLONES void sums_run(at::ScalarType st, const void* dy, const void* x, const void* sig,
                            int64_t n, Param mu, Param a, Param c, Param rs, float* t1,
                            float* t2, bool lanes) {
  ARCDAE_DISPATCH(st, sums_run_t(static_cast<const T*>(dy), static_cast<const T*>(x),
                                 static_cast<const T*>(sig), n, mu, a, c, rs, t1, t2, lanes));
}

// dx = rstd (k dh - g1 - xhat g2)
template <typename T>
ARCDAE_INLINE void dx_run_t(const T* dy, const T* x, const T* sig, T* dx, int64_t n, Param mu,
                            Param a, Param c, Param kk, Param rs, Param g1, Param g2) {
  for_vectors(n, [&](int64_t i, int64_t k) ARCDAE_LAMBDA {
    const vf xc = vload(x + i, k) - param(mu, i, k);
    const vf h = xc * param(a, i, k) + param(c, i, k);
    const vf s = sig ? vload(sig + i, k) : sigmoid(h);
    const vf dh = vload(dy + i, k) * s * (1.0f + h * (1.0f - s));
    const vf r = param(rs, i, k);
    vstore(dx + i, r * (param(kk, i, k) * dh - param(g1, i, k) - xc * r * param(g2, i, k)), k);
  });
}
ARCDAE_CLONES void dx_run(at::ScalarType st, const void* dy, const void* x, const void* sig,
                          void* dx, int64_t n, Param mu, Param a, Param c, Param kk, Param rs,
                          Param g1, Param g2) {
  ARCDAE_DISPATCH(st, dx_run_t(static_cast<const T*>(dy), static_cast<const T*>(x),
                               static_cast<const T*>(sig), static_cast<T*>(dx), n, mu, a, c, kk,
                               rs, g1, g2));
}

// ---- ops ---------------------------------------------------------------------------------

const char* ptr(const at::Tensor& t) { return static_cast<const char*>(t.const_data_ptr()); }
char* mptr(at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }
// offset into an optional tensor (empty -> nullptr)
const char* optr(const at::Tensor& t, int64_t off) {
  return t.numel() ? ptr(t) + off : nullptr;
}
char* moptr(at::Tensor& t, int64_t off) { return t.numel() ? mptr(t) + off : nullptr; }

// channels_last group statistics
void group_stats(const at::Tensor& x, const AdaGNLayout& L, int64_t G, float eps,
                 float* mean, float* rstd) {
  const int64_t Cg = L.C / G, es = x.element_size();
  const at::ScalarType st = x.scalar_type();
  at::parallel_for(0, L.B * G, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bg = lo; bg < hi; ++bg) {
      const int64_t b = bg / G, g = bg % G;
      Welford w;
      float m, q;
      for (int64_t p = 0; p < L.HW; ++p) {  // a pixel's Cg group channels are contiguous
        run_stats(st, ptr(x) + ((b * L.HW + p) * L.C + g * Cg) * es, Cg, 1, &m, &q);
        w.merge(static_cast<float>(Cg), m, q);
      }
      mean[bg] = w.mean;
      rstd[bg] = 1.f / std::sqrt(w.m2 / w.n + eps);
    }
  });
}

// Per-(b, c) copies of per-group values, so channels_last runs load them per lane.
at::Tensor per_channel(const at::Tensor& bg, int64_t C) {
  return bg.repeat_interleave(C / bg.size(1), 1).contiguous();
}

AdaGNParams modulation(const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
               const at::Tensor& scale, const at::Tensor& shift,
               const std::optional<at::Tensor>& zscale) {
  auto p = [](const std::optional<at::Tensor>& t) -> const float* {
    return t ? t->const_data_ptr<float>() : nullptr;
  };
  return {p(weight), p(bias), scale.const_data_ptr<float>(), shift.const_data_ptr<float>(),
          p(zscale)};
}

void check_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                  x.scalar_type() == at::kHalf,
              "adagn (CPU): x must be float32, bfloat16 or float16, got ", x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adagn_forward_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& scale, const at::Tensor& shift,
    const std::optional<at::Tensor>& zscale, int64_t groups, double eps) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  adagn_check(x, scale, shift, zscale, weight, bias, groups);
  check_dtype(x);
  const AdaGNLayout L = adagn_layout(x);
  const int64_t es = x.element_size();
  const at::ScalarType st = x.scalar_type();
  at::Tensor mean = at::empty({L.B, groups}, scale.options());
  at::Tensor rstd = at::empty({L.B, groups}, scale.options());
  // the saved sigmoid spares the backward its exp; kept in float32 only (bf16/fp16 would lose
  // gradient accuracy, so those recompute it)
  at::Tensor y = at::empty_like(x);
  at::Tensor sig = st == at::kFloat ? at::empty_like(x) : at::empty({0}, x.options());
  if (!L.nhwc) {  // per (b, g): statistics, then the output while the group is in cache
    const AdaGNParams mod = modulation(weight, bias, scale, shift, zscale);
    const int64_t Cg = L.C / groups;
    float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    at::parallel_for(0, L.B * groups, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bg = lo; bg < hi; ++bg) {
        const int64_t b = bg / groups, c0 = (bg % groups) * Cg;
        Welford w;
        float m, q;
        for (int64_t ch = c0; ch < c0 + Cg; ++ch) {
          for (int64_t p0 = 0; p0 < L.HW; p0 += kRun) {
            const int64_t n = std::min(kRun, L.HW - p0);
            run_stats(st, ptr(x) + ((b * L.C + ch) * L.HW + p0) * es, n, 1, &m, &q);
            w.merge(static_cast<float>(n), m, q);
          }
        }
        mp[bg] = w.mean;
        rp[bg] = 1.f / std::sqrt(w.m2 / w.n + static_cast<float>(eps));
        for (int64_t ch = c0; ch < c0 + Cg; ++ch) {
          const Coef k = adagn_coef(mod, b, ch, L.C, rp[bg]);
          const int64_t off = (b * L.C + ch) * L.HW * es;
          fwd_run(st, ptr(x) + off, mptr(y) + off, moptr(sig, off), L.HW, {&mp[bg], false},
                  {&k.a, false}, {&k.c, false});
        }
      }
    });
  } else {
    group_stats(x, L, groups, static_cast<float>(eps), mean.data_ptr<float>(),
                rstd.data_ptr<float>());
    auto [a, c, k] = adagn_coefficients(rstd, weight, bias, scale, shift, zscale, groups);
    const at::Tensor mu = per_channel(mean, L.C);
    const float *A = a.const_data_ptr<float>(), *Cc = c.const_data_ptr<float>(),
                *M = mu.const_data_ptr<float>();
    at::parallel_for(0, L.B * L.HW, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t bp = lo; bp < hi; ++bp) {
        const int64_t off = bp * L.C * es, o = (bp / L.HW) * L.C;
        fwd_run(st, ptr(x) + off, mptr(y) + off, moptr(sig, off), L.C, {M + o, true},
                {A + o, true}, {Cc + o, true});
      }
    });
  }
  return {y, mean, rstd, sig};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
adagn_backward_cpu(const at::Tensor& dy_in, const at::Tensor& x,
                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                   const at::Tensor& scale, const at::Tensor& shift,
                   const std::optional<at::Tensor>& zscale, const at::Tensor& mean,
                   const at::Tensor& rstd, const at::Tensor& sig_in, int64_t groups) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  adagn_check(x, scale, shift, zscale, weight, bias, groups);
  check_dtype(x);
  const AdaGNLayout L = adagn_layout(x);
  const auto fmt = L.nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor dy = dy_in.contiguous(fmt);
  const at::Tensor sig = sig_in.numel() ? sig_in.contiguous(fmt) : sig_in;
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "adagn_backward: dy must match x");
  TORCH_CHECK(sig.numel() == 0 || (sig.sizes() == x.sizes() &&
                                   sig.scalar_type() == x.scalar_type()),
              "adagn_backward (CPU): sig must be empty or the forward's saved sigmoid");
  const int64_t es = x.element_size();
  const at::ScalarType st = x.scalar_type();
  at::Tensor T1 = at::zeros({L.B, L.C}, scale.options());
  at::Tensor T2 = at::zeros({L.B, L.C}, scale.options());
  at::Tensor dx = at::empty_like(x);
  float *t1p = T1.data_ptr<float>(), *t2p = T2.data_ptr<float>();
  if (!L.nhwc) {  // per (b, g): both passes while the group is in cache
    const AdaGNParams mod = modulation(weight, bias, scale, shift, zscale);
    const int64_t Cg = L.C / groups;
    const float *mp = mean.const_data_ptr<float>(), *rp = rstd.const_data_ptr<float>();
    const float inv_m = 1.f / static_cast<float>(Cg * L.HW);
    at::parallel_for(0, L.B * groups, 1, [&](int64_t lo, int64_t hi) {
      std::vector<Coef> ks(static_cast<size_t>(Cg));
      for (int64_t bg = lo; bg < hi; ++bg) {
        const int64_t b = bg / groups, c0 = (bg % groups) * Cg;
        const float rs = rp[bg];
        float g1 = 0.f, g2 = 0.f;
        for (int64_t j = 0; j < Cg; ++j) {
          const int64_t bc = b * L.C + c0 + j, off = bc * L.HW * es;
          ks[j] = adagn_coef(mod, b, c0 + j, L.C, rs);
          sums_run(st, ptr(dy) + off, ptr(x) + off, optr(sig, off), L.HW, {&mp[bg], false},
                   {&ks[j].a, false}, {&ks[j].c, false}, {&rs, false}, t1p + bc, t2p + bc,
                   false);
          g1 += ks[j].k * t1p[bc];
          g2 += ks[j].k * t2p[bc];
        }
        g1 *= inv_m;
        g2 *= inv_m;
        for (int64_t j = 0; j < Cg; ++j) {
          const int64_t off = (b * L.C + c0 + j) * L.HW * es;
          dx_run(st, ptr(dy) + off, ptr(x) + off, optr(sig, off), mptr(dx) + off, L.HW,
                 {&mp[bg], false}, {&ks[j].a, false}, {&ks[j].c, false}, {&ks[j].k, false},
                 {&rs, false}, {&g1, false}, {&g2, false});
        }
      }
    });
    auto [dw, db, ds, dsh, dz] = adagn_param_grads(T1, T2, weight, bias, scale, shift, zscale);
    return {dx, dw, db, ds, dsh, dz};
  }
  // channels_last: whole-tensor passes with per-channel parameters
  auto [a, c, k] = adagn_coefficients(rstd, weight, bias, scale, shift, zscale, groups);
  const at::Tensor mu = per_channel(mean, L.C), rs = per_channel(rstd, L.C);
  const float *A = a.const_data_ptr<float>(), *Cc = c.const_data_ptr<float>(),
              *K = k.const_data_ptr<float>(), *M = mu.const_data_ptr<float>(),
              *R = rs.const_data_ptr<float>();
  // 1. T1 = sum dh, T2 = sum dh * xhat per (b, c): per (b, pixel chunk) partial sums over
  // channels, then a fixed-order reduction
  {
    const int64_t chunk = 64, nchunks = (L.HW + chunk - 1) / chunk;
    std::vector<float> part(static_cast<size_t>(L.B * nchunks * 2 * L.C), 0.f);
    at::parallel_for(0, L.B * nchunks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bk = lo; bk < hi; ++bk) {
        const int64_t b = bk / nchunks, p0 = (bk % nchunks) * chunk, o = b * L.C;
        float* q1 = part.data() + bk * 2 * L.C;
        for (int64_t p = p0; p < std::min(L.HW, p0 + chunk); ++p) {
          const int64_t off = (b * L.HW + p) * L.C * es;
          sums_run(st, ptr(dy) + off, ptr(x) + off, optr(sig, off), L.C, {M + o, true},
                   {A + o, true}, {Cc + o, true}, {R + o, true}, q1, q1 + L.C, true);
        }
      }
    });
    for (int64_t b = 0; b < L.B; ++b) {
      for (int64_t j = 0; j < nchunks; ++j) {
        const float* q1 = part.data() + (b * nchunks + j) * 2 * L.C;
        for (int64_t ch = 0; ch < L.C; ++ch) {
          t1p[b * L.C + ch] += q1[ch];
          t2p[b * L.C + ch] += q1[L.C + ch];
        }
      }
    }
  }
  // 2. group means of k dh and k dh xhat, then dx
  const double M_ = static_cast<double>(L.C / groups * L.HW);
  const at::Tensor g1 = per_channel((k * T1).view({L.B, groups, -1}).sum(-1).div_(M_), L.C);
  const at::Tensor g2 = per_channel((k * T2).view({L.B, groups, -1}).sum(-1).div_(M_), L.C);
  const float *G1 = g1.const_data_ptr<float>(), *G2 = g2.const_data_ptr<float>();
  {
    at::parallel_for(0, L.B * L.HW, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t bp = lo; bp < hi; ++bp) {
        const int64_t off = bp * L.C * es, o = (bp / L.HW) * L.C;
        dx_run(st, ptr(dy) + off, ptr(x) + off, optr(sig, off), mptr(dx) + off, L.C,
               {M + o, true}, {A + o, true}, {Cc + o, true}, {K + o, true}, {R + o, true},
               {G1 + o, true}, {G2 + o, true});
      }
    });
  }
  auto [dw, db, ds, dsh, dz] = adagn_param_grads(T1, T2, weight, bias, scale, shift, zscale);
  return {dx, dw, db, ds, dsh, dz};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast_C, CPU, m) {
  m.impl("adagn_forward", &adagn_forward_cpu);
  m.impl("adagn_backward", &adagn_backward_cpu);
}

}  // namespace arcdae_fast
