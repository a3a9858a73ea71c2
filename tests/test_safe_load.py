"""Loading never runs code from a file: a checkpoint, latent model or cache carrying a
`__reduce__` payload is refused with a one-line error by every loader (train's resume, eval,
sample, api.load, train_latent), and the payload does not run; --trust-pickle is the way
to load such a file on purpose. Weights also come as safetensors: a sidecar per checkpoint
that evaluation reads, and the inference folder of `export --format safetensors`."""

import shutil

import pytest
import torch
import yaml
from conftest import tiny_raw

from arcdae_fast import api, checkpoint, export, sample, train_latent, weights
from arcdae_fast.eval.cli import main as eval_main
from arcdae_fast.train import main as train_main


class Payload:
    """Unpickling this creates the file `marker` (a stand-in for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    """Add a payload to a torch.save file (the test wrote it: loading it here is trusted)."""
    state = torch.load(path, weights_only=False)
    state["note"] = Payload(marker)
    torch.save(state, path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synth_root):
    root = tmp_path_factory.mktemp("safe")
    raw = tiny_raw(synth_root)
    raw["train"].update(max_steps=4, sample_every=0, ckpt_every=2)
    (root / "tiny.yaml").write_text(yaml.safe_dump(raw))
    out = root / "run"
    assert (
        train_main(["--config", str(root / "tiny.yaml"), "--out", str(out), "--no-progress"]) == 0
    )
    lat = ["--run", str(out), "--steps", "4", "--hidden", "16", "--layers", "2", "--no-progress"]
    assert train_latent.main([*lat, "--batch-size", "8", "--ckpt-every", "2"]) == 0
    return out


def copy_run(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def refused(capsys, marker, code):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--trust-pickle" in err and "would run code" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
    assert not marker.exists(), "the payload ran"


def test_each_checkpoint_has_safetensors_weights_equal_to_it(run_dir):
    found = checkpoint.list_checkpoints(run_dir / "checkpoints")
    assert [s for s, _ in found] == [2, 4]
    for step, path in found:
        side = weights.sidecar(path)
        assert side.is_file(), side
        state = torch.load(path, weights_only=True)
        got = weights.read_checkpoint_weights(side)
        assert got["step"] == step and got["config"] == state["config"]
        for g in ("model", "ema"):
            assert got[g].keys() == state[g].keys()
            for k, v in state[g].items():
                assert torch.equal(got[g][k], v), (g, k)


def test_eval_reads_the_safetensors_and_never_the_training_state(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path)
    marker = tmp_path / "ran"
    plant(checkpoint.list_checkpoints(run / "checkpoints")[-1][1], marker)
    out = tmp_path / "ev"
    assert eval_main(["--run", str(run), "--suite", "tad", "--out", str(out), "--no-progress"]) == 0
    assert (out / "eval.json").is_file() and not marker.exists()


def test_resume_eval_api_refuse_a_payload_checkpoint(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path)
    marker = tmp_path / "ran"
    newest = checkpoint.list_checkpoints(run / "checkpoints")[-1][1]
    plant(newest, marker)
    weights.sidecar(newest).unlink()  # an older run's checkpoint: no sidecar
    cfg = run / "config.yaml"
    refused(
        capsys,
        marker,
        train_main(["--config", str(cfg), "--out", str(run), "--max-steps", "6", "--no-progress"]),
    )
    refused(capsys, marker, eval_main(["--run", str(run), "--suite", "tad", "--no-progress"]))
    refused(
        capsys,
        marker,
        sample.main(["--run", str(run), "--out", str(tmp_path / "s"), "--no-progress"]),
    )
    with pytest.raises(checkpoint.UnsafeFile, match="trust-pickle"):
        api.load(run)
    assert not marker.exists()
    # on purpose, the flag loads it (and so runs it)
    api.load(run, trust_pickle=True)
    assert marker.exists()
    checkpoint.trust_pickle(False)


def test_train_latent_and_sample_refuse_payload_files(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path)
    marker = tmp_path / "ran"
    lat_ckpt = checkpoint.list_checkpoints(run / "latent" / "checkpoints")[-1][1]
    plant(lat_ckpt, marker)
    args = ["--run", str(run), "--steps", "6", "--hidden", "16", "--layers", "2", "--no-progress"]
    refused(capsys, marker, train_latent.main([*args, "--batch-size", "8"]))
    plant(run / "latent" / "latent.pt", marker)
    out = tmp_path / "s"
    refused(
        capsys,
        marker,
        sample.main(["--run", str(run), "--out", str(out), "--n", "2", "--no-progress"]),
    )
    plant(run / "latent" / "codes.pt", marker)
    shutil.rmtree(run / "latent" / "checkpoints")
    refused(capsys, marker, train_latent.main([*args, "--batch-size", "8"]))


def test_export_safetensors_folder_loads_like_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "inference"
    assert export.main(["--run", str(run_dir), "--out", str(out), "--format", "safetensors"]) == 0
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "model.safetensors",
        "ema.safetensors",
        "latent.safetensors",
    }
    a, b = api.load(run_dir), api.load(out)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(a.encode(x), b.encode(x))
    assert torch.equal(a.sample(2, steps=2, seed=1), b.sample(2, steps=2, seed=1))
    assert (
        sample.main(
            [
                "--run",
                str(out),
                "--out",
                str(tmp_path / "s"),
                "--n",
                "2",
                "--steps",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )


def test_a_malformed_weights_file_is_one_line(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path)
    newest = checkpoint.list_checkpoints(run / "checkpoints")[-1][1]
    weights.sidecar(newest).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code = eval_main(["--run", str(run), "--suite", "tad", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable safetensors" in err, err
