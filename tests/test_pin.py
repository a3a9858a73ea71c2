"""The methods restructure changed no numbers: at fixed weights and random inputs, on CPU in
fp32 with every op on its reference, the arcdae method (two configurations) and the diffae
method give the loss terms and gradients that the engine gave before the move.

tests/golden/pin_fp32.pt was written by tests/golden/make_pin.py at commit 91b996b, from the
old `arcdae_fast.objective.ArcDAE` (old config keys; the old "diffae" preset). Differences
allowed: float32 reordering, <= 1e-5 relative (per loss term, per gradient tensor in norm),
except where ArcDAE's fd Jacobian divides a float32 difference by fd_eps = 1e-3: loss_jac and
the gradients it reaches carry the encoder's rounding times ~1/fd_eps, so on a CPU whose oneDNN
kernels round differently from the golden's (measured on an Intel Xeon with AMX: loss_jac
1.5e-4, gradients 4e-4; diffae and every other term <= 3.4e-7) they are held to 1e-3.
"""

from pathlib import Path

import pytest
import torch
from conftest import tiny_raw

from arcdae_fast.config import from_dict, legacy_model
from arcdae_fast.methods import build
from arcdae_fast.ops import use_backend

GOLDEN = torch.load(Path(__file__).with_name("golden") / "pin_fp32.pt", weights_only=False)
RTOL = 1e-5
FD_RTOL = 1e-3  # 1e-6 relative rounding of the encoder's output / fd_eps (1e-3)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def old_config(objective: dict) -> dict:
    """The golden's configuration, written in the old (flat, objective.*) keys (diffae: the
    part head's sizes left out; they are no key of DiffAE's)."""
    raw = tiny_raw("unused")
    d, e, m = raw["model"]["denoiser"], raw["model"]["encoder"], raw.pop("method")
    raw["model"] = legacy_model(
        {
            **{k: v for k, v in d.items()},
            **{
                f"enc_{k}": v
                for k, v in e.items()
                if k not in ("z_dim", "head_channels", "max_groups")
            },
            "z_dim": e["z_dim"],
            **{k: v for k, v in m.items() if k != "name" and objective["preset"] == "arcdae"},
            "dropout": 0.0,
        }
    )  # the old engine's network (arch adm_conv), written in the new keys
    raw["objective"] = dict(objective)
    raw["train"]["precision"] = "fp32"
    return raw


@pytest.mark.parametrize("variant", ["arcdae", "arcdae-variant", "diffae"])
def test_methods_compute_what_the_engine_computed_before_the_move(variant):
    gold = GOLDEN[variant]
    cfg = from_dict(old_config(gold["objective"]))  # the old keys, read through the aliases
    assert cfg.method.name == gold["objective"]["preset"]
    model = build(cfg)
    own = model.state_dict()
    # the old diffae preset kept an (unused) part head; DiffAE's encoder has none
    state = {k: v for k, v in GOLDEN["state"].items() if k in own}
    assert set(state) == set(own)
    model.load_state_dict(state)
    model.train()
    inputs = model.Inputs(**{k: gold["inputs"][k] for k in model.Inputs.__dataclass_fields__})
    with use_backend("reference"):
        terms = model(gold["x0"], inputs, **model.flags(0))
    terms["loss"].backward()
    assert set(terms) <= set(gold["terms"]) and "loss" in terms
    for k, v in terms.items():
        tol = FD_RTOL if k == "loss_jac" else RTOL
        assert rel_err(v.detach(), gold["terms"][k]) <= tol, (k, v.item(), gold["terms"][k])
    for k in set(gold["terms"]) - set(terms):  # terms the old engine logged as zeros
        assert gold["terms"][k] == 0, k
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    want = {n: g for n, g in gold["grads"].items() if n in own}
    assert grads.keys() == want.keys()
    worst = max(rel_err(grads[n], want[n]) for n in want)
    assert worst <= (FD_RTOL if "loss_jac" in terms else RTOL), worst
