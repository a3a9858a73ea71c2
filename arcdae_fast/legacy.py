"""Checkpoints written before the method registry (format 1: `arcdae_fast.objective.ArcDAE`,
flat `model.*` and `objective.*` config keys) upgraded to the current format, so that old runs
resume bit-exactly.

The old engine had one class for both presets, so an old run becomes an `arcdae` run with its
recorded objective values: with the old `diffae` preset's values (no teacher, no TAPA,
lambda_align = lambda_jac = 0, cond=clean) the arcdae method computes the old function, part
head included, and the optimizer state still matches the parameters.
"""

from __future__ import annotations

import copy
from typing import Any

from .config.aliases import legacy_model
from .config.load import from_dict


def upgrade_config(old: dict[str, Any]) -> dict[str, Any]:
    """A format-1 `config` dict -> the current `Config.to_dict()` layout."""
    raw = copy.deepcopy(old)
    objective = raw.setdefault("objective", {})
    objective["preset"] = "arcdae"  # the class both old presets ran (see the module docstring)
    model = legacy_model(raw.get("model") or {})
    if model.pop("fused_adagn", True) is False:  # the unfused AdaGN is now a backend choice
        objective["backend"] = "adagn=reference"
    raw["model"] = model
    return from_dict(raw).to_dict()


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """A loaded checkpoint in the current format (a shallow copy when it was old)."""
    if state.get("format", 1) >= 2:
        return state
    out = dict(state)
    out["config"] = upgrade_config(state["config"])
    out["method"] = out["config"]["method"]["name"]
    out["format"] = 2
    return out
