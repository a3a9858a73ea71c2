"""Compile every Triton kernel for Hopper (sm_90) without a GPU, with the tile configs the
launchers pick, and check shared memory fits. Run by bench/gpu_check.sh's triton-sm90 stage
(in CI by its dry run, tests/test_gpu_check.py; TRITON_INTERPRET must be unset so that
@triton.jit yields compilable kernels).

Prints one line per kernel: name, dtype, shared bytes; exits non-zero on any failure.
"""

import sys
import warnings

import torch
import triton
from arcdae_fast.kernels import attn_pool, augment, infonce
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

warnings.filterwarnings("ignore")
SMEM_LIMIT = 232448  # Hopper: 227 KB of shared memory per block
F32 = "*fp32"


def compile_sm90(kernel, ptrs: dict, floats: tuple, constexprs: dict) -> int:
    sig = {
        n: "constexpr" if n in constexprs else ptrs.get(n, "fp32" if n in floats else "i32")
        for n in kernel.arg_names
    }
    ck = triton.compile(
        ASTSource(kernel, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32)
    )
    return ck.metadata.shared


def main() -> int:
    failures = 0
    for dtype, tname in ((torch.bfloat16, "*bf16"), (torch.float32, "*fp32")):
        jobs = []
        for d in (128, 512):
            cfg = infonce.config(d, dtype, interpret=False)
            jobs.append(
                (
                    f"infonce._lse_kernel D={d}",
                    infonce._lse_kernel,
                    dict(Q=tname, K=tname, INV_Q=F32, INV_K=F32, LSE=F32),
                    ("scale",),
                    cfg,
                )
            )
            jobs.append(
                (
                    f"infonce._grad_kernel D={d}",
                    infonce._grad_kernel,
                    dict(
                        Q=tname,
                        K=tname,
                        INV_Q=F32,
                        INV_K=F32,
                        LSE_OWN=F32,
                        C_OWN=F32,
                        LSE_OTHER=F32,
                        C_OTHER=F32,
                        DQN=F32,
                    ),
                    ("scale",),
                    dict(cfg, HAS_OWN=True, HAS_OTHER=True, BLOCK_DO=cfg["BLOCK_DK"]),
                )
            )
        for c in (512, 1024):
            cfg = attn_pool.config(c, 8, dtype, interpret=False)
            jobs.append(
                (
                    f"attn_pool._fwd_kernel C={c}",
                    attn_pool._fwd_kernel,
                    dict(X=tname, QK=F32, OUT=tname, LSE=F32),
                    (),
                    cfg,
                )
            )
            jobs.append(
                (
                    f"attn_pool._bwd_kernel C={c}",
                    attn_pool._bwd_kernel,
                    dict(X=tname, QK=F32, DOUT=tname, DELTA=F32, LSE=F32, DX=tname, DQK=F32),
                    (),
                    cfg,
                )
            )
        cfg = augment.config(128, 128)
        jobs.append(
            (
                "augment._mean_gray_kernel",
                augment._mean_gray_kernel,
                dict(X=tname, P=F32, MEAN=F32),
                (),
                cfg,
            )
        )
        yiq = ("ti0", "ti1", "ti2", "tq0", "tq1", "tq2", "vri", "vrq", "vgi", "vgq", "vbi", "vbq")
        for draw in (False, True):
            jobs.append(
                (
                    f"augment._augment_kernel draw_noise={draw}",
                    augment._augment_kernel,
                    dict(
                        X=tname,
                        P=F32,
                        MEAN=F32,
                        ALPHA=F32,
                        SIGMA=F32,
                        NOISE=tname,
                        XT=tname,
                        VIEW=tname,
                    ),
                    yiq,
                    dict(cfg, DRAW_NOISE=draw),
                )
            )
        for name, kernel, ptrs, floats, constexprs in jobs:
            try:
                shared = compile_sm90(kernel, ptrs, floats, constexprs)
                ok = shared <= SMEM_LIMIT
                print(f"{'ok  ' if ok else 'FAIL'} {name} {tname[1:]} shared={shared}")
                failures += not ok
            except Exception as e:  # noqa: BLE001 - report every kernel, then fail
                print(f"FAIL {name} {tname[1:]}: {type(e).__name__}: {e}")
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
