"""`python -m arcdae_fast.data.prepare --src DIR --out DIR --size 128 [--format jpeg]`

Writes a training-ready copy of an image dataset:
- every source image (.jpg/.jpeg/.png, recursive) is decoded in full; one that cannot be read
  is reported by name and left out, never silently;
- the rest are resized once (shorter side to --size, antialiased, centre crop; --crop celeba
  first applies DiffAE's 128-px CelebA window) and written as --format;
- OUT/manifest.jsonl lists every written image with its source (path, bytes, mtime), and
  OUT/prepare.json summarises the run (the images left out, with reasons);
- a CelebA-layout source (img_align_celeba/ + list_attr_celeba.txt ...) keeps its layout and
  annotation files, restricted to the images kept.

Train on the result with `data.dataset=prepared data.root=OUT`. Re-running on the same OUT
resumes: images already written from an unchanged source are skipped (the manifest is
appended as images are written, so an interrupted run loses nothing).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import errors
from .. import log as logs
from ..checkpoint import atomic_write
from ..errors import check_writable, doing, make_dir
from ..once import exclusive
from ._prepare_worker import prepare_one
from .attrs import read_partition, read_table, write_partition, write_table
from .datasets import DataError, list_images
from .decode import DEFAULT_MAX_PIXELS

MANIFEST, SUMMARY = "manifest.jsonl", "prepare.json"
FORMATS = {"jpeg": ".jpg", "png": ".png"}


def _read_manifest(path: Path) -> dict[str, dict]:
    entries = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interrupted run
                continue
            entries[e["src_rel"]] = e
    return entries


def prepare(
    src: str | Path,
    out: str | Path,
    size: int,
    fmt: str = "jpeg",
    quality: int = 95,
    crop: str = "none",
    workers: int | None = None,
    log=print,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if fmt not in FORMATS:
        raise DataError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    if size < 8:
        raise DataError(f"--size must be >= 8, got {size}")
    if out == src or src in out.parents:
        raise DataError(f"--out {out} must not be --src or inside it")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    make_dir(out, "output folder")
    with exclusive(out):  # ranks or jobs preparing the same folder: one at a time, resumable
        return _prepare(src, out, size, fmt, quality, crop, workers, log, max_pixels)


def _prepare(src, out, size, fmt, quality, crop, workers, log, max_pixels) -> dict:
    celeba_layout = (src / "img_align_celeba").is_dir() and (src / "list_attr_celeba.txt").is_file()
    images = list_images(src / "img_align_celeba" if celeba_layout else src)
    check_writable(out)
    manifest_path = out / MANIFEST
    done = _read_manifest(manifest_path)
    image_dir = out / ("img_align_celeba" if celeba_layout else "images")
    if image_dir.is_dir():  # temp files of writes an interruption cut short
        for leftover in image_dir.rglob("*.tmp[0-9]*"):
            with doing("remove the leftover temp file", leftover):
                leftover.unlink()
    jobs, kept, reused = [], {}, 0
    base = src / "img_align_celeba" if celeba_layout else src
    for p in images:
        rel = str(p.relative_to(base))
        dst = image_dir / Path(rel).with_suffix(FORMATS[fmt])
        old = done.get(rel)
        st = p.stat()
        if (
            old
            and old.get("size") == size
            and old.get("format") == fmt
            and old.get("crop") == crop
            and old["src_bytes"] == st.st_size
            and old["src_mtime"] == st.st_mtime
            and dst.exists()
        ):
            kept[rel] = old
            reused += 1
        else:
            jobs.append((str(p), str(dst), size, fmt, quality, crop == "celeba", max_pixels))
    t0, skipped = time.time(), []
    rel_of = {str(p): str(p.relative_to(base)) for p in images}
    # spawn, not fork: the calling process may run OpenMP / DALI / torch threads
    pool = multiprocessing.get_context("spawn").Pool(workers or os.cpu_count())
    with doing("write", manifest_path):
        mf = open(manifest_path, "a")
    with mf, pool, doing("write a prepared image under", out):
        for n, res in enumerate(pool.imap(prepare_one, jobs, chunksize=16), start=1):
            if "skip" in res:
                skipped.append({"src": rel_of[res["skip"]], "reason": res["reason"]})
                log(f"unreadable, left out: {res['skip']} ({res['reason']})")
                continue
            entry = {
                **res,
                "src_rel": rel_of[res["src"]],
                "size": size,
                "format": fmt,
                "crop": crop,
                "file": str(Path(res["file"]).relative_to(out)),
            }
            mf.write(json.dumps(entry) + "\n")
            mf.flush()
            kept[entry["src_rel"]] = entry
            if n % 1000 == 0:
                log(f"  {n}/{len(jobs)} images written")
    ordered = [kept[r] for r in sorted(kept)]
    atomic_write(
        manifest_path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in ordered).encode())
    )
    if celeba_layout:
        _carry_annotations(
            src, out, {Path(e["src_rel"]).name: Path(e["file"]).name for e in ordered}
        )
    summary = {
        "src": str(src),
        "size": size,
        "format": fmt,
        "crop": crop,
        "images": len(ordered),
        "written": len(jobs) - len(skipped),
        "reused": reused,
        "left_out": skipped,
        "layout": "celeba" if celeba_layout else "folder",
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write(out / SUMMARY, lambda f: f.write(json.dumps(summary, indent=1).encode()))
    log(
        f"prepared {len(ordered)} images of {len(images)} at {size}px in {out} "
        f"({summary['written']} written, {reused} already done, {len(skipped)} left out as "
        f"unreadable) in {summary['seconds']} s"
    )
    return summary


def _carry_annotations(src: Path, out: Path, rename: dict[str, str]) -> None:
    """Copy CelebA annotation files, restricted to the kept images (renamed if needed)."""
    for name, dtype, fmt in (
        ("list_attr_celeba.txt", np.int8, "{:2d}"),
        ("list_factors.txt", np.float32, "{:.6f}"),
    ):
        if (src / name).is_file():
            names, files, values = read_table(src / name, dtype)
            keep = [i for i, f in enumerate(files) if f in rename]
            write_table(out / name, names, [rename[files[i]] for i in keep], values[keep], fmt)
    if (src / "list_eval_partition.txt").is_file():
        part = read_partition(src / "list_eval_partition.txt")
        kept = [f for f in sorted(part) if f in rename]
        write_partition(
            out / "list_eval_partition.txt", [rename[f] for f in kept], [part[f] for f in kept]
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_flags(p)
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--format", default="jpeg", choices=list(FORMATS))
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--crop", default="none", choices=["none", "celeba"])
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images by name"
    )
    a = p.parse_args(argv)

    def work() -> int:
        prepare(
            a.src, a.out, a.size, a.format, a.quality, a.crop, a.workers, max_pixels=a.max_pixels
        )
        return 0

    return errors.run(work)


if __name__ == "__main__":
    sys.exit(main())
