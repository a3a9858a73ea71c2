"""DDP on CPU with and without restriding 1x1-convolution weights like their gradients
(distributed.match_grad_strides; the trainer does not, see distributed.wrap_ddp):
2 gloo ranks train the quickstart for --steps steps, alternating the two variants for
--rounds rounds; reports img/s (steps after the first log window). The restride removes
DDP's gradient copy for those weights but slows oneDNN's convolutions more than it saves.

    python bench/ddp_strides.py [--steps 40] [--rounds 2]
    python bench/ddp_strides.py --count     # what DDP copies: the mismatched gradients' size

--count runs one backward of the quickstart and of FFHQ-64's network (at 32 px) per precision
and counts the trained parameters whose gradient's strides differ from the parameter's: the
ones DDP copies into its bucket each step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(restride: bool, argv: list[str]) -> int:
    from arcdae_fast import distributed
    from arcdae_fast.train import main

    if restride:  # the alternative: weights restrided before DDP builds its buckets
        wrap = distributed.wrap_ddp

        def restrided(module):
            distributed.match_grad_strides(module)
            return wrap(module)

        distributed.wrap_ddp = restrided
    return main(argv)


def run(restride: bool, steps: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(HERE)]
    cmd += ["--worker", "--restride" if restride else "--no-restride", "--"]
    cmd += ["--config", "quickstart.yaml", "--out", str(out), "--max-steps", str(steps)]
    cmd += ["--no-progress", "train.parallel=ddp", "train.device=cpu", "train.step=eager"]
    cmd += ["train.sample_every=0", f"train.ckpt_every={steps}", "train.log_every=10"]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["img_per_s"] for r in rows[1:])


def count() -> None:
    import torch

    from arcdae_fast import methods
    from arcdae_fast.config import load_config

    for name, res, batch in (("quickstart", 32, 4), ("ffhq64", 32, 2)):
        cfg = load_config(name, ["train.device=cpu", f"data.resolution={res}"])
        torch.manual_seed(0)
        method = methods.build(cfg)
        x = torch.rand(batch, 3, res, res) * 2 - 1
        inputs = method.draw_inputs(x, torch.Generator().manual_seed(0))
        for precision in ("fp32", "bf16"):
            method.zero_grad(set_to_none=True)
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                loss = method(x, inputs)["loss"]
            loss.backward()
            ps = [p for p in method.trainable().parameters() if p.grad is not None]
            bad = [p for p in ps if p.grad.stride() != p.stride()]
            n, nb = sum(p.numel() for p in ps), sum(p.numel() for p in bad)
            shapes = sorted({tuple(p.shape) for p in bad})
            print(
                f"{name} at {res} px, {precision}: {len(bad)} of {len(ps)} trained parameters "
                f"copied, {nb:,} of {n:,} elements ({100 * nb / n:.2f}%, {4 * nb / 1e6:.2f} MB "
                f"per step); shapes {shapes}"
            )


def main() -> int:
    if "--count" in sys.argv:
        count()
        return 0
    if "--worker" in sys.argv:
        i = sys.argv.index("--")
        return worker("--restride" in sys.argv[:i], sys.argv[i + 1 :])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    got: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for restride in (False, True):
                speed = run(restride, a.steps, Path(tmp) / f"{r}{restride}")
                got[restride].append(speed)
                print(f"round {r} restride={restride}: {speed:.1f} img/s", flush=True)
    before, after = statistics.median(got[False]), statistics.median(got[True])
    print(f"without restride (the trainer's): {before:.1f} img/s")
    print(f"with restride:                    {after:.1f} img/s")
    print(f"ratio with/without: {after / before:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
