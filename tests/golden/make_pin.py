"""Writes tests/golden/pin_fp32.pt: loss terms and gradients of the tiny test configuration
for the arcdae and diffae presets on CPU in fp32, at fixed weights and random inputs.

The committed file was produced by this script at commit 91b996b (before the methods
restructure: `arcdae_fast.objective.ArcDAE`); tests/test_pin.py checks that the engine still
computes the same function. It uses the old API, so it runs only at that commit:
    git worktree add /tmp/old 91b996b && cd /tmp/old && python tests/golden/make_pin.py
"""

import os
import sys
from pathlib import Path

os.environ["ARCDAE_FAST_BACKEND"] = "reference"  # every op on its eager reference

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arcdae_fast.objective import ArcDAE  # noqa: E402
from conftest import tiny_raw  # noqa: E402

from arcdae_fast.config import from_dict  # noqa: E402

VARIANTS = {
    "arcdae": {"preset": "arcdae"},
    "arcdae-variant": {
        "preset": "arcdae",
        "symmetric": True,
        "cond": "teacher",
        "share_noise": True,
        "jac_probes": 2,
    },
    "diffae": {"preset": "diffae"},
}


def main() -> None:
    torch.use_deterministic_algorithms(True)
    out = {"state": None}
    for name, objective in VARIANTS.items():
        raw = tiny_raw("unused")
        raw["model"]["dropout"] = 0.0
        raw["objective"] = dict(objective)
        raw["train"]["precision"] = "fp32"
        cfg = from_dict(raw)
        torch.manual_seed(0)
        model = ArcDAE(cfg)
        g = torch.Generator().manual_seed(1)
        x0 = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
        inp = model.draw_inputs(x0, g)
        if out["state"] is None:  # the same seed builds the same weights for every variant
            out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(out["state"], strict=False)  # diffae: no teacher
        terms = model(x0, inp, True)
        terms["loss"].backward()
        out[name] = {
            "objective": objective,
            "x0": x0,
            "inputs": {k: getattr(inp, k) for k in inp.__dataclass_fields__},
            "terms": {k: v.detach() for k, v in terms.items()},
            "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        }
        print(name, {k: round(float(v.detach()), 6) for k, v in terms.items()})
    path = Path(__file__).with_name("pin_fp32.pt")
    torch.save(out, path)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
