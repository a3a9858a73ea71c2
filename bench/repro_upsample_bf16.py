"""A standalone reproducer of the Inductor bug behind DGAE's failed compiled-bf16 step
agreement (models/layers.py `upsample` works around it): on CPU, conv2d(stride 2) ->
F.interpolate(nearest, x2) -> conv2d in bf16, compiled with Inductor, gives the first
convolution's weight an all-zero gradient; eager gives the right one. With stride 1, without
the second convolution, or with the upsampling written as expand + reshape, the compiled
gradient is right. Prints both norms and exits 1 while the bug is present.

    python bench/repro_upsample_bf16.py        # torch 2.13.0+cpu, AMD EPYC (AVX512-BF16): 1
"""

import sys

import torch
import torch.nn.functional as F

torch.manual_seed(0)
w1 = torch.randn(8, 8, 3, 3, requires_grad=True)
w2 = torch.randn(8, 8, 3, 3)
x = torch.randn(4, 8, 8, 8)


def f(x, w1, w2):
    bf = torch.bfloat16
    h = F.conv2d(x.to(bf), w1.to(bf), stride=2, padding=1)
    h = F.interpolate(h, scale_factor=2.0, mode="nearest")
    return F.conv2d(h, w2.to(bf), padding=1).float().square().mean()


def grad_norm(fn) -> float:
    w1.grad = None
    fn(x, w1, w2).backward()
    return w1.grad.norm().item()


eager, compiled = grad_norm(f), grad_norm(torch.compile(f))
print(f"torch {torch.__version__}: |grad w1| eager {eager:.4e}, inductor {compiled:.4e}")
sys.exit(0 if abs(compiled - eager) <= 1e-2 * eager else 1)
