"""Experiment tracking: one run with train.loggers=[jsonl,tensorboard,wandb] (wandb offline)
holds the same loss values in metrics.jsonl, the TensorBoard event file (read back with
tensorboard's EventAccumulator) and the W&B offline run (read back from its .wandb file); a
resume cuts every sink back to the checkpoint; a torn last line of metrics.jsonl (a crash
or a full disk mid-write) is dropped with a note, and the run resumes."""

import json

import pytest
import yaml
from conftest import tiny_raw

from arcdae_fast import tracking
from arcdae_fast.train import main as train_main

pytest.importorskip("tensorboard", reason="pip install 'arcdae_fast[tensorboard]'")
pytest.importorskip("wandb", reason="pip install 'arcdae_fast[wandb]'")


def jsonl(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def tb_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}, acc.Tags()


def wandb_records(path):
    """The records of a .wandb file: wandb's transaction log is LevelDB's log format (a 7-byte
    ':W&B' header, then 32 KiB blocks of chunks: crc32, length, type FULL/FIRST/MIDDLE/LAST)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, part = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        part += chunk
        if kind in (1, 4):  # FULL, LAST
            out.append(part)
            part = b""
    return out


def wandb_history(run_dir):
    """The logged rows of a W&B offline run, from its .wandb transaction log."""
    from wandb.proto import wandb_internal_pb2

    (f,) = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    rows = []
    for data in wandb_records(f):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    it.key or "/".join(it.nested_key): json.loads(it.value_json)
                    for it in rec.history.item
                }
            )
    return rows


def test_every_sink_holds_the_same_losses(tmp_path, synth_root, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    raw = tiny_raw(synth_root)
    raw["train"].update(max_steps=4, sample_every=2, loggers=["jsonl", "tensorboard", "wandb"])
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    rows = jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    tb, tags = tb_scalars(out / "tensorboard", "loss")
    assert tb.keys() == {1, 2, 3, 4}
    for r in rows:
        assert tb[r["step"]] == pytest.approx(r["loss"], rel=1e-6)
    assert "reconstruction" in tags["images"]
    assert {"img_per_s", "ms_forward", "ms_backward", "ms_optimizer"} <= set(tags["scalars"])
    assert all(r["ms_forward"] > 0 for r in rows)  # host time per phase, every log step
    hist = [h for h in wandb_history(out) if "loss" in h]
    assert [h["_step"] for h in hist] == [1, 2, 3, 4]
    for h, r in zip(hist, rows):
        assert h["loss"] == pytest.approx(r["loss"], rel=1e-12)


def test_a_torn_metrics_line_is_repaired_on_resume(tmp_path, synth_root, capsys):
    raw = tiny_raw(synth_root)
    raw["train"].update(max_steps=2, sample_every=0)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    with open(out / "metrics.jsonl", "a") as f:  # a disk that filled mid-line
        f.write('{"step": 3, "loss": 3.36, "loss_holo": ')
    assert (
        train_main(["--config", str(cfg), "--out", str(out), "--max-steps", "4", "--no-progress"])
        == 0
    )
    assert "dropped 1 incomplete line" in capsys.readouterr().err
    assert [r["step"] for r in jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_repair_keeps_complete_lines_up_to_the_step(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n\n{"step": 3}\n{"step": 4, "lo')
    assert "dropped 1" in tracking.repair_jsonl(p, keep_step=2)
    assert jsonl(p) == [{"step": 1}, {"step": 2}]
    assert tracking.repair_jsonl(p) == ""


def test_unknown_logger_is_a_config_error(tmp_path, synth_root, capsys):
    raw = tiny_raw(synth_root)
    raw["train"]["loggers"] = ["jsonl", "mlflow"]
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "train.loggers: unknown 'mlflow'" in capsys.readouterr().err
