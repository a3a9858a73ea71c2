"""Weights as safetensors: the portable, code-free form of a run's networks.

Every single-file checkpoint `ckpt_XXXXXXXX.pt` (the training state: optimizer, scheduler,
config) gets a sidecar `ckpt_XXXXXXXX.safetensors` with the method's weights (`model.*`) and
the evaluation EMA (`ema.*`), the config, step and method name in its metadata; evaluation,
inference and `api.load` read that and never the training state. `python -m
arcdae_fast.export --format safetensors` writes an inference folder: `config.yaml`,
`model.safetensors`, `ema.safetensors` (and `latent.safetensors`, the latent DDIM, when the
run has one), which `api.load` / `session.load_run` read as a run folder. A safetensors file
holds only tensors and strings: reading it runs no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .checkpoint import atomic_write
from .errors import UserError

SUFFIX = ".safetensors"
MODEL, EMA, LATENT = "model.safetensors", "ema.safetensors", "latent.safetensors"


def sidecar(ckpt: Path) -> Path:
    """The safetensors file beside a checkpoint file."""
    return Path(ckpt).with_suffix(SUFFIX)


def _flat(groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing storage: each gets its own contiguous CPU copy
    return {
        f"{g}.{k}": v.detach().to("cpu", copy=True).contiguous()
        for g, sd in groups.items()
        for k, v in sd.items()
    }


def write(path: Path, groups: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> None:
    """Atomically write state dicts {prefix: state_dict} as one safetensors file; `meta`'s
    values are stored as JSON strings."""
    blob = save(_flat(groups), metadata={k: json.dumps(v) for k, v in meta.items()})
    atomic_write(path, lambda f: f.write(blob), "weights")


def read(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """({prefix: state_dict}, metadata) of a file `write` made."""
    path = Path(path)
    try:
        with safe_open(path, "pt") as f:  # one read: tensors and metadata
            flat = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
            raw = f.metadata() or {}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors weights file ({e})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        g, _, rest = k.partition(".")
        groups.setdefault(g, {})[rest] = v
    return groups, meta


def save_checkpoint_weights(ckpt: Path, state: dict[str, Any]) -> Path:
    """The sidecar of a checkpoint whose state (session.run_state) holds model and ema."""
    path = sidecar(ckpt)
    meta = {k: state.get(k) for k in ("format", "step", "method", "config", "torch_version")}
    write(path, {"model": state["model"], "ema": state["ema"]}, meta)
    return path


def read_checkpoint_weights(path: Path) -> dict[str, Any]:
    """A sidecar as the dict session.load_run reads from a checkpoint (no optimizer)."""
    groups, meta = read(path)
    missing = [g for g in ("model", "ema") if g not in groups]
    if missing or "config" not in meta:
        raise UserError(f"{path} lacks {', '.join(missing) or 'its config'}: not a run's weights")
    return {**meta, "model": groups["model"], "ema": groups["ema"], "optimizer": None}


def is_inference_folder(folder: Path) -> bool:
    return (Path(folder) / MODEL).is_file() and (Path(folder) / EMA).is_file()


def read_inference_folder(folder: Path) -> dict[str, Any]:
    """An export folder (export --format safetensors) as a checkpoint dict."""
    folder = Path(folder)
    model, meta = read(folder / MODEL)
    ema, _ = read(folder / EMA)
    if "model" not in model or "ema" not in ema or "config" not in meta:
        raise UserError(f"{folder} is not an inference folder of python -m arcdae_fast.export")
    return {**meta, "model": model["model"], "ema": ema["ema"], "optimizer": None}


def write_inference_folder(out: Path, state: dict[str, Any], latent: Any = None) -> list[Path]:
    """config.yaml, model.safetensors, ema.safetensors (+ latent.safetensors) under `out`."""
    import yaml

    out = Path(out)
    meta = {k: state[k] for k in ("format", "step", "method", "config")}
    write(out / MODEL, {"model": state["model"]}, meta)
    write(out / EMA, {"ema": state["ema"]}, meta)
    atomic_write(
        out / "config.yaml",
        lambda f: f.write(yaml.safe_dump(state["config"], sort_keys=False).encode()),
        "config",
    )
    paths = [out / "config.yaml", out / MODEL, out / EMA]
    if latent is not None:
        ls = latent.state()
        write(out / LATENT, {"latent": ls["weights"]}, {k: ls[k] for k in ("shape", "settings")})
        paths.append(out / LATENT)
    return paths


def read_latent_state(path: Path) -> dict[str, Any]:
    """latent.safetensors as the dict LatentDDIM.from_state takes."""
    groups, meta = read(path)
    if "latent" not in groups or "shape" not in meta:
        raise UserError(f"{path} is not a latent DDIM's weights")
    return {"shape": meta["shape"], "settings": meta["settings"], "weights": groups["latent"]}
