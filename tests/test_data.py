import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from arcdae_fast.config import DataConfig
from arcdae_fast.data import synthetic
from arcdae_fast.data.attrs import read_partition, read_table
from arcdae_fast.data.datasets import (
    DataError,
    ImageDataset,
    Skipped,
    collate,
    list_images,
    load_image,
)
from arcdae_fast.data.loader import build_dataset, build_loader
from arcdae_fast.data.sampler import ResumableBatchSampler


def test_synthetic_dataset_on_disk(synth_root):
    names, files, attrs = read_table(synth_root / "list_attr_celeba.txt")
    assert len(names) >= 8 and set(np.unique(attrs)) == {-1, 1} and len(files) == 64
    assert all((attrs == 1).any(0)) and all((attrs == -1).any(0))  # every attribute varies
    fnames, ffiles, factors = read_table(synth_root / "list_factors.txt", np.float32)
    assert fnames == synthetic.FACTORS and ffiles == files and factors.std(0).min() > 0.1
    part = read_partition(synth_root / "list_eval_partition.txt")
    assert sorted(set(part.values())) == [0, 1, 2]
    with Image.open(synth_root / "img_align_celeba" / files[0]) as im:
        assert im.format == "JPEG" and im.size == (16, 16)
    assert synthetic.generate(synth_root, count=64, size=16) == synth_root  # idempotent


def test_generator_is_deterministic_and_refuses_foreign_folders(tmp_path):
    a = synthetic.generate(tmp_path / "a", count=16, size=16, seed=3)
    b = synthetic.generate(tmp_path / "b", count=16, size=16, seed=3)
    for f in ("list_attr_celeba.txt", "list_factors.txt"):
        assert (a / f).read_text() == (b / f).read_text()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a bundled synthetic dataset"):
        synthetic.generate(tmp_path / "c", count=16, size=16)


def test_attributes_line_up_with_images(synth_root):
    ds = build_dataset(
        DataConfig(
            dataset="synthetic",
            root=str(synth_root),
            resolution=16,
            synthetic_count=64,
            synthetic_size=16,
            split="all",
        )
    )
    names, files, attrs = read_table(synth_root / "list_attr_celeba.txt")
    row = {f: a for f, a in zip(files, attrs)}
    for i in (0, 5, 63):
        item = ds[i]
        assert item["attrs"].tolist() == row[ds.files[i].name].tolist()
    train = build_dataset(
        DataConfig(
            dataset="synthetic",
            root=str(synth_root),
            resolution=16,
            synthetic_count=64,
            synthetic_size=16,
        )
    )
    assert len(train) == int(0.8 * 64) and ds.attr_names == names


def write_images(folder, n, size=(20, 12), ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"{i:05d}{ext}"
        )


def test_image_folder_recursive_resize_and_flip(tmp_path):
    write_images(tmp_path / "imgs" / "00000", 3)
    write_images(tmp_path / "imgs" / "01000", 2, ext=".jpg")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    files = list_images(tmp_path / "imgs")
    assert len(files) == 5
    ds = ImageDataset(files, 8)
    x = ds[(0, False)]["image"]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
    torch.testing.assert_close(ds[(0, True)]["image"], torch.flip(x, [-1]))
    img = load_image(files[0], 12)
    assert img.shape == (3, 12, 12)


def test_unreadable_image_is_skipped_with_a_warning(tmp_path):
    write_images(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = ImageDataset(list_images(tmp_path / "imgs"), 8)
    items = [ds[i] for i in range(len(ds))]
    assert sum(isinstance(it, Skipped) for it in items) == 1
    with pytest.warns(UserWarning, match="broken.jpg"):
        batch = collate(items)
    assert batch["skipped"] == 1 and batch["image"].shape == (3, 3, 8, 8)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images \(.jpg, .jpeg, .png\) found under"):
        list_images(tmp_path / "empty")
    with pytest.raises(DataError, match="ffhq-dataset"):
        build_dataset(DataConfig(dataset="ffhq", root=None))
    with pytest.raises(DataError, match="ffhq-dataset"):
        build_dataset(DataConfig(dataset="ffhq", root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="CelebA"):
        build_dataset(DataConfig(dataset="celeba", root=str(tmp_path / "nope")))


def test_attribute_file_that_does_not_match_images(tmp_path, synth_root):
    import shutil

    root = tmp_path / "celeba"
    shutil.copytree(synth_root, root)
    (root / "img_align_celeba" / "000001.jpg").unlink()
    with pytest.raises(DataError, match="attribute file does not match the images"):
        build_dataset(DataConfig(dataset="celeba", root=str(root), resolution=16))
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join([lines[0], lines[1], lines[3]]) + "\n")
    with pytest.raises(DataError, match="line 1 says 64 images, the file lists 1"):
        build_dataset(DataConfig(dataset="celeba", root=str(root), resolution=16))


def test_sampler_epochs_resume_and_shards():
    s = ResumableBatchSampler(50, 8, seed=1, flip=True)
    assert s.per_epoch == 6
    epoch0 = [i for k in range(6) for i, _ in s.batch_at(k)]
    assert len(set(epoch0)) == 48  # no repeats inside an epoch
    it = iter(ResumableBatchSampler(50, 8, seed=1, flip=True, start_step=4))
    assert next(it) == s.batch_at(4) and next(it) == s.batch_at(5)
    assert s.batch_at(6) != s.batch_at(0)  # a new permutation next epoch
    flips = [f for k in range(6) for _, f in s.batch_at(k)]
    assert 10 < sum(flips) < 38
    assert not any(f for k in range(6) for _, f in ResumableBatchSampler(50, 8, seed=1).batch_at(k))
    r0 = ResumableBatchSampler(50, 4, seed=1, rank=0, world_size=2)
    r1 = ResumableBatchSampler(50, 4, seed=1, rank=1, world_size=2)
    for k in range(6):
        a, b = {i for i, _ in r0.batch_at(k)}, {i for i, _ in r1.batch_at(k)}
        assert not a & b and a | b == {i for i, _ in s.batch_at(k)}
    with pytest.raises(DataError, match="fewer than one global batch"):
        ResumableBatchSampler(5, 8)


def test_loader_batches(synth_root):
    cfg = DataConfig(
        dataset="synthetic",
        root=str(synth_root),
        resolution=16,
        synthetic_count=64,
        synthetic_size=16,
    )
    ds = build_dataset(cfg)
    loader = build_loader(ds, cfg, 8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["attrs"].shape == (8, 10)
    assert batch["factors"].shape == (8, 2) and batch["skipped"] == 0
