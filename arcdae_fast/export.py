"""`python -m arcdae_fast.export --run DIR --out DIR [--what encoder,denoiser]
[--format program,aoti,tensorrt] [--batch B] [--static-batch] [--check]`

Exports a trained run's EMA networks for serving:
- `encoder`: images (B, 3, R, R) in [-1, 1] -> the method's code (`method.encode`);
- `denoiser`: (x_t (B, 3, R, R), t (B,) int64 timesteps (a flow method: float32 in [0, 1]),
  z) -> the network's prediction, as the samplers call it (`method.sampler_fn`); a DDIM
  decode is `steps` calls of it.

Formats:
- `program`: a torch.export ExportedProgram (OUT/<what>.pt2, `torch.export.load`);
- `aoti`: an AOTInductor package (OUT/<what>.aoti.pt2, compiled C++ / CUDA code;
  `torch._inductor.aoti_load_package`), on this machine's device;
- `safetensors`: a portable inference folder (OUT/config.yaml, OUT/model.safetensors,
  OUT/ema.safetensors, and OUT/latent.safetensors when the run has a latent DDIM) that
  `api.load(OUT)` and every command's `--run OUT` read; weights only, no code
  (arcdae_fast/weights.py). `--what` does not apply to it;
- `tensorrt`: a TensorRT engine through torch-tensorrt (OUT/<what>.trt.ep), CUDA only; the
  optional `tensorrt` extra, detected at run time (`python -m arcdae_fast.info` says why it is
  unavailable).
The ops run their reference backends in the export (plain aten ops: nothing of ours is
needed to run it, and AOTInductor / TensorRT fuse them). The batch dimension is dynamic
(1..1024) unless --static-batch. `--check` runs each export on
the example inputs and reports its largest difference to eager. OUT/export.json lists what was
written, with the shapes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, errors, session, weights
from . import log as logs
from .latent import find as find_latent
from .ops import _backends

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m

WHATS = ("encoder", "denoiser")
FORMATS = ("program", "aoti", "tensorrt", "safetensors")
SUFFIX = {"program": ".pt2", "aoti": ".aoti.pt2", "tensorrt": ".trt.ep"}


def unavailable(fmt: str, device: torch.device | None = None) -> str | None:
    """Why format `fmt` cannot be produced here (None: it can)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be among {FORMATS}, got {fmt!r}")
    if fmt == "tensorrt":
        why = []
        try:
            import torch_tensorrt  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure is the reason
            why.append(f"torch_tensorrt does not import ({type(e).__name__}: {str(e)[:100]})")
        on_cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        if not on_cuda:
            why.append("needs a CUDA device")
        return "; ".join(why) or None
    return None


class Encoder(nn.Module):
    def __init__(self, method, nets: Mapping[str, nn.Module]):
        super().__init__()
        self.method, self.nets = method, nets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.encode(x, self.nets)


class Denoiser(nn.Module):
    def __init__(self, method, nets: Mapping[str, nn.Module]):
        super().__init__()
        self.method, self.net = method, nets["denoiser"]

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.method.sampler_fn(self.net)(x, t, z)


def modules(run: session.TrainedRun, batch: int = 2) -> dict[str, tuple[nn.Module, tuple]]:
    """{what: (eager module in eval mode, example inputs)} on the run's device."""
    r, dev = run.cfg.data.resolution, run.device
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((batch, run.cfg.data.channels, r, r), generator=g) * 2 - 1).to(dev)
    enc = Encoder(run.method, run.ema).eval()
    with torch.no_grad():
        z = enc(x)
    flow = getattr(run.method, "flow", None) is not None
    t = (
        torch.full((batch,), 0.5, device=dev)
        if flow
        else torch.full((batch,), run.cfg.diffusion.T // 2, dtype=torch.long, device=dev)
    )
    den = Denoiser(run.method, run.ema).eval()
    return {"encoder": (enc, (x,)), "denoiser": (den, (x, t, z))}


def export_program(module: nn.Module, inputs: tuple, dynamic: bool):
    """torch.export of `module` with the ops' reference backends: their eager math traces to
    plain aten ops, which the program's runtime needs nothing of ours to run and which
    AOTInductor / TensorRT fuse themselves (and `auto`'s size thresholds would make the
    batch dimension's guards unsatisfiable)."""
    batch = torch.export.Dim("batch", min=1, max=1024) if dynamic else None
    shapes = tuple({0: batch} if dynamic else None for _ in inputs)
    with torch.no_grad(), _backends.use_backend("reference"):
        return torch.export.export(module, inputs, dynamic_shapes=shapes if dynamic else None)


def write(fmt: str, ep, inputs: tuple, path: Path) -> Path:
    """Write ExportedProgram `ep` as `fmt` to `path`."""
    errors.make_dir(path.parent)
    with errors.doing(f"write the {fmt} export", path):
        if fmt == "program":
            torch.export.save(ep, path)
        elif fmt == "aoti":
            torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
        else:
            import torch_tensorrt

            trt = torch_tensorrt.dynamo.compile(ep, inputs=list(inputs))
            torch_tensorrt.save(trt, str(path), inputs=list(inputs))
    return path


def load(fmt: str, path: Path):
    """A callable of a written export."""
    if fmt == "program":
        return torch.export.load(path).module()
    if fmt == "aoti":
        return torch._inductor.aoti_load_package(str(path))
    import torch_tensorrt  # noqa: F401 - registers the engine's ops

    return torch.export.load(path).module()


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--what", default="encoder,denoiser", help=f"of {','.join(WHATS)}")
    p.add_argument("--format", default="program,aoti", help=f"of {','.join(FORMATS)}")
    p.add_argument("--batch", type=int, default=2, help="the example inputs' batch")
    p.add_argument("--static-batch", action="store_true")
    p.add_argument("--check", action="store_true", help="compare each export with eager")
    checkpoint.add_trust_flag(p)
    logs.add_flags(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_intermixed_args(argv)
    a.whats = [w for w in a.what.split(",") if w]
    a.formats = [f for f in a.format.split(",") if f]
    bad = [w for w in a.whats if w not in WHATS] + [f for f in a.formats if f not in FORMATS]
    if bad or not a.whats or not a.formats:
        p.error(f"unknown --what/--format {bad[0] if bad else ''!r}: {WHATS} / {FORMATS}")
    if a.batch < 1:
        p.error("--batch must be >= 1")
    return a


def run_export(a) -> int:
    run = session.load_run(a.run, a.ckpt, a.overrides)
    for fmt in a.formats:
        why = unavailable(fmt, run.device)
        if why:
            raise errors.UserError(f"export: --format {fmt} is unavailable here: {why}")
    written = []
    if "safetensors" in a.formats:
        latent = find_latent(a.run, None, run.device)
        state = session.run_state(run.cfg, run.method, run.ema, None, None, run.step)
        for path in weights.write_inference_folder(a.out, state, latent):
            written.append({"what": path.stem, "format": "safetensors", "path": str(path)})
            log.info(f"{path.stem} -> {path}")
    traced = [f for f in a.formats if f != "safetensors"]
    mods = modules(run, a.batch) if traced else {}
    for what in a.whats if traced else ():
        module, inputs = mods[what]
        ep = export_program(module, inputs, not a.static_batch)
        for fmt in traced:
            path = write(fmt, ep, inputs, a.out / f"{what}{SUFFIX[fmt]}")
            row = {
                "what": what,
                "format": fmt,
                "path": str(path),
                "inputs": [list(t.shape) for t in inputs],
                "dynamic_batch": not a.static_batch,
            }
            if a.check:
                with torch.no_grad():
                    want, got = module(*inputs), load(fmt, path)(*inputs)
                row["max_abs_diff"] = float((want - got).abs().max())
            written.append(row)
            log.info(
                f"{what} -> {path}"
                + (f" (max |diff| to eager {row['max_abs_diff']:.2e})" if a.check else "")
            )
    with errors.doing("write", a.out / "export.json"):
        (a.out / "export.json").write_text(
            json.dumps(
                {
                    "run": str(a.run),
                    "checkpoint": str(run.checkpoint),
                    "step": run.step,
                    "device": str(run.device),
                    "torch": torch.__version__,
                    "exports": written,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    return errors.run(lambda: run_export(a))


if __name__ == "__main__":
    sys.exit(main())
