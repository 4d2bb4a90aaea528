"""The NNGP kernel against wide random ReLU networks, and the volume lab under the NNGP prior."""
from __future__ import annotations

import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.run.volume_analysis import analyze_episodes
from fewshot.volume.config import VolumeConfig
from fewshot.volume.nngp import NNGPSettings, nngp_kernel


def _random_network_logits(x: torch.Tensor, settings: NNGPSettings, width: int, networks: int,
                           generator: torch.Generator) -> torch.Tensor:
    """Logits [networks, P] of one read-out unit of independent random ReLU networks on points x [P, D]."""
    points, dim = x.shape
    hidden = x.double() @ (settings.s1 * torch.randn(networks, dim, width, generator=generator, dtype=torch.float64)) \
        + settings.b1 * torch.randn(networks, 1, width, generator=generator, dtype=torch.float64)
    for _ in range(settings.depth - 1):
        w = settings.s2 / math.sqrt(width) * torch.randn(networks, width, width, generator=generator, dtype=torch.float64)
        hidden = hidden.relu() @ w + settings.b2 * torch.randn(networks, 1, width, generator=generator, dtype=torch.float64)
    readout = settings.s2 / math.sqrt(width) * torch.randn(networks, width, 1, generator=generator, dtype=torch.float64)
    return (hidden.relu() @ readout).squeeze(2) + settings.b2 * torch.randn(networks, 1, generator=generator,
                                                                            dtype=torch.float64)


@pytest.mark.parametrize("depth,width", [(1, 32), (2, 512)])
def test_kernel_is_the_covariance_of_wide_random_networks(depth, width):
    """Depth 1: exact at any width. Depth 2: the O(1/H) finite-width bias is far below the error at H = 512."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    x[1] = -x[0] + 0.1 * x[1]          # an obtuse pair: the arc-cosine kernel's interesting side
    settings = NNGPSettings(depth=depth, s1=0.8, b1=0.3, s2=1.3, b2=0.5)
    kernel = nngp_kernel(x.unsqueeze(0), settings)[0]
    networks, batch = (6000, 1000) if depth == 1 else (1500, 50)       # batches keep H x H weights in memory
    z = torch.cat([_random_network_logits(x, settings, width, batch, g) for _ in range(networks // batch)])  # [n, P]
    products = z.unsqueeze(2) * z.unsqueeze(1)                                        # [n, P, P]
    estimate, se = products.mean(0), products.std(0) / math.sqrt(len(z))
    assert ((estimate - kernel).abs() <= 4 * se).all(), (estimate, kernel, se)
    assert (se < 0.1 * kernel.diagonal().max()).all()   # the test can fail: the error is small


def test_nngp_volume_analysis_gives_finite_volumes_and_labels_its_prior():
    g = torch.Generator().manual_seed(1)
    support, query = torch.randn(2, 2, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    labels, query_labels = torch.tensor([[0, 1]] * 2), torch.tensor([[0, 1, 0, 1]] * 2)
    config = VolumeConfig(enabled=True, prior="nngp", nngp=NNGPSettings(depth=2), chains=16, repeats=2, poisoned=False)
    out = analyze_episodes(support, labels, query, query_labels, 2, [0, 1], config, seed=0, setting="t")
    # 2-way 1-shot: P(fit) is that of two independent classes' logit differences; between 1/4 and 1 here.
    assert torch.isfinite(out["log10_volume"]).all() and (out["log10_volume"] > -1.5).all()
    assert ((out["expected_accuracy"] >= 0) & (out["expected_accuracy"] <= 1)).all()


def test_nngp_prior_one_shot_volume_matches_rejection():
    """2-way 1-shot: fitting is z0(x0) > z1(x0) and z1(x1) > z0(x1); rejection on the NNGP prior gives P."""
    g = torch.Generator().manual_seed(4)
    support = torch.randn(1, 2, 5, generator=g)
    labels = torch.tensor([[0, 1]])
    settings = NNGPSettings(depth=1, s1=1.0, b1=0.5, s2=1.0, b2=0.2)
    config = VolumeConfig(enabled=True, prior="nngp", nngp=settings, chains=64, repeats=4, poisoned=False)
    out = analyze_episodes(support, labels, support, labels, 2, [0], config, seed=0, setting="t")
    kernel = nngp_kernel(support, settings)[0]
    draws = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), kernel).sample((200000, 2))
    fits = ((draws[:, 0, 0] > draws[:, 1, 0]) & (draws[:, 1, 1] > draws[:, 0, 1])).double().mean()
    se = float(out["log10_volume_se"][0])
    assert abs(float(out["log10_volume"][0]) - math.log10(float(fits))) <= 4 * se + 0.01


@pytest.mark.parametrize("settings,key", [(NNGPSettings(depth=3), "depth"), (NNGPSettings(s1=0), "s1"),
                                          (NNGPSettings(b2=-1), "b2")])
def test_bad_nngp_settings_name_the_fix(settings, key):
    with pytest.raises(UserError, match=f"volume.nngp.{key}"):
        VolumeConfig(prior="nngp", nngp=settings).check("volume")
