"""Multilevel splitting against closed forms and plain Monte Carlo; bad input."""
import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.volume import Constraints, LogitPrior, SplittingSettings, Streams, split_volume


def _volume(features, labels, n_way, settings, *, bias_scale=0.0, seed=0):
    episodes, points = labels.shape
    prior = LogitPrior.from_features(features, scale=1.0, bias_scale=bias_scale)
    constraints = Constraints.beat_all(torch.arange(points).expand(episodes, points), labels, n_way, prior)
    streams = Streams([seed * 10_000 + i for i in range(episodes * settings.repeats)])
    return split_volume(prior, constraints, n_way, streams, settings)


def test_two_way_one_shot_without_bias_is_angle_over_two_pi():
    """Fit iff (w0 - w1).x1 > 0 > (w0 - w1).x2: probability angle(x1, x2) / (2 pi)."""
    angles = torch.tensor([0.3, 1.2, 2.5])
    features = torch.stack([torch.stack([torch.tensor([1.0, 0.0, 0.0]),
                                         torch.tensor([a.cos(), a.sin(), 0.0])]) for a in angles])
    labels = torch.tensor([[0, 1]]).expand(3, 2)
    result = _volume(features, labels, 2, SplittingSettings(chains=128, repeats=8))
    truth = (angles.double() / (2 * math.pi)).log10()
    assert bool(((result.log10 - truth).abs() <= 3 * result.se + 0.02).all()), (result.log10, truth, result.se)


def test_orthonormal_points_multiply_and_agree_within_three_standard_errors():
    """Orthonormal features, no bias: points are independent, P = N^-S exactly."""
    features = torch.eye(8).expand(4, 8, 8)
    labels = torch.randint(0, 3, (4, 8), generator=torch.Generator().manual_seed(1))
    result = _volume(features, labels, 3, SplittingSettings(chains=64, repeats=6))
    truth = -8 * math.log10(3)
    assert bool(((result.log10 - truth).abs() <= 3 * result.se + 0.05).all()), (result.log10, result.se)


def test_degenerate_grams_against_plain_monte_carlo():
    """Duplicate images, more points than dims and a zero feature (with a bias): no crash, right number."""
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 0.0]]])
    labels = torch.tensor([[0, 0, 1, 1, 0]])
    result = _volume(features, labels, 2, SplittingSettings(chains=128, repeats=8), bias_scale=1.0)
    prior = LogitPrior.from_features(features, scale=1.0, bias_scale=1.0)
    z = prior.sample(torch.randn(1, 400_000, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    fits = (z.argmax(-1) == labels[:, None]).all(-1).double().mean()
    mc_se = math.sqrt(float(fits) * (1 - float(fits)) / 400_000) / float(fits) / math.log(10)
    joint = math.sqrt(float(result.se[0]) ** 2 + mc_se ** 2)
    assert abs(float(result.log10[0]) - math.log10(float(fits))) <= 3 * joint + 0.02


def test_contradictory_duplicates_give_zero_volume_not_a_loop():
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    result = _volume(features, torch.tensor([[0, 1]]), 2, SplittingSettings(chains=16, repeats=2))
    assert float(result.log10[0]) == -math.inf and not math.isnan(float(result.se[0]))


def test_volumes_far_below_1e_minus_300_are_numbers_not_underflows():
    """Estimates are kept as log10: combining runs at 1e-300 and 1e-1000 stays exact."""
    from fewshot.volume.splitting import combine_runs
    runs = torch.tensor([[-300.0, -300.0 + math.log10(3)], [-1000.0, -1000.0]], dtype=torch.float64)
    log10, se = combine_runs(runs)
    assert torch.allclose(log10, torch.tensor([-300 + math.log10(2), -1000.0], dtype=torch.float64))
    assert bool(torch.isfinite(se).all()) and float(se[1]) == 0.0


@pytest.mark.parametrize("change, key", [({"chains": 1}, "chains"), ({"repeats": 1}, "repeats"),
                                         ({"level_fraction": 1.0}, "level_fraction")])
def test_bad_settings_fail_clearly(change, key):
    settings = SplittingSettings(**change)
    with pytest.raises(UserError, match=key):
        _volume(torch.eye(2).unsqueeze(0), torch.tensor([[0, 1]]), 2, settings)


def test_bad_prior_and_features_fail_clearly():
    with pytest.raises(UserError, match="scale must be > 0"):
        LogitPrior.from_features(torch.eye(2).unsqueeze(0), scale=0.0, bias_scale=1.0)
    with pytest.raises(UserError, match="NaN"):
        LogitPrior.from_features(torch.tensor([[[float("nan"), 0.0]]]), scale=1.0, bias_scale=1.0)
    with pytest.raises(UserError, match="all-zero features"):
        _volume(torch.zeros(1, 2, 3), torch.tensor([[0, 1]]), 2, SplittingSettings())
