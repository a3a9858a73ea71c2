// CUDA implementations of the arcdae_fast_C:: operators (CUDA dispatch key): argument checks,
// allocation and the stream, then the launchers of csrc/cuda/*.cu (launch.h). Compiled only
// when torch has CUDA; CI syntax-checks it against torch's CUDA headers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../adagn_common.h"
#include "launch.h"

namespace arcdae_fast {
namespace {

cuda::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::DType::F32;
    case at::kBFloat16: return cuda::DType::BF16;
    case at::kHalf: return cuda::DType::F16;
    default: TORCH_CHECK(false, "arcdae_fast (CUDA): unsupported dtype ", t.scalar_type());
  }
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "arcdae_fast (CUDA) ", what, ": ", cudaGetErrorString(err));
}

const float* opt_ptr(const std::optional<at::Tensor>& t) {
  return t ? t->const_data_ptr<float>() : nullptr;
}

AdaGNParams params(const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                   const at::Tensor& scale, const at::Tensor& shift,
                   const std::optional<at::Tensor>& zscale) {
  return {opt_ptr(weight), opt_ptr(bias), scale.const_data_ptr<float>(),
          shift.const_data_ptr<float>(), opt_ptr(zscale)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adagn_forward_cuda(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& scale, const at::Tensor& shift,
    const std::optional<at::Tensor>& zscale, int64_t groups, double eps) {
  at::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(x.device());
  adagn_check(x, scale, shift, zscale, weight, bias, groups);
  const AdaGNLayout L = adagn_layout(x);
  at::Tensor mean = at::empty({L.B, groups}, scale.options());
  at::Tensor rstd = at::empty({L.B, groups}, scale.options());
  at::Tensor y = at::empty_like(x);
  check(cuda::adagn_forward(dtype_of(x), x.const_data_ptr(), y.data_ptr(), mean.data_ptr<float>(),
                            rstd.data_ptr<float>(), params(weight, bias, scale, shift, zscale),
                            {L.B, L.C, L.HW, groups, L.nhwc}, static_cast<float>(eps),
                            c10::cuda::getCurrentCUDAStream()),
        "adagn_forward");
  return {y, mean, rstd, at::empty({0}, x.options())};  // sig: recomputed in backward
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
adagn_backward_cuda(const at::Tensor& dy_in, const at::Tensor& x,
                    const std::optional<at::Tensor>& weight,
                    const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                    const at::Tensor& shift, const std::optional<at::Tensor>& zscale,
                    const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& /*sig*/,
                    int64_t groups) {
  at::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(x.device());
  adagn_check(x, scale, shift, zscale, weight, bias, groups);
  const AdaGNLayout L = adagn_layout(x);
  const at::Tensor dy = dy_in.contiguous(L.nhwc ? at::MemoryFormat::ChannelsLast
                                                 : at::MemoryFormat::Contiguous);
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "adagn_backward: dy must match x");
  const cuda::AdaGNShape s{L.B, L.C, L.HW, groups, L.nhwc};
  at::Tensor T1 = at::empty({L.B, L.C}, scale.options());
  at::Tensor T2 = at::empty({L.B, L.C}, scale.options());
  at::Tensor work = at::empty({cuda::adagn_backward_work_floats(s)}, scale.options());
  at::Tensor dx = at::empty_like(x);
  check(cuda::adagn_backward(dtype_of(x), dy.const_data_ptr(), x.const_data_ptr(), dx.data_ptr(),
                             T1.data_ptr<float>(), T2.data_ptr<float>(), work.data_ptr<float>(),
                             mean.const_data_ptr<float>(), rstd.const_data_ptr<float>(),
                             params(weight, bias, scale, shift, zscale), s,
                             c10::cuda::getCurrentCUDAStream()),
        "adagn_backward (channels_last needs C <= 2048)");
  auto [dw, db, ds, dsh, dz] = adagn_param_grads(T1, T2, weight, bias, scale, shift, zscale);
  return {dx, dw, db, ds, dsh, dz};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> augment_forward_cuda(
    const at::Tensor& x, const at::Tensor& params_in, const at::Tensor& alpha_in,
    const at::Tensor& sigma_in, const std::optional<at::Tensor>& noise_in, int64_t seed,
    int64_t offset) {
  at::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "augment: x must be (B, 3, H, W)");
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const at::Tensor p = params_in.to(at::kFloat).contiguous();
  const at::Tensor a = alpha_in.to(at::kFloat).contiguous(), sg = sigma_in.to(at::kFloat).contiguous();
  TORCH_CHECK(p.sizes() == at::IntArrayRef({B, 9}) && a.numel() == B && sg.numel() == B,
              "augment: params must be (B, 9), alpha and sigma (B,)");
  const bool draw = !(noise_in && noise_in->defined());
  at::Tensor noise = draw ? at::empty_like(x) : noise_in->to(x.scalar_type());
  TORCH_CHECK(noise.sizes() == x.sizes(), "augment: noise must have x's shape");
  at::Tensor x_t = at::empty_like(x), view = at::empty_like(x);
  at::Tensor mean = at::empty({B}, p.options());
  check(cuda::augment_forward(dtype_of(x), x.const_data_ptr(), p.const_data_ptr<float>(),
                              a.const_data_ptr<float>(), sg.const_data_ptr<float>(),
                              noise.data_ptr(), draw, static_cast<uint64_t>(seed),
                              static_cast<uint64_t>(offset), x_t.data_ptr(), view.data_ptr(), B,
                              H, W, x.strides().data(), noise.strides().data(),
                              x_t.strides().data(), mean.data_ptr<float>(),
                              c10::cuda::getCurrentCUDAStream()),
        "augment_forward");
  // the third output is fresh or empty: never the caller's noise (no alias in the schema)
  return {x_t, view, draw ? noise : at::empty({0}, x.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast_C, CUDA, m) {
  m.impl("adagn_forward", &adagn_forward_cuda);
  m.impl("adagn_backward", &adagn_backward_cuda);
  m.impl("augment_forward", &augment_forward_cuda);
}

}  // namespace arcdae_fast
