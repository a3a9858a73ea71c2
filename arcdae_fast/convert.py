"""`python -m arcdae_fast.convert diffae CKPT --out DIR [--config PRESET] [--method diffae]
[--step N] [--no-optimizer] [--trust-pickle] [section.key=value ...]`

Turns a checkpoint of DiffAE's own code (phizaz/diffae: its Lightning `last.ckpt`, with the
`model.*` and `ema_model.*` weights of the BeatGANs autoencoder; or a bare state dict with
those keys) into a run folder of this engine: `config.yaml`, `checkpoints/ckpt_<step>.pt`,
`convert.json` (where it came from). The trainer resumes it (`python -m arcdae_fast.train
--config DIR/config.yaml --out DIR`), also with `--method arcdae` to fine-tune with the
ArcDAE objective, and evaluation reads it like any run.

- The network is the config's (default: the preset of the checkpoint's image size, ffhq.yaml
  for 128 px, ffhq64.yaml for 64 px) in `model.arch: diffae`; every tensor's name and shape is
  checked against the key table below: a missing, unexpected or mismatched key is an error
  naming it. `latent_net.*` (DiffAE's second-stage latent DDIM), `x_T`, `conds_mean` and
  `conds_std` are not part of the autoencoder and are left out (listed in convert.json).
- `ema_model.*` becomes the evaluation EMA; with `--method arcdae` the teacher starts as the
  EMA encoder, and the part head (not in DiffAE) keeps its fresh initialisation.
- The checkpoint's step is DiffAE's `global_step` (so the EMA and LR schedules continue where
  DiffAE stopped) unless `--step` says otherwise. Its Adam moments (`optimizer_states`, over
  `model.parameters()` in DiffAE's order) become AdamW's (weight decay 0: the same update);
  `--no-optimizer` starts the optimizer fresh.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from . import checkpoint, errors, methods, session
from . import log as logs
from .config.load import load_config
from .config.schema import Config
from .ema import frozen_copy
from .errors import UserError
from .methods import Method
from .models.layers import AttentionBlock, ResBlock
from .step import optimizer_for

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


class ConvertError(UserError, ValueError):
    """A checkpoint that does not fit the network; reported without a traceback."""


# ---- the key table (from DiffAE's model/unet.py, unet_autoenc.py, blocks.py) ---------------
# our ResBlock / AttentionBlock submodule -> DiffAE's (ResBlock: in_layers = [GroupNorm32,
# SiLU, conv], emb_layers = [SiLU, Linear], cond_emb_layers = [SiLU, Linear], out_layers =
# [GroupNorm32, SiLU, Dropout, zero conv], skip_connection; AttentionBlock: norm, qkv (Conv1d),
# proj_out (Conv1d)).
RESBLOCK = {
    "in_norm": "in_layers.0",
    "in_conv": "in_layers.2",
    "emb": "emb_layers.1",
    "zproj": "cond_emb_layers.1",
    "out_norm": "out_layers.0",
    "out_conv": "out_layers.3",
    "skip": "skip_connection",
}
ATTENTION = {"norm": "norm", "qkv": "qkv", "proj": "proj_out"}
# the network's own layers: denoiser (BeatGANsAutoencModel minus its encoder) and encoder
DENOISER = {"time_embed.0": "time_embed.time_embed.0", "time_embed.2": "time_embed.time_embed.2"}
DENOISER_TAIL = {"out_norm": "out.0", "out_conv": "out.2"}
ENCODER_TAIL = {"out_norm": "out.0", "holo_head": "out.3"}
STAGES = {"down": "input_blocks", "middle": "middle_block", "up": "output_blocks"}
IGNORED = ("latent_net.", "x_T", "conds_mean", "conds_std")


@dataclass(frozen=True)
class Entry:
    ours: str  # key in method.trainable()'s state dict ("denoiser.down.1.0.in_conv.weight")
    theirs: str  # key in DiffAE's model state dict ("input_blocks.1.0.in_layers.2.weight")
    shape: tuple[int, ...]  # DiffAE's shape

    def to_theirs(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.shape)


def _module_pairs(net: nn.Module, kind: str) -> list[tuple[str, str, nn.Module]]:
    """(our module path, DiffAE's, module) for every parameter-holding leaf of a network."""
    pairs = [(o, t, net.get_submodule(o)) for o, t in DENOISER.items()] if kind == "den" else []
    for ours, theirs in STAGES.items():
        if not hasattr(net, ours):
            continue
        stages = [net.middle] if ours == "middle" else list(getattr(net, ours))
        for k, stage in enumerate(stages):
            pre_o = ours if ours == "middle" else f"{ours}.{k}"
            pre_t = theirs if ours == "middle" else f"{theirs}.{k}"
            for i, block in enumerate(stage):
                if isinstance(block, nn.Conv2d):  # conv_in
                    pairs.append((f"{pre_o}.{i}", f"{pre_t}.{i}", block))
                    continue
                table = RESBLOCK if isinstance(block, ResBlock) else ATTENTION
                if not isinstance(block, (ResBlock, AttentionBlock)):
                    raise ConvertError(
                        f"{type(block).__name__} at {pre_o}.{i} has no counterpart in DiffAE's "
                        "network; convert into model.arch=diffae"
                    )
                for sub_o, sub_t in table.items():
                    sub = getattr(block, sub_o, None)
                    if sub is not None and any(True for _ in sub.parameters()):
                        pairs.append((f"{pre_o}.{i}.{sub_o}", f"{pre_t}.{i}.{sub_t}", sub))
    tail = DENOISER_TAIL if kind == "den" else ENCODER_TAIL
    pairs += [(o, t, net.get_submodule(o)) for o, t in tail.items()]
    return pairs


def key_table(method: Method) -> list[Entry]:
    """Every tensor of the DiffAE autoencoder with our name, in DiffAE's state-dict order
    (the denoiser's registration order, then the encoder's). The part head (ArcDAE's) and
    any teacher are not in it."""
    nets = method.trainable()
    out = []
    for name, kind, prefix in (("denoiser", "den", ""), ("encoder", "enc", "encoder.")):
        for ours, theirs, mod in _module_pairs(nets[name], kind):
            for pname, p in mod.named_parameters(recurse=False):
                shape = tuple(p.shape)
                attn = isinstance(_parent(nets[name], ours), AttentionBlock)
                if pname == "weight" and attn and isinstance(mod, nn.Conv2d):
                    shape = shape[:-1]  # DiffAE's attention uses Conv1d
                elif pname == "weight" and ours == "holo_head":
                    shape = (*shape, 1, 1)  # DiffAE's encoder head is a 1x1 conv
                out.append(Entry(f"{name}.{ours}.{pname}", f"{prefix}{theirs}.{pname}", shape))
    return out


def _parent(net: nn.Module, path: str) -> nn.Module:
    return net.get_submodule(path.rpartition(".")[0]) if "." in path else net


def to_diffae(state: dict[str, torch.Tensor], table: list[Entry]) -> dict[str, torch.Tensor]:
    """Our trainable() state dict -> DiffAE's model state dict (names and shapes)."""
    return {e.theirs: e.to_theirs(state[e.ours]) for e in table}


def from_diffae(
    theirs: dict[str, torch.Tensor], table: list[Entry], ours: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """DiffAE's model state dict -> ours, checked: every key of the table present with its
    shape, no key left over; `ours` gives the target shapes; `what` names the source."""
    known = {e.theirs for e in table}
    extra = sorted(k for k in theirs if k not in known)
    if extra:
        raise ConvertError(
            f"{what}: unexpected key {extra[0]!r} ({len(extra)} in all) that this network has "
            "no place for; is the config (sizes, model.arch) the checkpoint's?"
        )
    out = {}
    for e in table:
        if e.theirs not in theirs:
            raise ConvertError(f"{what}: missing key {e.theirs!r} (our {e.ours})")
        t = theirs[e.theirs]
        if tuple(t.shape) != e.shape:
            raise ConvertError(
                f"{what}: key {e.theirs!r} has shape {tuple(t.shape)}, this network expects "
                f"{e.shape}; is the config (sizes, model.arch) the checkpoint's?"
            )
        out[e.ours] = t.detach().reshape(ours[e.ours].shape).to(ours[e.ours].dtype).clone()
    return out


# ---- reading the checkpoint -------------------------------------------------------------
def read_checkpoint(path: Path, trust_pickle: bool = False) -> dict[str, Any]:
    if not Path(path).is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ConvertError(
            f"{path} holds more than tensors and plain data ({str(e).splitlines()[0]}); if you "
            "trust the file, pass --trust-pickle"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ConvertError(f"{path} is not a readable torch checkpoint: {e}") from None
    if not isinstance(ckpt, dict):
        raise ConvertError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if "state_dict" not in ckpt and any(str(k).startswith("model.") for k in ckpt):
        ckpt = {"state_dict": ckpt}  # a bare state dict
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ConvertError(f"{path} has no 'state_dict' (DiffAE's Lightning checkpoints do)")
    return ckpt


def split_state(state: dict[str, Any]) -> tuple[dict, dict, list[str]]:
    """DiffAE's LitModel state -> (model.*, ema_model.*, keys left out)."""
    model, ema, left_out, other = {}, {}, [], []
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if k in IGNORED or rest.startswith(IGNORED):
            left_out.append(k)
        elif head == "model":
            model[rest] = v
        elif head == "ema_model":
            ema[rest] = v
        else:
            other.append(k)
    if other:
        raise ConvertError(
            f"unexpected key {other[0]!r} in the checkpoint (DiffAE's have model.*, "
            "ema_model.*, x_T)"
        )
    if not model:
        raise ConvertError("the checkpoint has no model.* weights")
    return model, ema, left_out


def preset_for(ckpt: dict[str, Any]) -> str:
    size = (ckpt.get("hyper_parameters") or {}).get("img_size")
    presets = {128: "ffhq.yaml", 64: "ffhq64.yaml"}
    if size not in presets:
        raise ConvertError(
            f"cannot tell the network from the checkpoint (img_size {size!r}); pass --config "
            "with its sizes (ffhq.yaml: 128 px, ffhq64.yaml / celeba64.yaml: 64 px)"
        )
    return presets[size]


def convert_optimizer(
    opt_state: dict[str, Any],
    diffae_order: list[str],
    table: list[Entry],
    optimizer: torch.optim.Optimizer,
    method: Method,
) -> dict[str, Any]:
    """DiffAE's Adam state (indices over model.parameters(), in `diffae_order`) -> our AdamW's
    state dict (indices over our optimizer's parameters)."""
    groups = opt_state.get("param_groups") or []
    if len(groups) != 1 or len(groups[0]["params"]) != len(diffae_order):
        raise ConvertError(
            f"the optimizer state covers {sum(len(g['params']) for g in groups)} parameters in "
            f"{len(groups)} group(s), DiffAE's model has {len(diffae_order)}; pass "
            "--no-optimizer to start AdamW fresh"
        )
    by_theirs = {e.theirs: e for e in table}
    named = dict(method.trainable().named_parameters())
    ours_index = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
    out = optimizer.state_dict()
    out["state"] = {}
    for slot, name in zip(groups[0]["params"], diffae_order):
        st = opt_state["state"].get(slot)
        if st is None or name not in by_theirs:  # no step taken yet, or the latent net
            continue
        p = named[by_theirs[name].ours]
        out["state"][ours_index[id(p)]] = {
            "step": torch.as_tensor(st["step"], dtype=torch.float32).clone(),
            "exp_avg": st["exp_avg"].reshape(p.shape).to(p.dtype).clone(),
            "exp_avg_sq": st["exp_avg_sq"].reshape(p.shape).to(p.dtype).clone(),
        }
    return out


def convert_diffae(
    ckpt_path: Path,
    out: Path,
    *,
    config: str | None = None,
    method_name: str = "diffae",
    overrides: list[str] | tuple[str, ...] = (),
    step: int | None = None,
    optimizer: bool = True,
    trust_pickle: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Convert; returns the written checkpoint's path (see the module docstring)."""
    out = Path(out)
    if checkpoint.list_checkpoints(out / "checkpoints"):
        raise ConvertError(f"{out} already holds checkpoints; convert into a new folder")
    ckpt = read_checkpoint(ckpt_path, trust_pickle)
    model_sd, ema_sd, left_out = split_state(ckpt["state_dict"])
    preset = config or preset_for(ckpt)
    cfg: Config = load_config(preset, [f"method.name={method_name}", *overrides])
    if cfg.model.arch != "diffae":
        arch = cfg.model.arch
        raise ConvertError(f"model.arch={arch!r}: DiffAE's checkpoints need model.arch=diffae")
    torch.manual_seed(cfg.train.seed)
    method = methods.build(cfg)
    table = key_table(method)
    nets = method.trainable()
    ours = nets.state_dict()
    loaded = from_diffae(model_sd, table, ours, f"{ckpt_path} model.*")
    nets.load_state_dict({**ours, **loaded})
    ema = frozen_copy(nets)
    if ema_sd:
        ema.load_state_dict(
            {**ours, **from_diffae(ema_sd, table, ours, f"{ckpt_path} ema_model.*")}
        )
    else:
        log("the checkpoint has no ema_model.*: the EMA starts as the model")
    for target in method.targets().values():  # ArcDAE's teacher: DiffAE's EMA encoder
        target.load_state_dict(ema["encoder"].state_dict())
    tc = cfg.train
    opt, sched = optimizer_for(method, tc)
    step = int(ckpt.get("global_step", 0)) if step is None else step
    opt_state = None
    states = ckpt.get("optimizer_states") or []
    if optimizer and states:
        order = [k[len("model.") :] for k in ckpt["state_dict"] if k.startswith("model.")]
        opt_state = convert_optimizer(states[0], order, table, opt, method)
        opt.load_state_dict(opt_state)
    elif optimizer:
        log("the checkpoint has no optimizer state: AdamW starts fresh")
    if step:  # the LR schedule at `step`
        sched.last_epoch = step - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            sched.step()
    state = session.run_state(cfg, method, ema, opt if opt_state else None, sched, step)
    state["source"] = {
        "kind": "diffae",
        "path": str(Path(ckpt_path).resolve()),
        "sha256": checkpoint.sha256(ckpt_path),
        "global_step": ckpt.get("global_step"),
        "left_out": left_out,
    }
    errors.make_dir(out, "run folder")
    checkpoint.atomic_write(
        out / "config.yaml",
        lambda f: f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()),
    )
    path = checkpoint.save(out / "checkpoints", step, state, tc.keep_checkpoints)
    info = {**state["source"], "config": preset, "method": method_name, "step": step}
    info["optimizer"] = "converted" if opt_state is not None else "fresh"
    checkpoint.atomic_write(
        out / "convert.json", lambda f: f.write(json.dumps(info, indent=2).encode())
    )
    return path


def lightning_checkpoint(method: Method, ema: nn.Module | None = None, step: int = 0) -> dict:
    """A DiffAE-style Lightning checkpoint of our method's weights (the inverse direction;
    used by the tests and bench/diffae_fidelity.py)."""
    table = key_table(method)
    state = {f"model.{k}": v for k, v in to_diffae(method.trainable().state_dict(), table).items()}
    ema_state = (ema or method.trainable()).state_dict()
    state.update({f"ema_model.{k}": v for k, v in to_diffae(ema_state, table).items()})
    return {"state_dict": state, "global_step": step}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", choices=("diffae",), help="whose checkpoint: diffae (phizaz/diffae)")
    p.add_argument("ckpt", type=Path, help="the checkpoint (DiffAE: checkpoints/<name>/last.ckpt)")
    p.add_argument("--out", type=Path, required=True, help="the run folder to write")
    p.add_argument("--config", default=None, help="preset or YAML with the network's sizes")
    p.add_argument("--method", default="diffae", help="the run's method (diffae, arcdae, ...)")
    p.add_argument("--step", type=int, default=None, help="the run's step (default: DiffAE's)")
    p.add_argument("--no-optimizer", action="store_true", help="start AdamW fresh")
    p.add_argument("--trust-pickle", action="store_true", help="allow non-tensor pickles")
    logs.add_flags(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_intermixed_args(argv)
    if a.step is not None and a.step < 0:
        p.error("--step must be >= 0")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    say = log.info

    def work() -> int:
        path = convert_diffae(
            a.ckpt,
            a.out,
            config=a.config,
            method_name=a.method,
            overrides=a.overrides,
            step=a.step,
            optimizer=not a.no_optimizer,
            trust_pickle=a.trust_pickle,
            log=say,
        )
        train = f"python -m arcdae_fast.train --config {a.out}/config.yaml --out {a.out}"
        say(f"wrote {path}; train on with: {train}")
        return 0

    return errors.run(work)


if __name__ == "__main__":
    sys.exit(main())
