"""The one decode path: every PIL mode a dataset may hold becomes the right 8-bit RGB pixels
(checked against an independent numpy conversion), an image over the pixel limit is refused
by name before it is decoded, and the loaders, the prepare tool and evaluation skip, name and
count what cannot be used."""

import json

import numpy as np
import pytest
from PIL import Image

from arcdae_fast.data.datasets import ImageDataset, Skipped, first_readable, load_image
from arcdae_fast.data.decode import ImageError, decode
from arcdae_fast.data.prepare import prepare

RNG = np.random.default_rng(0)


def save(tmp_path, name, im, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def rgb(path):
    return np.asarray(decode(path)).astype(np.int64)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = RNG.integers(0, 65536, (24, 20), dtype=np.uint16)
    path = save(tmp_path, "g16.png", Image.fromarray(a))
    assert Image.open(path).mode.startswith("I")
    want = np.rint(a / 257.0).astype(np.int64)
    got = rgb(path)
    assert got.shape == (24, 20, 3)
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    # the torch path's tensor: the same pixels in [-1, 1] (PIL's own convert clipped them)
    x = load_image(path, 20)
    assert np.abs((x[0].numpy() + 1) * 127.5 - want[2:22]).max() < 1e-3


def test_eight_bit_modes_against_numpy(tmp_path):
    base = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    cases = {
        "L.png": (Image.fromarray(gray, "L"), np.repeat(gray[..., None], 3, 2)),
        "RGBA.png": (Image.fromarray(np.dstack([base, alpha]), "RGBA"), base),  # alpha dropped
        "LA.png": (
            Image.fromarray(np.dstack([gray, alpha]), "LA"),
            np.repeat(gray[..., None], 3, 2),
        ),
        "1.png": (
            Image.fromarray(gray > 127).convert("1"),
            np.repeat((gray > 127)[..., None] * 255, 3, 2),
        ),
    }
    for name, (im, want) in cases.items():
        assert np.array_equal(rgb(save(tmp_path, name, im)), want.astype(np.int64)), name
    palette = Image.fromarray(base).quantize(colors=16)
    lut = np.asarray(palette.getpalette()[: 16 * 3]).reshape(16, 3)
    want = lut[np.asarray(palette)]
    assert np.array_equal(rgb(save(tmp_path, "P.png", palette)), want)
    palette.info["transparency"] = 0
    assert np.array_equal(rgb(save(tmp_path, "Pt.png", palette, transparency=0)), want)
    cmyk = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    got = rgb(save(tmp_path, "c.tif", Image.fromarray(cmyk, "CMYK")))
    c, k = cmyk[..., :3].astype(np.int64), cmyk[..., 3:].astype(np.int64)
    assert np.abs(got - (255 - c) * (255 - k) / 255).max() <= 1.0  # PIL's formula, to rounding


def test_refusals_name_the_reason(tmp_path):
    f = save(tmp_path, "f.tif", Image.fromarray(RNG.random((8, 8)).astype(np.float32), "F"))
    with pytest.raises(ImageError, match="floating-point image"):
        decode(f)
    big = save(tmp_path, "big.png", Image.new("L", (300, 200)))
    with pytest.raises(ImageError, match=r"300 x 200 = 60,000 pixels, over the limit of 50,000"):
        decode(big, max_pixels=50_000)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ImageError, match="not a readable image"):
        decode(junk)
    trunc = save(
        tmp_path, "t.jpg", Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    )
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) * 3 // 5])  # the header parses, the pixels do not
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode(trunc)


def test_a_decompression_bomb_is_skipped_by_name_not_a_crash(tmp_path):
    good = [
        save(tmp_path, f"{i}.png", Image.new("RGB", (20, 20), (i * 30, 0, 0))) for i in range(3)
    ]
    bomb = save(tmp_path, "bomb.png", Image.new("L", (20000, 20000)))  # compresses to ~400 kB
    ds = ImageDataset([bomb, *good], 16, max_pixels=10_000_000)
    item = ds[0]
    assert isinstance(item, Skipped) and "bomb.png" in item.path and "over the limit" in item.reason
    with pytest.warns(UserWarning, match="bomb.png"):
        batch = first_readable(ds, 8)  # the sample grid: the readable files
    assert batch["image"].shape[0] == 3 and batch["skipped"] == 0
    out = tmp_path / "prepared"
    src = tmp_path / "src"
    src.mkdir()
    for p in (bomb, *good):
        p.rename(src / p.name)
    summary = prepare(src, out, 8, workers=1, log=lambda m: None, max_pixels=10_000_000)
    assert summary["images"] == 3
    assert [x["src"] for x in summary["left_out"]] == ["bomb.png"]
    assert (
        "over the limit" in json.loads((out / "prepare.json").read_text())["left_out"][0]["reason"]
    )


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_training_over_a_folder_with_bad_files_skips_names_and_counts_them(
    loader, tiny_config_file, tmp_path, synth_root, capsys
):
    from arcdae_fast.data import datasets as datasets_mod
    from arcdae_fast.data.dali import dali_available
    from arcdae_fast.train import main

    if loader == "dali" and dali_available():
        pytest.skip(dali_available())
    folder = tmp_path / "faces"
    folder.mkdir()
    good = sorted((synth_root / "img_align_celeba").glob("*.jpg"))[:24]
    for i, f in enumerate(good):
        (folder / f"b{i:02d}.jpg").write_bytes(f.read_bytes())
    for i in range(3):  # the first files: the sample grid must come from readable ones
        (folder / f"a{i}.jpg").write_bytes(b"not an image")
    Image.new("L", (20000, 20000)).save(folder / "a9_bomb.png")
    datasets_mod._warned.clear()
    argv = ["--config", str(tiny_config_file), "--out", str(tmp_path / "run"), "--no-progress"]
    sets = ["data.dataset=folder", f"data.root={folder}", f"data.loader={loader}"]
    sets += ["data.max_image_pixels=10000000", "--max-steps", "6", "train.sample_every=6"]
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert main([*argv, *sets]) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_images"] >= 1
    assert (tmp_path / "run" / "samples" / "recon_00000006.png").is_file()
