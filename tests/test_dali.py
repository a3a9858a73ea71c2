"""The DALI input pipeline (CPU mode here: device_id=None) and the prepare tool."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from arcdae_fast.config import DataConfig
from arcdae_fast.data import dali as dali_mod
from arcdae_fast.data import datasets as datasets_mod
from arcdae_fast.data.datasets import DataError, ImageDataset, list_images, load_image
from arcdae_fast.data.loader import build_dataset, build_loader, make_loader
from arcdae_fast.data.prepare import prepare

needs_dali = pytest.mark.skipif(
    dali_mod.dali_available() is not None, reason="nvidia-dali is not installed"
)


def synth_cfg(root, **kw):
    return DataConfig(
        dataset="synthetic",
        root=str(root),
        resolution=16,
        synthetic_count=64,
        synthetic_size=16,
        split="all",
        **kw,
    )


@needs_dali
@pytest.mark.parametrize(
    "channels_last,output", [(False, "float"), (True, "float"), (False, "uint8")]
)
def test_batches_shape_dtype_range_layout(synth_root, channels_last, output):
    ds = build_dataset(synth_cfg(synth_root))
    dl = dali_mod.DaliLoader(ds, 8, seed=0, flip=True, channels_last=channels_last, output=output)
    b = next(dl)
    x = b["image"]
    assert x.shape == (8, 3, 16, 16) and b["index"].shape == (8,)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    if output == "float":
        assert x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
    else:
        assert x.dtype == torch.uint8 and x.max() > 100


@needs_dali
def test_same_pixels_as_pil_and_same_batches_as_the_torch_path(synth_root):
    cfg = synth_cfg(synth_root)
    ds = build_dataset(cfg)
    dl = dali_mod.DaliLoader(ds, 8, seed=3, flip=True)
    tl = iter(build_loader(ds, cfg, 8, seed=3))
    for _ in range(3):
        a, b = next(dl), next(tl)
        assert a["index"].tolist() == b["index"].tolist()  # same order and shards
        diff = (a["image"] - b["image"]).abs()  # native size: decode (+ flip) only
        assert diff.max() <= 4 / 127.5 and diff.mean() < 1 / 255, diff.max()


@needs_dali
def test_random_crop_same_windows_as_the_torch_path(tmp_path):
    """data.crop=random on non-square images: DALI's crop_pos_x/y and PIL's crop_at take the
    same windows (native size, so the pixels must agree to decode rounding)."""
    rng = np.random.default_rng(0)
    for i in range(8):
        w, h = (40, 16) if i % 2 else (16, 40)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), resolution=16, crop="random", flip=True)
    ds = build_dataset(cfg)
    dl = dali_mod.DaliLoader(ds, 4, seed=1, flip=True, random_crop=True)
    tl = iter(build_loader(ds, cfg, 4, seed=1))
    windows = set()
    for _ in range(4):
        a, b = next(dl), next(tl)
        assert a["index"].tolist() == b["index"].tolist()
        assert (a["image"] - b["image"]).abs().max() <= 1 / 127.5
        windows |= {tuple(x.flatten()[:6].tolist()) for x in b["image"]}
    assert len(windows) > 8  # the windows move between epochs


@needs_dali
def test_resized_output_close_to_pil(tmp_path, synth_root):
    ds = build_dataset(
        DataConfig(
            dataset="synthetic",
            root=str(synth_root),
            resolution=8,
            synthetic_count=64,
            synthetic_size=16,
            split="all",
        )
    )
    b = next(dali_mod.DaliLoader(ds, 4, seed=0))
    pil = torch.stack([load_image(ds.files[i], 8) for i in b["index"].tolist()])
    assert (b["image"] - pil).abs().mean() < 0.03  # both antialiased cubic; filters differ


@needs_dali
def test_two_ranks_cover_every_file_once_per_epoch(synth_root):
    ds = build_dataset(synth_cfg(synth_root))
    seen = []
    for rank in (0, 1):
        dl = dali_mod.DaliLoader(ds, 8, seed=5, rank=rank, world_size=2)
        seen.append([i for _ in range(4) for i in next(dl)["index"].tolist()])  # 64 / (2 x 8)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(64))


@needs_dali
def test_deterministic_resumable_and_attributes_aligned(synth_root):
    ds = build_dataset(synth_cfg(synth_root))
    a = dali_mod.DaliLoader(ds, 8, seed=9, flip=True)
    batches = [next(a) for _ in range(5)]
    b = dali_mod.DaliLoader(ds, 8, seed=9, flip=True, start_step=3)  # resume at step 3
    for want in batches[3:]:
        got = next(b)
        assert torch.equal(got["index"], want["index"])
        assert torch.equal(got["image"], want["image"])
    for batch in batches:
        assert torch.equal(
            batch["attrs"], torch.from_numpy(ds.attrs[batch["index"].numpy()].astype(np.float32))
        )


@needs_dali
def test_unreadable_files_are_skipped_named_and_counted_like_the_torch_path(tmp_path, synth_root):
    """A truncated JPEG (fails only DALI's full decode: the pipeline is rebuilt without it) and
    a non-image named .jpg (fails the header check) are left out of their batches, named in a
    warning and counted, in DALI as in the torch loader; a batch of only bad files comes out
    without images."""
    files = list_images(synth_root / "img_align_celeba")[:16]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    truncated, junk = folder / files[5].name, folder / files[9].name
    truncated.write_bytes(truncated.read_bytes()[:40])
    junk.write_bytes(b"not an image")
    ds = ImageDataset(list_images(folder), 16)
    for loader in (
        dali_mod.DaliLoader(ds, 8, seed=0),
        build_loader(ds, DataConfig(num_workers=0), 8, seed=0),
    ):
        datasets_mod._warned.clear()  # the warning is once per file and process
        with pytest.warns(UserWarning) as w:
            got = [next(iter_) for iter_ in [iter(loader)] for _ in range(2)]
        named = " ".join(str(x.message) for x in w)
        assert truncated.name in named and junk.name in named
        assert sum(b["skipped"] for b in got) == 2
        assert sum(len(b["index"]) for b in got) == 14
        assert not {5, 9} & {int(i) for b in got for i in b["index"]}
    mostly_bad = folder / "bad"
    mostly_bad.mkdir()
    for k in range(4):
        (mostly_bad / f"{k}.jpg").write_bytes(b"junk")
    shutil.copy(files[0], mostly_bad / "ok.jpg")
    ds2 = ImageDataset(list_images(mostly_bad), 16)  # batches of 4 out of 5: some all bad
    with pytest.warns(UserWarning):
        dl = dali_mod.DaliLoader(ds2, 4, seed=1)
        got = [next(dl) for _ in range(8)]
    empty = [b for b in got if "image" not in b]
    assert empty and all(b["skipped"] == 4 for b in empty)
    assert all(b["skipped"] == 3 and len(b["index"]) == 1 for b in got if "image" in b)


def test_auto_selection_and_missing_dali(synth_root, monkeypatch):
    ds = build_dataset(synth_cfg(synth_root))
    loader, how = make_loader(ds, synth_cfg(synth_root, loader="auto"), 8, seed=0)
    assert ("DALI" in how) == (dali_mod.dali_available() is None)
    monkeypatch.setattr(dali_mod, "dali_available", lambda: "nvidia-dali is not installed (x)")
    loader, how = make_loader(ds, synth_cfg(synth_root, loader="auto"), 8, seed=0)
    assert how.startswith("torch DataLoader") and "not installed" in how
    with pytest.raises(DataError, match="data.loader=dali: nvidia-dali is not installed"):
        make_loader(ds, synth_cfg(synth_root, loader="dali"), 8, seed=0)


def test_prepare_validates_resumes_and_keeps_annotations(tmp_path, synth_root):
    src = tmp_path / "src"
    shutil.copytree(synth_root, src)
    (src / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    logs = []
    out = tmp_path / "out"
    s1 = prepare(src, out, 8, workers=2, log=logs.append)
    assert s1["images"] == 63 and [x["src"] for x in s1["left_out"]] == ["000002.jpg"]
    assert any("000002.jpg" in line for line in logs)
    names, files, _ = __import__("arcdae_fast.data.attrs", fromlist=["x"]).read_table(
        out / "list_attr_celeba.txt"
    )
    assert len(files) == 63 and "000002.jpg" not in files
    with Image.open(out / "img_align_celeba" / "000001.jpg") as im:
        assert im.size == (8, 8)
    s2 = prepare(src, out, 8, workers=2, log=logs.append)  # re-run: nothing to redo
    assert s2["written"] == 0 and s2["reused"] == 63
    lines = (out / "manifest.jsonl").read_text().splitlines()  # an interrupted run's manifest
    (out / "manifest.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:20])
    s3 = prepare(src, out, 8, workers=2, log=logs.append)
    assert s3["reused"] == 10 and s3["written"] == 53 and s3["images"] == 63
    ds = build_dataset(DataConfig(dataset="prepared", root=str(out), resolution=8, split="all"))
    assert len(ds) == 63 and ds.attrs.shape == (63, 10)


def test_prepare_errors_and_cli(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcdae_fast.data.prepare",
            "--src",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
            "--size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        prepare(tmp_path / "empty", tmp_path / "o", 8)
    with pytest.raises(DataError, match="not a prepared dataset"):
        build_dataset(DataConfig(dataset="prepared", root=str(tmp_path / "empty")))


def test_cli_logs_the_input_pipeline(tiny_config_file, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcdae_fast.train",
            "--config",
            str(tiny_config_file),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--max-steps",
            "1",
            "train.sample_every=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    want = (
        "input pipeline: DALI, decoding on the CPU"
        if dali_mod.dali_available() is None
        else "input pipeline: torch DataLoader"
    )
    assert want in r.stderr
