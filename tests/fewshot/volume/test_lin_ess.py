"""LIN-ESS: the arc sampler against a grid reference, and sampler output against known marginals."""
import math

import pytest
import scipy.stats
import torch

from fewshot.volume import Constraints, LogitPrior, Streams, feasible_arc_sample, lin_ess_class_step, lin_ess_step
from fewshot.volume.gaussian import PointBlocks

GRID = 200_001


def _feasible_on_grid(a: torch.Tensor, b: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(0, 2 * math.pi, GRID, dtype=torch.float64)
    ok = (a[:, None] * t.cos() + b[:, None] * t.sin() + shift >= 0).all(0)
    return t, ok


def test_arc_sampler_is_uniform_on_several_arcs():
    """Shifted constraints can leave several feasible arcs: t must be uniform on their union."""
    torch.manual_seed(0)
    a = torch.tensor([0.2, -0.1, 0.3, 0.1], dtype=torch.float64)   # t = 0 feasible with shift 0.5
    b = torch.tensor([1.5, -2.0, 0.4, 2.5], dtype=torch.float64)
    shift = 0.5
    grid, ok = _feasible_on_grid(a, b, shift)
    pieces = int((ok[1:] & ~ok[:-1]).sum()) + int(ok[0])
    assert pieces >= 2, "the case must have several feasible arcs"
    draws = feasible_arc_sample(a.expand(4000, 4), b.expand(4000, 4), torch.full((4000,), shift),
                                torch.rand(4000, dtype=torch.float64))
    step = grid[1] - grid[0]
    assert bool(((a * draws[:, None].cos() + b * draws[:, None].sin() + shift) >= -1e-9).all())
    cdf = torch.cumsum(ok.double(), 0) / ok.double().sum()
    reference = lambda x: cdf[(torch.as_tensor(x) / step).long().clamp(0, GRID - 1)].numpy()  # noqa: E731
    assert scipy.stats.kstest(draws.numpy(), reference).pvalue > 1e-3


def test_arc_sampler_on_a_cone_stays_on_the_arc_through_zero():
    a = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
    t = feasible_arc_sample(a.expand(1000, 2), b.expand(1000, 2), torch.zeros(1000, dtype=torch.float64),
                            torch.rand(1000, dtype=torch.float64))
    values = a * t[:, None].cos() + b * t[:, None].sin()
    assert bool((values >= -1e-9).all())


@pytest.mark.parametrize("step", [lin_ess_step, lin_ess_class_step])
def test_half_space_truncated_gaussian_marginal_is_half_normal(step):
    """2-way, one point: z_0 - z_1 >= 0 cuts N(0, K) in half; along the normal it is half-normal."""
    chains = 2000
    features = torch.tensor([[[0.6, 0.8, 0.0]]])
    prior = LogitPrior.from_features(features, scale=1.3, bias_scale=0.7)
    constraints = Constraints.beat_all(torch.zeros(1, 1, dtype=torch.long), 2, prior)
    z = torch.zeros(1, chains, 1, 2, dtype=torch.float64)
    z[..., 0] = 1e-3                                           # feasible start
    streams = Streams([7])
    for _ in range(30):
        z = step(z, torch.zeros(1, dtype=torch.float64), constraints, prior, streams, torch.tensor([0]))
    normal = constraints.values(z)[0, :, 0]                    # (z_0 - z_1) / its prior std
    assert bool((normal >= 0).all())
    assert scipy.stats.kstest(normal.numpy(), scipy.stats.halfnorm.cdf).pvalue > 1e-3
    # The other direction (z_0 + z_1) is untouched by the constraint: still normal.
    other = (z[0, :, 0, 0] + z[0, :, 0, 1]) / (2 * prior.variance[0, 0]).sqrt()
    assert scipy.stats.kstest(other.numpy(), scipy.stats.norm.cdf).pvalue > 1e-3


def test_rank_deficient_gram_is_handled():
    """Duplicates and more points than dims: K is singular; draws still have covariance K."""
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])
    prior = LogitPrior.from_features(features, scale=1.0, bias_scale=0.0)
    assert int((prior.eigenvalues[0] > 0).sum()) == 2
    z = prior.sample(torch.randn(1, 20000, 4, 1, dtype=torch.float64))[0, :, :, 0]
    expected = features[0].double() @ features[0].double().T
    assert torch.allclose(z.T @ z / len(z), expected, atol=0.05)
    assert torch.allclose(z[:, 0], z[:, 1])


@pytest.mark.parametrize("size", [0, 2, 1])
def test_block_moves_sample_the_restricted_prior_like_rejection(size):
    """3-way, 4 correlated points in 2 dims plus a bias (K has rank 3 < 4): moving blocks of points given
    the others must leave the prior restricted to the fitting cone invariant. Reference: rejection."""
    features = torch.tensor([[[1.0, 0.2], [0.8, 0.6], [0.1, 1.0], [-0.5, 0.7]]])
    labels = torch.tensor([[0, 0, 1, 2]])
    prior = LogitPrior.from_features(features, scale=1.0, bias_scale=0.8)
    constraints = Constraints.beat_all(labels, 3, prior)
    noise = torch.randn(1, 1_500_000, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    draws = prior.sample(noise)
    accepted = draws[0][constraints.score(draws)[0] >= 0]
    chains = 1000
    z = accepted[:chains].unsqueeze(0).clone()           # feasible starts, then 25 sweeps to forget them
    streams, block_prior = Streams([11]), PointBlocks.from_prior(prior, size)
    for _ in range(25):
        z = lin_ess_class_step(z, torch.zeros(1, dtype=torch.float64), constraints, block_prior, streams,
                               torch.tensor([0]))
    assert bool((constraints.score(z) >= -1e-9).all())
    reference = accepted[chains:]
    for point, klass in ((0, 0), (2, 1), (3, 0)):
        assert scipy.stats.ks_2samp(z[0, :, point, klass].numpy(), reference[:, point, klass].numpy()).pvalue > 1e-3
