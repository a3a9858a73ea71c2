"""DiffAE's latent DDIM (arcdae_fast/latent.py, models/latentnet.py): the network's size
against DiffAE's MLPSkipNet formula, and training on a toy Gaussian code distribution
recovers its mean and covariance."""

import pytest
import torch

from arcdae_fast.config.schema import LatentConfig
from arcdae_fast.ema import ema_update, warmup_decay
from arcdae_fast.latent import LatentDDIM
from arcdae_fast.models.latentnet import MLPSkipNet


def test_mlp_skip_net_has_diffae_ffhq128_size():
    """Counted from phizaz/diffae model/latentnet.py (MLPSkipNetConfig of
    latent_mlp_2048_norm_10layers: 512-d code, 10 layers, 2048 hidden, skips into layers
    1..9, LayerNorm on all but the last, time embedding 64 -> 512 -> 512)."""
    d, h, n = 512, 2048, 10
    lin = lambda a, b: a * b + b  # noqa: E731
    want = lin(64, d) + lin(d, d)  # time_embed
    want += lin(d, h) + lin(d, h) + 2 * h  # layer 0: linear, cond linear, LayerNorm
    want += (n - 2) * (lin(h + d, h) + lin(d, h) + 2 * h)  # layers 1..8
    want += lin(h + d, d)  # the last: no cond, no norm
    got = sum(p.numel() for p in MLPSkipNet(d, h, n).parameters())
    assert got == want


def test_latent_ddim_recovers_a_gaussian_codes_mean_and_covariance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = 4
    mean = torch.tensor([2.0, -1.0, 0.5, 3.0])
    a = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 0.5, 0], [0, 0, -0.3, 0.2]])
    cov = a @ a.T
    codes = mean + torch.randn(20000, d, generator=g) @ a.T
    s = LatentConfig(hidden=64, layers=3, max_steps=1000, batch_size=256, lr=2e-3, ema_decay=0.995)
    m = LatentDDIM((d,), codes.mean(0), codes.std(0), s)
    untrained = m.sample(4000, steps=100, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(m.net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    for step in range(s.max_steps):
        idx = torch.randint(len(codes), (s.batch_size,), generator=g)
        loss = m.loss(codes[idx], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(m.ema, m.net, warmup_decay(s.ema_decay, step))
    x = m.sample(4000, steps=100, generator=torch.Generator().manual_seed(1))
    assert x.shape == (4000, d)
    # measured: mean within 0.013, covariance entries within 0.16 (of entries up to 1; the
    # error falls with more training and sampler steps: 0.06 at 1500 steps / 200 DDIM steps)
    torch.testing.assert_close(x.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.25, rtol=0)
    assert (torch.cov(untrained.T) - cov).abs().max() > 1.0  # what the test would see untrained
    # the state round-trips
    m2 = LatentDDIM.from_state(m.state())
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    torch.testing.assert_close(m.sample(8, 5, g1), m2.sample(8, 5, g2))


def test_latent_settings_errors():
    with pytest.raises(ValueError, match="loss"):
        LatentConfig(loss="huber").check()
    with pytest.raises(ValueError, match="ema"):
        LatentConfig(ema_decay=1.0).check()
