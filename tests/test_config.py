import pytest
import yaml

from arcdae_fast.config import ConfigError, diff_keys, from_dict, list_presets, load_config
from arcdae_fast.methods.arcdae import ArcDAEConfig
from arcdae_fast.methods.diffae import DiffAEConfig


def test_presets_load_and_validate():
    assert {"quickstart.yaml", "ffhq.yaml", "ffhq64.yaml", "celeba64.yaml"} <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert cfg.train.batch_size >= 1
        assert not cfg.notes, (name, cfg.notes)  # the packaged presets use the new keys
    ffhq = load_config("ffhq.yaml")
    d, e = ffhq.model.denoiser, ffhq.model.encoder
    assert (d.base_channels, d.channel_mult, d.num_res_blocks, d.attn_resolutions) == (
        128,
        (1, 1, 2, 3, 4),
        2,
        (16,),
    )
    assert e.channel_mult == (1, 1, 2, 3, 4, 4) and e.z_dim == 512
    assert (ffhq.train.batch_size, ffhq.train.lr, ffhq.train.ema_decay) == (128, 1e-4, 0.9999)
    assert load_config("ffhq").data.resolution == 128  # name without .yaml
    assert load_config("ffhq", ["method.name=diffae"]).method == DiffAEConfig()


def test_overrides_at_any_depth_and_types():
    cfg = load_config(
        "quickstart.yaml",
        [
            "train.batch_size=7",
            "model.denoiser.channel_mult=[1,2]",
            "model.encoder.z_dim=64",
            "train.lr=1e-3",
            "method.symmetric=true",
            "ops.backend=infonce=reference",
        ],
    )
    assert cfg.train.batch_size == 7 and cfg.model.denoiser.channel_mult == (1, 2)
    assert cfg.model.encoder.z_dim == 64 and cfg.ops.backend == "infonce=reference"
    assert cfg.train.lr == 1e-3 and cfg.method.symmetric is True
    assert isinstance(cfg.method, ArcDAEConfig)


def test_method_sections_are_typed_per_method():
    cfg = from_dict({"method": {"name": "diffae"}})
    assert isinstance(cfg.method, DiffAEConfig)
    with pytest.raises(ConfigError, match=r"unknown key 'method.lambda_jac'.*key of arcdae"):
        from_dict({"method": {"name": "diffae", "lambda_jac": 0.5}})
    with pytest.raises(
        ConfigError,
        match=r"method.name must be one of \['arcdae', 'ddaepp', 'dgae', 'diffae', 'dmz'",
    ):
        from_dict({"method": {"name": "dgae9"}})
    assert from_dict({"method": {"lambda_jac": 0.5}}).method.lambda_jac == 0.5  # default arcdae


def test_old_keys_are_documented_aliases():
    old = {
        "model": {"base_channels": 16, "enc_channel_mult": [1, 2], "head_channels": 8},
        "objective": {"preset": "arcdae", "lambda_jac": 0.5, "backend": "reference"},
    }
    cfg = from_dict(old)
    assert cfg.model.denoiser.base_channels == 16 and cfg.model.encoder.channel_mult == (1, 2)
    assert cfg.model.denoiser.head_channels == cfg.model.encoder.head_channels == 8
    assert cfg.method.lambda_jac == 0.5 and cfg.ops.backend == "reference"
    notes = " ".join(cfg.notes)
    assert "model.base_channels -> model.denoiser.base_channels" in notes
    assert "objective.preset -> method.name" in notes
    # an old model section meant the old engine's network
    assert cfg.model.arch == "adm_conv" and cfg.model.denoiser.embed_channels == 4 * 16
    assert "model.arch=adm_conv" in notes
    assert from_dict({"model": {"z_dim": 8}}).model.denoiser.head_channels == 64  # old default
    # the same configuration, written the new way
    new = {
        "model": {
            "arch": "adm_conv",
            "denoiser": {"base_channels": 16, "head_channels": 8, "embed_channels": 64},
            "encoder": {"channel_mult": [1, 2], "head_channels": 8},
        },
        "method": {"name": "arcdae", "lambda_jac": 0.5},
        "ops": {"backend": "reference"},
    }
    assert diff_keys(cfg.to_dict(), from_dict(new).to_dict()) == []
    # an old override lands on the new key
    assert load_config("quickstart.yaml", ["objective.tau_nce=0.2"]).method.tau_nce == 0.2
    assert load_config("ffhq.yaml", ["objective.preset=diffae"]).method.name == "diffae"
    with pytest.raises(ConfigError, match="model.dropout .old name of model.denoiser.dropout"):
        from_dict({"model": {"dropout": 0.1, "denoiser": {"dropout": 0.2}}})
    with pytest.raises(ConfigError, match="ops.backend=adagn=reference"):
        from_dict({"model": {"fused_adagn": False}})
    assert from_dict({"model": {"fused_adagn": True}}) == from_dict({})  # the old default


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            ["train.batchsize=3"],
            r"unknown key 'train.batchsize'; valid keys in 'train': batch_size",
        ),
        (
            ["model.denoiser.chanel_mult=[1]"],
            r"unknown key 'model.denoiser.chanel_mult'; valid keys in 'model.denoiser': "
            r"base_channels, channel_mult",
        ),
        (["trian.lr=1"], r"unknown section 'trian'; valid sections: data, model"),
        (["train.batch_size=abc"], r"train.batch_size must be of type int, got 'abc'"),
        (["train.batch_size=0"], r"train.batch_size must be >= 1, got 0"),
        (["train.batch_size=2.5"], r"train.batch_size must be of type int"),
        (
            ["diffusion.schedule=quadratic"],
            r"diffusion.schedule must be one of \['linear', 'cosine'\]",
        ),
        (["method.teacher=maybe"], r"method.teacher must be of type bool"),
        (["data.resolution=36"], r"data.resolution=36 must be divisible by"),
        (["train.adam_betas=[0.9]"], r"train.adam_betas must be two numbers"),
        (["lr=3"], r"must look like section.key=value"),
        (["model.=3"], r"must look like section.key=value"),
        (["method.teacher=false"], r"lambda_align > 0 needs method.teacher=true"),
        (["ops.backend=infonce=trtion"], r"ops.backend: unknown backend 'trtion' for op 'infonce'"),
        (["ops.backend=snr_weighted_infonce=triton"], r"unknown op 'snr_weighted_infonce'"),
        (["train.step=slow"], r"train.step must be one of \['auto', 'eager', 'compiled'\]"),
    ],
)
def test_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart.yaml", overrides)


def test_prepared_dataset_passes_validation():
    assert from_dict({"data": {"dataset": "prepared", "root": "/x"}}).data.dataset == "prepared"


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


def test_old_step_words_still_work_with_a_note():
    """train.step was reference | fast; those values still load, as eager | compiled."""
    for old, new in (("reference", "eager"), ("fast", "compiled")):
        cfg = load_config("quickstart.yaml", [f"train.step={old}"])
        assert cfg.train.step == new
        assert any(f"train.step={old} -> {new}: renamed" in n for n in cfg.notes), cfg.notes
