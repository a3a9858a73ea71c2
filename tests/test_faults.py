"""Faults a user meets, as one-line errors with nothing lost: output folders that are files or
lie below one, full and read-only disks (simulated: root ignores permissions), leftover temp
files of interrupted writes, the second signal, malformed configs and inputs, and the same
standard for every command."""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from arcdae_fast import checkpoint, errors
from arcdae_fast.loop import Signals
from arcdae_fast.train import main as train

QUICK = ["--no-progress", "train.sample_every=0"]


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def run(cfg, out, *extra):
    return train(["--config", str(cfg), "--out", str(out), *QUICK, *extra])


@pytest.mark.parametrize(
    "layout,needle",
    [
        ("out_is_file", "cannot create the run folder {out}: it is a file, not a folder"),
        ("below_file", "cannot create the run folder {out}: {tmp}/afile is a file"),
        ("ckpt_is_file", "cannot create the checkpoints folder {out}/checkpoints: it is a file"),
    ],
)
def test_output_folder_faults(layout, needle, tiny_config_file, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = {
        "out_is_file": tmp_path / "afile",
        "below_file": tmp_path / "afile" / "run",
        "ckpt_is_file": tmp_path / "run",
    }[layout]
    if layout == "ckpt_is_file":
        out.mkdir()
        (out / "checkpoints").write_text("x")
    assert run(tiny_config_file, out) == 1
    one_line_error(capsys.readouterr().err, needle.format(out=out, tmp=tmp_path))


def test_a_read_only_folder_is_named_before_training(
    tiny_config_file, tmp_path, capsys, monkeypatch
):
    real = type(tmp_path).write_bytes

    def read_only(self, data):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(type(tmp_path), "write_bytes", read_only)
    assert run(tiny_config_file, tmp_path / "run") == 1
    monkeypatch.setattr(type(tmp_path), "write_bytes", real)
    one_line_error(
        capsys.readouterr().err,
        f"cannot write into {tmp_path / 'run' / 'checkpoints'}",
        "read-only file system",
    )
    assert not (tmp_path / "run").exists()  # a run that never started leaves no folder


def test_too_little_room_for_a_checkpoint(tiny_config_file, tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert run(tiny_config_file, tmp_path / "run") == 1
    one_line_error(capsys.readouterr().err, "MB free, one checkpoint of this run needs about")


def test_disk_full_mid_run_keeps_the_previous_checkpoint(
    tiny_config_file, tmp_path, capsys, monkeypatch
):
    saves = []
    real = torch.save

    def fills_up(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:  # the second checkpoint: the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", fills_up)
    out = tmp_path / "run"
    assert run(tiny_config_file, out, "--max-steps", "6", "train.ckpt_every=2") == 1
    monkeypatch.undo()
    one_line_error(
        capsys.readouterr().err,
        f"cannot write checkpoint {out / 'checkpoints' / 'ckpt_00000004.pt'}: no space left on "
        "device (the previous checkpoint ckpt_00000002.pt is intact)",
    )
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    # no temp file, no truncated checkpoint, no weights without their checkpoint
    assert names == ["ckpt_00000002.pt", "ckpt_00000002.safetensors"]
    assert checkpoint.load_latest(out / "checkpoints")[0] == 2
    assert run(tiny_config_file, out, "--max-steps", "4", "train.ckpt_every=2") == 0  # resumes


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.EROFS, "read-only file system"),
        (errno.EBUSY, "device or resource busy"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_checkpoints_folder_that_fails_mid_run_is_one_line_and_resumes(
    code, words, tiny_config_file, tmp_path, capsys, monkeypatch
):
    """checkpoints/ turns read-only, busy or forbidden between two checkpoints: one line
    naming the file, the reason and the intact checkpoint; no temp file; the same command
    resumes once the folder is back."""
    saves = []
    real = torch.save

    def fails(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:
            raise OSError(code, os.strerror(code))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", fails)
    out = tmp_path / "run"
    assert run(tiny_config_file, out, "--max-steps", "6", "train.ckpt_every=2") == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    one_line_error(err, f"cannot write checkpoint {out / 'checkpoints' / 'ckpt_00000004.pt'}")
    assert words in err.lower() and "ckpt_00000002.pt is intact" in err
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert run(tiny_config_file, out, "--max-steps", "4", "train.ckpt_every=2") == 0


def test_leftover_temp_files_are_removed_and_never_taken_for_checkpoints(
    tiny_config_file, tmp_path, capsys
):
    out = tmp_path / "run"
    assert run(tiny_config_file, out, "--max-steps", "2", "train.ckpt_every=2") == 0
    junk = [
        out / "checkpoints" / ".ckpt_00000004.pt.ab12cd_3.tmp",
        out / ".metrics.jsonl.zz99yy00.tmp",
    ]
    for j in junk:
        j.write_bytes(b"half a checkpoint")
    assert [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")] == [2]
    assert run(tiny_config_file, out, "--max-steps", "3", "train.ckpt_every=3") == 0
    assert not any(j.exists() for j in junk)
    assert "left by an interrupted write" in capsys.readouterr().err


def test_the_second_signal_aborts_in_one_line():
    sig = Signals()
    with sig:
        sig._handle(signal.SIGTERM, None)  # the first: stop after this step
        with pytest.raises(errors.Aborted) as e:
            sig._handle(signal.SIGTERM, None)
    assert e.value.code == 128 + signal.SIGTERM
    assert errors.run(lambda: (_ for _ in ()).throw(e.value)) == 143


def test_two_quick_signals_end_without_a_traceback(tiny_config_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "arcdae_fast.train", "--config", str(tiny_config_file)]
    cmd += ["--out", str(out), *QUICK, "--max-steps", "100000", "train.ckpt_every=100000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "aborted at once by a second SIGTERM" in err or "stopped by SIGTERM" in err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["model.denoiser.dropout=1.5"], "model.denoiser.dropout must be <= 0.99, got 1.5"),
        (["ops.backend=bogus"], "unknown backend 'bogus' (from ops.backend)"),
        (["ops.backend=cuda"], "cannot run on cpu: adagn: backend 'cuda' (from ops.backend)"),
        (["model.denoiser.head_channels=3"], "head_channels=3: attention channels 16 not"),
        (["train.seed=99999999999999999999"], "train.seed must be <= 9223372036854775807"),
        (["model.denoiser.channel_mult=[1,2"], "cannot parse the value of override"),
    ],
)
def test_config_faults_are_one_line(extra, needle, tiny_config_file, tmp_path, capsys):
    assert run(tiny_config_file, tmp_path / "run", *extra) == 2
    one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text,needle",
    [
        (b"\x00\xff\xfe\x80", "is not a text (YAML) file"),
        (b"train:\n  lr: [1, 2\n", "is not valid YAML: "),
        (b"train:\n\tlr: 1\n", "found character '\\t' that cannot start any token at line 2"),
    ],
)
def test_malformed_config_files_are_one_line(text, needle, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(text)
    assert train(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys.readouterr().err, needle)


def test_input_faults_are_one_line(tiny_config_file, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert run(tiny_config_file, tmp_path / "a", f"data.root={foreign}") == 2
    one_line_error(capsys.readouterr().err, "is not a bundled synthetic dataset")
    fake = tmp_path / "fakes"
    fake.mkdir()
    for i in range(10):
        (fake / f"{i}.jpg").write_bytes(b"not an image at all")
    assert run(tiny_config_file, tmp_path / "b", "data.dataset=folder", f"data.root={fake}") == 2
    one_line_error(capsys.readouterr().err, f"none of the 10 images under {fake} can be decoded")


def test_every_command_names_an_unwritable_output(tiny_config_file, tmp_path, capsys, synth_root):
    from arcdae_fast.convert import lightning_checkpoint
    from arcdae_fast.convert import main as convert
    from arcdae_fast.data.prepare import main as prepare
    from arcdae_fast.eval.cli import main as evaluate
    from arcdae_fast.methods import build
    from arcdae_fast.profile import main as profile

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    bad = blocker / "out"
    run_dir = tmp_path / "run"
    assert run(tiny_config_file, run_dir, "--max-steps", "2") == 0
    raw = json.loads(json.dumps(checkpoint.load_latest(run_dir / "checkpoints")[1]["config"]))
    raw["method"] = {"name": "diffae"}
    from arcdae_fast.config import from_dict

    torch.save(lightning_checkpoint(build(from_dict(raw))), tmp_path / "last.ckpt")
    capsys.readouterr()
    cases = {
        "prepare": lambda: prepare(["--src", str(synth_root), "--out", str(bad), "--size", "8"]),
        "convert": lambda: convert(
            [
                "diffae",
                str(tmp_path / "last.ckpt"),
                "--out",
                str(bad),
                "--config",
                str(tiny_config_file),
            ]
        ),
        "eval": lambda: evaluate(
            ["--run", str(run_dir), "--suite", "tad", "--out", str(bad), "--no-progress"]
        ),
        "profile": lambda: profile(
            ["--config", str(tiny_config_file), "--steps", "1", "--json", str(bad / "p.json")]
        ),
        "train": lambda: run(tiny_config_file, bad),
    }
    for name, call in cases.items():
        assert call() == 1, name
        one_line_error(capsys.readouterr().err, f"{blocker} is a file, not a folder")


def test_atomic_writes_honour_the_umask(tmp_path):
    """mkstemp creates 0600 files: an atomically written file gets a plain open()'s mode."""
    old = os.umask(0o027)
    try:
        checkpoint.atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"), "file")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        checkpoint.atomic_write(tmp_path / "a.json", lambda f: f.write(b"[]"), "file")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def _group_alive(pgid: int) -> list[str]:
    """Processes of a process group still alive (zombies excluded), as 'pid cmdline'."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                out.append(f"{d} {cmd[:120]}")
        except (OSError, ValueError):
            continue
    return out


def test_nothing_outlives_a_sigkilled_trainer(tiny_config_file, tmp_path):
    """The torch loader's forkserver and workers and the resource tracker end within 10 s of
    the trainer's SIGKILL (the OOM killer's signal: no handler runs)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "arcdae_fast.train", "--config", str(tiny_config_file)]
    cmd += ["--out", str(out), "--no-progress", "--max-steps", "100000"]
    cmd += ["data.loader=torch", "data.num_workers=2", "train.ckpt_every=100000"]
    cmd += ["train.sample_every=0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.2)
    assert metrics.exists(), "the run never logged a step"
    assert len(_group_alive(proc.pid)) >= 3, _group_alive(proc.pid)  # trainer, server, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and _group_alive(proc.pid):
        time.sleep(0.2)
    left = _group_alive(proc.pid)
    for line in left:  # leave nothing behind for the next test either
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, left


@pytest.mark.parametrize("where", ["metrics", "grid"])
def test_disk_full_between_checkpoints_is_one_line_and_resumes(
    tiny_config_file, tmp_path, capsys, monkeypatch, where
):
    """The disk fills mid-run while a metrics line or a sample grid is written: one line
    naming the file and the intact checkpoint, no torn line or 0-byte PNG kept, and after
    space is freed the same command resumes without a hand edit."""
    from PIL import Image

    from arcdae_fast import tracking

    out = tmp_path / "run"
    if where == "metrics":
        real = tracking._Jsonl.scalars

        def fills(self, step, values):
            if step == 3:
                self.f.write('{"step": 3, "loss": 3.3')  # half a line, then the disk is full
                self.f.flush()
                with errors.doing("write", self.path):
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, step, values)

        monkeypatch.setattr(tracking._Jsonl, "scalars", fills)
        needle = f"cannot write {out / 'metrics.jsonl'}: no space left on device"
    else:
        real = Image.Image.save

        def fills(self, fp, *a, **k):
            fp.write(b"\x89PNG")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Image.Image, "save", fills)
        needle = "cannot write the sample grid"
    sets = ["--max-steps", "6", "train.ckpt_every=2", "train.sample_every=3"]
    assert run(tiny_config_file, out, *sets) == 1
    one_line_error(capsys.readouterr().err, needle, "no space left on device")
    monkeypatch.undo()
    assert all(p.stat().st_size > 0 for p in (out / "samples").glob("*"))  # no 0-byte PNG
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert run(tiny_config_file, out, *sets) == 0
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@contextlib.contextmanager
def small_disk(path, size: int):
    """A tmpfs of `size` bytes mounted at `path` (needs root with CAP_SYS_ADMIN, else skip)."""
    path.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")
    try:
        yield lambda size: subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(path)], check=True
        )
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("grids", [False, True])
def test_a_real_full_disk_mid_run_is_one_line_and_resumes_once_space_is_freed(
    grids, tiny_config_file, tmp_path, capsys
):
    """Not simulated: the run folder on a tmpfs with room for one checkpoint and a half. A
    write after the first checkpoint (the second checkpoint; with grids, whichever write
    comes first) fills the disk: one line naming the reason and the intact checkpoint, no
    temp or 0-byte file left; the disk grows (space freed) and the same command finishes."""
    probe = tmp_path / "probe"
    assert run(tiny_config_file, probe, "--max-steps", "2", "train.ckpt_every=2") == 0
    ckpt = sum(p.stat().st_size for p in (probe / "checkpoints").iterdir())
    capsys.readouterr()
    sets = ["--max-steps", "6", "train.ckpt_every=2", "train.keep_checkpoints=1"]
    sets += ["train.sample_every=1", "train.log_every=1"] if grids else []
    with small_disk(tmp_path / "disk", int(1.5 * ckpt) + (64 << 10)) as grow:
        out = tmp_path / "disk" / "run"
        assert run(tiny_config_file, out, *sets) == 1
        err = capsys.readouterr().err
        one_line_error(err, "no space left on device", "ckpt_00000002.pt is intact")
        left = [p.name for p in (out / "checkpoints").iterdir()]
        assert not [n for n in left if n.startswith(".")], left  # no temp file
        assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0]
        assert checkpoint.load_latest(out / "checkpoints")[0] == 2
        assert run(tiny_config_file, out, *sets) == 1  # a resume on the still-full disk
        one_line_error(capsys.readouterr().err, "one checkpoint of this run needs about")
        assert not [p for p in out.rglob(".*") if p.is_file()]  # no write probe left
        grow(4 * ckpt + (1 << 20))
        assert run(tiny_config_file, out, *sets) == 0
        assert "resuming from" in capsys.readouterr().err
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]
