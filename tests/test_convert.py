"""DiffAE checkpoints: the key table derived from DiffAE's code maps our network onto DiffAE's
names and shapes exactly (FFHQ-128, against the key list DiffAE's code produces); a
checkpoint written under DiffAE's names converts back to identical tensors, into a run folder
the trainer resumes; a missing, unexpected or mismatched key is an error naming it."""

import json
from pathlib import Path

import pytest
import torch

from arcdae_fast import checkpoint
from arcdae_fast.config import from_dict, load_config
from arcdae_fast.convert import (
    ConvertError,
    convert_diffae,
    from_diffae,
    key_table,
    lightning_checkpoint,
    main,
)
from arcdae_fast.ema import frozen_copy
from arcdae_fast.methods import build
from arcdae_fast.step import build_optimizer
from arcdae_fast.train import main as train

KEYS = Path(__file__).with_name("golden") / "diffae_ffhq128_keys.txt"


def test_key_table_is_diffaes_ffhq128_state_dict_in_order():
    want = []
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            want.append(
                (
                    name,
                    tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]"))),
                )
            )
    with torch.device("meta"):
        table = key_table(build(load_config("ffhq.yaml", ["method.name=diffae"])))
    assert [(e.theirs, e.shape) for e in table] == want  # names, shapes and order
    assert len({e.ours for e in table}) == len(table) == 608


def tiny(synth_root, method="diffae"):
    from conftest import tiny_raw

    raw = tiny_raw(synth_root)
    raw["method"] = {"name": method}
    return from_dict(raw)


def test_round_trip_through_diffaes_names_is_exact(tiny_cfg, synth_root):
    torch.manual_seed(0)
    method = build(tiny(synth_root))
    for p in method.parameters():  # no zeros: every tensor distinct
        torch.nn.init.normal_(p)
    table = key_table(method)
    ours = method.trainable().state_dict()
    assert {e.ours for e in table} == set(ours)  # DiffAE's network: nothing left out
    theirs = lightning_checkpoint(method)["state_dict"]
    model = {k.removeprefix("model."): v for k, v in theirs.items() if k.startswith("model.")}
    back = from_diffae(model, table, ours, "test")
    assert back.keys() == ours.keys()
    for k in ours:
        assert torch.equal(back[k], ours[k]), k
    # errors name the key
    missing = dict(model)
    gone = table[5].theirs
    del missing[gone]
    with pytest.raises(ConvertError, match=f"missing key '{gone}'"):
        from_diffae(missing, table, ours, "test")
    bad = dict(model, **{table[7].theirs: torch.zeros(3, 2)})
    with pytest.raises(ConvertError, match=rf"key '{table[7].theirs}' has shape \(3, 2\)"):
        from_diffae(bad, table, ours, "test")
    with pytest.raises(ConvertError, match="unexpected key 'foo.weight'"):
        from_diffae(dict(model, **{"foo.weight": torch.zeros(1)}), table, ours, "test")


def fake_diffae_checkpoint(method, path, step=7):
    """Our weights written as DiffAE's LitModel would save them, with Adam state over
    model.parameters() in DiffAE's order, a latent net and x_T."""
    ema = frozen_copy(method.trainable())
    for p in ema.parameters():
        p.add_(0.5)
    ckpt = lightning_checkpoint(method, ema, step)
    sd = ckpt["state_dict"]
    sd["model.latent_net.layers.0.weight"] = torch.zeros(2, 2)
    sd["x_T"] = torch.zeros(1, 3, 16, 16)
    names = [k.removeprefix("model.") for k in sd if k.startswith("model.")]
    state = {
        i: {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.full_like(sd[f"model.{n}"], i + 1.0),
            "exp_avg_sq": torch.full_like(sd[f"model.{n}"], 1.0 / (i + 1)),
        }
        for i, n in enumerate(names)
    }
    ckpt["optimizer_states"] = [
        {"state": state, "param_groups": [{"params": list(range(len(names))), "lr": 1e-4}]}
    ]
    ckpt["hyper_parameters"] = {"img_size": 16}
    torch.save(ckpt, path)
    return ckpt, ema


@pytest.mark.parametrize("method_name", ["diffae", "arcdae"])
def test_convert_writes_a_run_the_trainer_resumes(
    synth_root, tiny_config_file, tmp_path, method_name
):
    torch.manual_seed(1)
    src = build(tiny(synth_root))
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.02)
    ckpt, ema = fake_diffae_checkpoint(src, tmp_path / "last.ckpt")
    out = tmp_path / "run"
    argv = [
        "diffae",
        str(tmp_path / "last.ckpt"),
        "--out",
        str(out),
        "--config",
        str(tiny_config_file),
    ]
    assert main([*argv, "--method", method_name]) == 0
    step, state, _ = checkpoint.load_latest(out / "checkpoints")
    assert step == 7 and state["method"] == method_name and state["format"] == 2
    for k, v in src.trainable().state_dict().items():
        assert torch.equal(state["model"][k], v), k
        assert torch.equal(state["ema"][k], ema.state_dict()[k]), k
    info = json.loads((out / "convert.json").read_text())
    assert info["left_out"] == ["model.latent_net.layers.0.weight", "x_T"]
    assert info["optimizer"] == "converted"
    # Adam's moments landed on the right parameters (reshaped where DiffAE's shapes differ)
    cfg = from_dict(state["config"])
    method = build(cfg)
    opt, _ = build_optimizer(method, 1e-4, (0.9, 0.999), 0.0, 0)
    opt.load_state_dict(state["optimizer"])
    table = {e.ours: e.theirs for e in key_table(method)}
    order = [k.removeprefix("model.") for k in ckpt["state_dict"] if k.startswith("model.")]
    named = dict(method.trainable().named_parameters())
    for name, p in named.items():
        if name in table:
            want = ckpt["optimizer_states"][0]["state"][order.index(table[name])]
            assert torch.equal(opt.state[p]["exp_avg"].flatten(), want["exp_avg"].flatten()), name
        else:  # the part head: not DiffAE's
            assert name.startswith("encoder.part_head.") and p not in opt.state
    if method_name == "arcdae":  # the teacher starts as DiffAE's EMA encoder
        for k, v in ema["encoder"].state_dict().items():
            if not k.startswith("part_head."):
                assert torch.equal(state["model"][f"teacher.{k}"], v), k
    # the trainer resumes it with the config convert wrote
    run = ["--config", str(out / "config.yaml"), "--out", str(out), "--no-progress"]
    assert train([*run, "--max-steps", "9", "train.sample_every=0"]) == 0
    assert checkpoint.load_latest(out / "checkpoints")[0] == 9


def test_convert_refuses_what_does_not_fit(synth_root, tiny_config_file, tmp_path, capsys):
    src = build(tiny(synth_root))
    fake_diffae_checkpoint(src, tmp_path / "last.ckpt")
    base = ["diffae", str(tmp_path / "last.ckpt"), "--config", str(tiny_config_file)]
    assert main([*base, "--out", str(tmp_path / "a"), "model.encoder.z_dim=8"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "has shape" in err and "Traceback" not in err
    assert main([*base, "--out", str(tmp_path / "b"), "model.arch=adm_conv"]) == 2
    assert "need model.arch=diffae" in capsys.readouterr().err
    assert main(["diffae", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "c")]) == 2
    assert "no such file" in capsys.readouterr().err
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, tmp_path / "odd.ckpt")
    assert main(["diffae", str(tmp_path / "odd.ckpt"), "--out", str(tmp_path / "d")]) == 2
    assert "cannot tell the network" in capsys.readouterr().err
    out = tmp_path / "e"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    with pytest.raises(ConvertError, match="no optimizer state|covers"):
        ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
        ckpt["optimizer_states"][0]["param_groups"][0]["params"].pop()
        torch.save(ckpt, tmp_path / "short.ckpt")
        convert_diffae(tmp_path / "short.ckpt", tmp_path / "f", config=str(tiny_config_file))
