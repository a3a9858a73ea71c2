"""Benchmark the input pipelines: images/s of DALI (CPU here, GPU decoding on CUDA) and of the
torch DataLoader + PIL, on the same 128-px JPEG files with the same number of threads.

    python bench/bench_data.py [--threads 2] [--images 2048] [--batch 64]
DALI is measured with float and with uint8 output (converted to float on the device by the
trainer). On a CUDA machine without DALI, torchvision.io.decode_jpeg on the GPU is measured
as the GPU-decoding stand-in (labelled so). The images are the bundled synthetic faces
written at 128 px into a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, report  # noqa: E402

from arcdae_fast.config import DataConfig  # noqa: E402
from arcdae_fast.data import synthetic  # noqa: E402
from arcdae_fast.data.dali import DaliLoader, dali_available  # noqa: E402
from arcdae_fast.data.loader import build_dataset, build_loader, model_input  # noqa: E402


def images_per_s(
    make_loader, batch: int, steps: int, device: torch.device, warmup: int = 3
) -> float:
    """Measured alone: the loader (and its worker processes / threads) is shut down before the
    next one starts, so that no pipeline competes with another for the cores."""
    loader = make_loader()
    it = iter(loader)
    for _ in range(warmup):
        model_input(next(it)["image"], device, False)
    t0 = time.perf_counter()
    for _ in range(steps):
        model_input(next(it)["image"], device, False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ips = steps * batch / (time.perf_counter() - t0)
    del it, loader
    gc.collect()
    return ips


def torchvision_gpu_decode(files: list[Path], batch: int, steps: int) -> float | None:
    if importlib.util.find_spec("torchvision") is None or not torch.cuda.is_available():
        return None
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(f)) for f in files]

    def run(k):
        imgs = decode_jpeg([data[(k * batch + j) % len(data)] for j in range(batch)], device="cuda")
        return torch.stack(imgs).float().div_(127.5).sub_(1)

    for k in range(3):
        run(k)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(steps):
        run(k)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate(Path(tmp) / "faces", a.images, a.size)
        cfg = DataConfig(
            dataset="synthetic",
            root=str(root),
            resolution=a.size,
            synthetic_count=a.images,
            synthetic_size=a.size,
            split="all",
            num_workers=a.threads,
            flip=True,
        )
        ds = build_dataset(cfg)
        shape = f"{a.size}px JPEG, batch {a.batch}, {a.threads} threads"

        def row(name: str, ips: float | None, note: str = "") -> None:
            rows.append(
                Row(
                    "data",
                    name,
                    "load",
                    shape,
                    "float32" if "uint8" not in name else "uint8",
                    a.batch / ips * 1e3 if ips else None,
                    "img/s",
                    ips,
                    None,
                    None,
                    note,
                )
            )

        row(
            "torch-dataloader-pil",
            images_per_s(
                lambda: build_loader(ds, cfg, a.batch, seed=0, pin_memory=device.type == "cuda"),
                a.batch,
                a.steps,
                device,
            ),
            f"{a.threads} worker processes",
        )
        why = dali_available()
        for output in ("float", "uint8"):
            if why:
                row(f"dali-{output}", None, why)
                continue
            where = "GPU decoding (nvJPEG)" if device.type == "cuda" else "CPU pipeline"
            row(
                f"dali-{output}",
                images_per_s(
                    lambda o=output: DaliLoader(
                        ds,
                        a.batch,
                        seed=0,
                        flip=True,
                        device=device,
                        num_threads=a.threads,
                        output=o,
                    ),
                    a.batch,
                    a.steps,
                    device,
                ),
                f"{where}, {a.threads} threads",
            )
        if device.type == "cuda" and why:
            ips = torchvision_gpu_decode(ds.files, a.batch, a.steps)
            row(
                "torchvision-decode_jpeg-cuda",
                ips,
                "GPU-decoding stand-in (no DALI here)" if ips else "torchvision not importable",
            )
    report(rows, device, a.out, "data")
    base = next((r.value for r in rows if r.provider == "torch-dataloader-pil"), None)
    for r in rows:
        if r.value and base:
            print(f"{r.provider}: {r.value:.0f} img/s = {r.value / base:.2f}x the torch path")


if __name__ == "__main__":
    main()
