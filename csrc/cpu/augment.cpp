// TAPA augmentation + noising on CPU (SPEC section 2), following the reference arithmetic:
// a pre-pass for each image's mean gray (of the cropped view, before brightness), then one
// pass per output pixel: bilinear crop/flip (border clamp; source coordinates are separable,
// precomputed per row and column), brightness, contrast, saturation, hue (YIQ rotation),
// clamp, x_t = alpha * view + sigma * noise. Any strides. Threads: at::parallel_for.
// noise=None draws N(0, 1) with a CPU generator seeded from (seed, offset) exactly as the
// Python reference does, so both give the same noise.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../kernel_math.h"

namespace arcdae_fast {
namespace {

constexpr float kGray[3] = {0.299f, 0.587f, 0.114f};

template <typename T>
struct Image {  // one sample of x with its strides
  const T* p;
  int64_t sc, sh, sw;
  float at01(int64_t c, int64_t i, int64_t j) const {
    return (static_cast<float>(p[c * sc + i * sh + j * sw]) + 1.f) * 0.5f;
  }
  float sample(int64_t c, const Tap& ty, const Tap& tx) const {
    return aug_bilinear(at01(c, ty.lo, tx.lo), at01(c, ty.hi, tx.lo), at01(c, ty.lo, tx.hi),
                        at01(c, ty.hi, tx.hi), ty, tx);
  }
};

template <typename T>
void augment_kernel(const at::Tensor& x, const float* P, const float* alpha, const float* sigma,
                    const at::Tensor& noise, at::Tensor& xt, at::Tensor& view) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  static const Yiq yiq = yiq_constants();
  auto xs = x.strides(), ns = noise.strides(), os = xt.strides();
  TORCH_CHECK(view.strides() == xt.strides(), "augment: x_t and view must share a layout");
  const T* xp = x.const_data_ptr<T>();
  const T* np_ = noise.const_data_ptr<T>();
  T *tp = xt.data_ptr<T>(), *vp = view.data_ptr<T>();
  auto taps = [&](int64_t b) {
    const float* p = P + b * 9;
    std::vector<Tap> tx(W), ty(H);
    for (int64_t j = 0; j < W; ++j) tx[j] = aug_tap(j, W, p[0], p[2], p[4] > 0.5f);
    for (int64_t i = 0; i < H; ++i) ty[i] = aug_tap(i, H, p[1], p[3], false);
    return std::make_pair(std::move(tx), std::move(ty));
  };
  // 1. mean gray of each cropped [0, 1] view (before brightness)
  std::vector<float> mean(B);
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const auto [tx, ty] = taps(b);
      const Image<T> im{xp + b * xs[0], xs[1], xs[2], xs[3]};
      double total = 0.0;
      for (int64_t i = 0; i < H; ++i) {
        float row = 0.f;
        for (int64_t j = 0; j < W; ++j)
          for (int c = 0; c < 3; ++c) row += kGray[c] * im.sample(c, ty[i], tx[j]);
        total += row;
      }
      mean[b] = static_cast<float>(total / static_cast<double>(H * W));
    }
  });
  // 2. the view and x_t, per (image, row)
  at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    int64_t cached = -1;
    std::vector<Tap> tx, ty;
    for (int64_t bi = lo; bi < hi; ++bi) {
      const int64_t b = bi / H, i = bi % H;
      if (b != cached) {
        std::tie(tx, ty) = taps(b);
        cached = b;
      }
      const float* p = P + b * 9;
      const float a = alpha[b], s = sigma[b];
      const Image<T> im{xp + b * xs[0], xs[1], xs[2], xs[3]};
      for (int64_t j = 0; j < W; ++j) {
        float rgb[3];
        for (int c = 0; c < 3; ++c) rgb[c] = im.sample(c, ty[i], tx[j]);
        aug_color(rgb, p, mean[b], yiq);
        for (int c = 0; c < 3; ++c) {
          const float out = aug_clamp01(rgb[c]) * 2.f - 1.f;
          const int64_t o = b * os[0] + c * os[1] + i * os[2] + j * os[3];
          const float eps = static_cast<float>(np_[b * ns[0] + c * ns[1] + i * ns[2] + j * ns[3]]);
          vp[o] = static_cast<T>(out);
          tp[o] = static_cast<T>(a * out + s * eps);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> augment_forward_cpu(
    const at::Tensor& x, const at::Tensor& params, const at::Tensor& alpha,
    const at::Tensor& sigma, const std::optional<at::Tensor>& noise_in, int64_t seed,
    int64_t offset) {
  at::NoGradGuard no_grad;  // a primitive: the Python custom op owns autograd
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "augment: x must be (B, 3, H, W), got ",
              x.sizes());
  const int64_t B = x.size(0);
  TORCH_CHECK(params.sizes() == at::IntArrayRef({B, 9}), "augment: params must be (B, 9)");
  TORCH_CHECK(alpha.numel() == B && sigma.numel() == B, "augment: alpha/sigma must be (B,)");
  const at::Tensor P = params.to(at::kFloat).contiguous();
  const at::Tensor A = alpha.to(at::kFloat).contiguous(), S = sigma.to(at::kFloat).contiguous();
  at::Tensor noise;
  if (noise_in && noise_in->defined()) {
    TORCH_CHECK(noise_in->sizes() == x.sizes(), "augment: noise must have x's shape");
    noise = noise_in->to(x.scalar_type());
  } else {  // same generator and draw as the Python reference
    auto gen = at::make_generator<at::CPUGeneratorImpl>(
        static_cast<uint64_t>(seed) * 1000003ull + static_cast<uint64_t>(offset));
    noise = at::randn(x.sizes(), gen, x.options().dtype(at::kFloat)).to(x.scalar_type());
  }
  at::Tensor xt = at::empty_like(x), view = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "augment", [&] {
    augment_kernel<scalar_t>(x, P.const_data_ptr<float>(), A.const_data_ptr<float>(),
                             S.const_data_ptr<float>(), noise, xt, view);
  });
  // the third output is fresh or empty: never the caller's noise (no alias in the schema)
  const bool given = noise_in && noise_in->defined();
  return {xt, view, given ? at::empty({0}, x.options()) : noise};
}

}  // namespace

TORCH_LIBRARY_IMPL(arcdae_fast_C, CPU, m) { m.impl("augment_forward", &augment_forward_cpu); }

}  // namespace arcdae_fast
