"""The method protocol: a method defined and registered here, in the test, trains through the
CLI (metrics of its own terms, checkpoints, resume, sample grids) with no edit outside this
file; the registry refuses malformed methods; every built-in method honours the protocol."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from arcdae_fast import checkpoint
from arcdae_fast.config import ConfigError, MethodConfig, from_dict, option
from arcdae_fast.diffusion import VPSchedule, ddim_invert, ddim_sample
from arcdae_fast.losses import DiffusionLoss
from arcdae_fast.methods import Method, RandomInputs, build, names, register, unregister
from arcdae_fast.methods.base import evaluating
from arcdae_fast.models import build_denoiser
from arcdae_fast.train import main


@dataclass
class ToyConfig(MethodConfig):
    name: str = option("toy")
    code_dim: int = option(4, min=1, doc="width of the learned code")
    lambda_code: float = option(0.01, min=0.0)


@dataclass
class ToyInputs(RandomInputs):
    t: torch.Tensor
    noise: torch.Tensor


class Toy(Method):
    """A denoiser conditioned on one learned code for the whole dataset, with an L2 term on
    that code: nothing like a real method, built only from the shared blocks."""

    name = "toy"
    Config = ToyConfig
    Inputs = ToyInputs
    PHASES = ("denoiser fwd",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.code = nn.ParameterDict({"z": nn.Parameter(torch.zeros(self.mcfg.code_dim))})
        self.denoiser = build_denoiser(cfg.model, cfg.data.resolution, cond_dim=self.mcfg.code_dim)
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        self.loss = DiffusionLoss(cfg.diffusion.parameterization)

    def terms(self):
        return ("loss", "loss_eps", "loss_code")

    def trainable(self):
        return nn.ModuleDict({"code": self.code, "denoiser": self.denoiser})

    def draw_inputs(self, x0, generator=None, batch=None):
        b = x0.shape[0] if batch is None else batch
        t = self.schedule.sample_timesteps(b, generator, x0.device)
        noise = torch.randn((b, *x0.shape[1:]), generator=generator, device=x0.device)
        return ToyInputs(t, noise)

    def forward(self, x0, inputs):
        z = self.code["z"].expand(x0.shape[0], -1)
        x_t = self.schedule.q_sample(x0, inputs.t, inputs.noise)
        eps = self.loss(
            self.denoiser(x_t, inputs.t, z), x0, inputs.noise, *self.schedule.alpha_sigma(inputs.t)
        )
        code = self.code["z"].float().square().sum()
        return {"loss": eps + self.mcfg.lambda_code * code, "loss_eps": eps, "loss_code": code}

    def encode(self, x0, nets=None):
        return self.nets(nets)["code"]["z"].detach().expand(x0.shape[0], -1)

    def decode(self, z, x_T, *, steps, nets=None):
        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            return ddim_sample(den, z, self.schedule, x_T, steps=steps)

    def invert(self, x0, z, *, steps, nets=None):
        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            return ddim_invert(den, x0, z, self.schedule, steps=steps)


@pytest.fixture
def toy():
    register(Toy)
    yield Toy
    unregister("toy")


def test_a_method_registered_in_a_test_trains_through_the_cli(toy, tiny_config_file, tmp_path):
    out = tmp_path / "toy"
    argv = ["--config", str(tiny_config_file), "--out", str(out), "--no-progress"]
    sets = ["method.name=toy", "method.code_dim=3", "train.max_steps=3", "train.ckpt_every=3"]
    assert main([*argv, *sets, "train.sample_every=3"]) == 0
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "loss_eps", "loss_code", "grad_norm"} <= set(r) for r in rows)
    assert not any("loss_align" in r or "loss_jac" in r for r in rows)  # no foreign zeros
    step, state, _ = checkpoint.load_latest(out / "checkpoints")
    assert step == 3 and state["method"] == "toy"
    assert state["model"]["code.z"].abs().sum() > 0  # the code moved off zero: it is trained
    assert (out / "samples" / "recon_00000003.png").is_file()
    # resume continues it; a key of another method is refused, naming the owner
    assert main([*argv, *sets[:2], "train.max_steps=4", "train.ckpt_every=3"]) == 0
    assert checkpoint.load_latest(out / "checkpoints")[0] == 4
    with pytest.raises(ConfigError, match=r"method.tau_nce.*key of arcdae"):
        from_dict({"method": {"name": "toy", "tau_nce": 0.2}})


def test_the_registry_refuses_malformed_methods(toy):
    assert "toy" in names() and {"arcdae", "diffae"} <= set(names())

    class Nameless(Method):
        Config, Inputs = ToyConfig, ToyInputs

    with pytest.raises(TypeError, match="name must be a non-empty str"):
        register(Nameless)
    with pytest.raises(TypeError, match="takes a Method subclass"):
        register(object)

    class Other(Toy):
        pass

    with pytest.raises(ValueError, match="'toy' is already registered"):
        register(Other)


@pytest.mark.parametrize("name", ["arcdae", "diffae"])
def test_builtin_methods_follow_the_protocol(name, tiny_cfg):
    raw = tiny_cfg.to_dict()
    raw["method"] = {"name": name}
    method = build(from_dict(raw))
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    inputs = method.draw_inputs(x0, torch.Generator().manual_seed(0))
    assert isinstance(inputs, method.Inputs)
    half = inputs.rows(2, 4)
    full = method.draw_inputs(x0, torch.Generator().manual_seed(0), batch=4)
    for f in inputs.__dataclass_fields__:
        a, b = getattr(half, f), getattr(full, f)
        if a is not None:
            dim = inputs.__dataclass_fields__[f].metadata.get("batch_dim", 0)
            assert a.shape[dim] == 2 and torch.equal(a, b.narrow(dim, 2, 2)), f
    out = method(x0, inputs, **method.flags(0))
    assert list(out) == list(method.terms()) and method.terms()[0] == "loss"
    assert all(v.dtype == torch.float32 and v.dim() == 0 for v in out.values())
    assert "denoiser" in method.trainable()
    z = method.encode(x0)
    assert z.shape == (4, tiny_cfg.model.encoder.z_dim)
    rec = method.reconstruct(x0, steps=2)
    assert rec.shape == x0.shape and torch.isfinite(rec).all()
    assert all(not p.requires_grad for t in method.targets().values() for p in t.parameters())
