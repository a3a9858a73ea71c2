import pytest
import yaml

from arcdae_fast.config import ConfigError, from_dict, list_presets, load_config


def test_presets_load_and_validate():
    assert {"quickstart.yaml", "ffhq.yaml", "ffhq64.yaml", "celeba64.yaml"} <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert cfg.train.batch_size >= 1
    ffhq = load_config("ffhq.yaml")
    m = ffhq.model
    assert (m.base_channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions) == (
        128,
        (1, 1, 2, 3, 4),
        2,
        (16,),
    )
    assert m.enc_channel_mult == (1, 1, 2, 3, 4, 4) and m.z_dim == 512
    assert (ffhq.train.batch_size, ffhq.train.lr, ffhq.train.ema_decay) == (128, 1e-4, 0.9999)
    assert load_config("ffhq").data.resolution == 128  # name without .yaml


def test_overrides_and_types():
    cfg = load_config(
        "quickstart.yaml",
        [
            "train.batch_size=7",
            "model.channel_mult=[1,2]",
            "train.lr=1e-3",
            "objective.symmetric=true",
        ],
    )
    assert cfg.train.batch_size == 7 and cfg.model.channel_mult == (1, 2)
    assert cfg.train.lr == 1e-3 and cfg.objective.symmetric is True


def test_preset_fills_only_unset_objective_keys():
    cfg = from_dict({"objective": {"preset": "diffae"}})
    assert cfg.objective.lambda_align == 0 and cfg.objective.cond == "clean"
    assert not cfg.objective.teacher
    cfg = from_dict({"objective": {"preset": "diffae", "lambda_jac": 0.5}})
    assert cfg.objective.lambda_jac == 0.5


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            ["train.batchsize=3"],
            r"unknown key 'train.batchsize'; valid keys in 'train': batch_size",
        ),
        (["trian.lr=1"], r"unknown section 'trian'; valid sections: data, model"),
        (["train.batch_size=abc"], r"train.batch_size must be of type int, got 'abc'"),
        (["train.batch_size=0"], r"train.batch_size must be >= 1, got 0"),
        (["train.batch_size=2.5"], r"train.batch_size must be of type int"),
        (
            ["diffusion.schedule=quadratic"],
            r"diffusion.schedule must be one of \['linear', 'cosine'\]",
        ),
        (["objective.teacher=maybe"], r"objective.teacher must be of type bool"),
        (["data.resolution=36"], r"data.resolution=36 must be divisible by"),
        (["train.adam_betas=[0.9]"], r"train.adam_betas must be two numbers"),
        (["lr=3"], r"must look like section.key=value"),
        (["objective.teacher=false"], r"lambda_align > 0 needs objective.teacher=true"),
    ],
)
def test_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart.yaml", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no file 'nope.yaml'.*presets: celeba64.yaml"):
        load_config("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    bad.write_text(yaml.safe_dump({"train": 3}))
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(str(bad))
