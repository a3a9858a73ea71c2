// arcdae_fast._C: the operator schemas, in one place (torchvision-style), in the namespace
// arcdae_fast_C: <op>_forward / <op>_backward, <op> being the one name of the op everywhere
// (arcdae_fast/ops/<op>.py registers the custom ops arcdae_fast::<op> over these).
// CPU kernels: csrc/cpu/<op>.cpp (TORCH_LIBRARY_IMPL(arcdae_fast_C, CPU, m)).
// CUDA kernels: csrc/cuda/*.cu (no torch headers) + csrc/cuda/bindings.cpp (CUDA key).
// These are the primitives behind the Python custom ops in arcdae_fast/ops/ (backends
// "cpp" and "cuda"); shapes and dtypes are validated there, and again here.
#include <torch/library.h>

TORCH_LIBRARY(arcdae_fast_C, m) {
  // AdaGN: y = SiLU(h), h = (((x - mean) * rstd * w + b) * (1 + scale) + shift) * (1 + zscale)
  // with GroupNorm statistics per (sample, group). Returns (y, mean (B, G), rstd (B, G), sig):
  // sig = sigmoid(h) like x where the backend saves it for backward (CPU, float32: the
  // backward then needs no exp), else an empty tensor (recomputed).
  m.def("adagn_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor scale, Tensor shift, "
        "Tensor? zscale, int groups, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  // -> (dx, dweight, dbias, dscale, dshift, dzscale); absent inputs get empty gradients.
  m.def("adagn_backward(Tensor dy, Tensor x, Tensor? weight, Tensor? bias, Tensor scale, "
        "Tensor shift, Tensor? zscale, Tensor mean, Tensor rstd, Tensor sig, int groups) -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // TAPA augmentation + noising (SPEC section 2) -> (x_t, view, noise); noise=None draws it
  // (CUDA: Philox from (seed, offset); CPU: a torch generator seeded from them) and returns
  // it; given noise, the third output is empty (outputs never alias inputs).
  m.def("augment_forward(Tensor x, Tensor params, Tensor alpha, Tensor sigma, Tensor? noise, "
        "int seed, int offset) -> (Tensor, Tensor, Tensor)");
  // InfoNCE primitives (see arcdae_fast/ops/infonce.py): row log-sum-exp of the logits
  // s_ij = <q_i, k_j> inv_q_i inv_k_j scale, and the normalized-row gradient, tile by tile.
  m.def("infonce_forward(Tensor q, Tensor k, Tensor inv_q, Tensor inv_k, float scale) -> Tensor");
  m.def("infonce_backward(Tensor q, Tensor k, Tensor inv_q, Tensor inv_k, float scale, "
        "Tensor? lse_own, Tensor? c_own, Tensor? lse_other, Tensor? c_other) -> Tensor");
  // Attention pooling primitives with folded queries qk (K, C): (out, lse) and (dx, dqk).
  m.def("attn_pool_forward(Tensor x, Tensor qk) -> (Tensor, Tensor)");
  m.def("attn_pool_backward(Tensor dout, Tensor x, Tensor qk, Tensor delta, Tensor lse) -> "
        "(Tensor, Tensor)");
}
