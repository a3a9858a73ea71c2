// Shared by the CPU and CUDA AdaGN implementations: argument checks, memory layout, and
// the parameter-gradient epilogue computed from two per-(sample, channel) sums
//   T1[b, c] = sum_p dh,   T2[b, c] = sum_p dh * xhat,   dh = dL/d(pre-SiLU h).
// With h = u (1 + z), u = v (1 + s) + shift, v = xhat w + bias:
//   dshift = (1 + z) T1,  dscale = (1 + z) (w T2 + bias T1),
//   dzscale = (1 + s) (w T2 + bias T1) + shift T1,
//   dbias = sum_b (1 + z)(1 + s) T1,  dweight = sum_b (1 + z)(1 + s) T2.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace arcdae_fast {

struct AdaGNLayout {
  int64_t B, C, HW;
  bool nhwc;  // channels_last: memory (B, H, W, C); else contiguous NCHW
};

// x contiguous in NCHW or channels_last (the Python side makes it so).
inline AdaGNLayout adagn_layout(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "adagn: x must be (B, C, H, W), got ", x.sizes());
  bool nhwc = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(nhwc || x.is_contiguous(), "adagn: x must be contiguous or channels_last");
  return {x.size(0), x.size(1), x.size(2) * x.size(3), nhwc};
}

inline void adagn_check(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                        const std::optional<at::Tensor>& zscale,
                        const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "adagn: x must be (B, C, H, W), got ", x.sizes());
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, "adagn: groups=", groups, " must divide C=", C);
  for (const at::Tensor* t : {&scale, &shift}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({B, C}) && t->scalar_type() == at::kFloat &&
                    t->is_contiguous(),
                "adagn: scale/shift must be contiguous float32 (B, C)");
  }
  if (zscale) {
    TORCH_CHECK(zscale->sizes() == at::IntArrayRef({B, C}) &&
                    zscale->scalar_type() == at::kFloat && zscale->is_contiguous(),
                "adagn: zscale must be contiguous float32 (B, C)");
  }
  for (const auto* t : {&weight, &bias}) {
    if (*t) {
      TORCH_CHECK((*t)->sizes() == at::IntArrayRef({C}) && (*t)->scalar_type() == at::kFloat &&
                      (*t)->is_contiguous(),
                  "adagn: weight/bias must be contiguous float32 (C)");
    }
  }
}

// Per-(b, c) coefficients so that h = (x - mean_g) * a + c:
//   a = rstd_g w (1 + s)(1 + z),  c = (bias (1 + s) + shift)(1 + z); and k = w (1 + s)(1 + z).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> adagn_coefficients(
    const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& scale, const at::Tensor& shift,
    const std::optional<at::Tensor>& zscale, int64_t groups) {
  const int64_t B = scale.size(0), C = scale.size(1);
  at::Tensor one_s = scale + 1;
  at::Tensor one_z = zscale ? (*zscale + 1) : at::ones_like(scale);
  at::Tensor w = weight ? weight->view({1, C}) : at::ones({1, C}, scale.options());
  at::Tensor k = w * one_s * one_z;
  at::Tensor r = rstd.view({B, groups, 1}).expand({B, groups, C / groups}).reshape({B, C});
  at::Tensor a = k * r;
  at::Tensor c = bias ? (bias->view({1, C}) * one_s + shift) * one_z : shift * one_z;
  return {a.contiguous(), c.contiguous(), k.contiguous()};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adagn_param_grads(
    const at::Tensor& T1, const at::Tensor& T2, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& scale, const at::Tensor& shift,
    const std::optional<at::Tensor>& zscale) {
  const int64_t C = scale.size(1);
  at::Tensor one_s = scale + 1;
  at::Tensor one_z = zscale ? (*zscale + 1) : at::ones_like(scale);
  at::Tensor w = weight ? weight->view({1, C}) : at::ones({1, C}, scale.options());
  at::Tensor wT = bias ? w * T2 + bias->view({1, C}) * T1 : w * T2;
  at::Tensor dshift = one_z * T1;
  at::Tensor dscale = one_z * wT;
  at::Tensor dz = zscale ? one_s * wT + shift * T1 : at::empty({0}, scale.options());
  at::Tensor dw = weight ? (one_z * one_s * T2).sum(0) : at::empty({0}, scale.options());
  at::Tensor db = bias ? (one_z * one_s * T1).sum(0) : at::empty({0}, scale.options());
  return {dw, db, dscale, dshift, dz};
}

}  // namespace arcdae_fast
