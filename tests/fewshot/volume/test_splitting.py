"""Multilevel splitting against closed forms and plain Monte Carlo; bad input."""
import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.volume import Constraints, LogitPrior, SplittingSettings, Streams, split_volume


def _volume(features, labels, n_way, settings, *, bias_scale=0.0, seed=0, dtype=torch.float32):
    episodes, points = labels.shape
    prior = LogitPrior.from_features(features, scale=1.0, bias_scale=bias_scale)
    constraints = Constraints.beat_all(labels, n_way, prior)
    streams = Streams([seed * 10_000 + i for i in range(episodes * settings.repeats)])
    return split_volume(prior, constraints, n_way, streams, settings, dtype=dtype)


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


def _orthonormal_runs(chains: int, repeats: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    """One 5-way episode of 25 orthonormal points, no bias: P(fit) = 5^-25 (about 60 levels at 0.5)."""
    labels = torch.arange(5).repeat_interleave(5).unsqueeze(0)
    settings = SplittingSettings(chains=chains, repeats=repeats, sweeps=1)
    return _volume(torch.eye(25).unsqueeze(0), labels, 5, settings, seed=seed, dtype=dtype)


def test_estimate_is_unbiased_over_many_levels_with_few_chains():
    """The mean of the estimates of P is P (generalized AMS), even with 32 chains over ~60 levels.

    The rule that keeps the chains at or above the median and counts the kept fraction would be
    ~(33/32)^60 = 6x (0.8 decades) too high here: far outside the 3 standard errors allowed.
    """
    result = _orthonormal_runs(chains=32, repeats=200)
    truth = -25 * math.log10(5)
    assert float(result.levels.double().mean()) > 50
    assert abs(float(result.log10[0]) - truth) <= 3 * float(result.se[0]), (float(result.log10[0]), float(result.se[0]))


def test_float32_chains_agree_with_a_float64_reference_run():
    """The sampler runs in float32 for speed; the same estimator in float64 is its reference."""
    fast, reference = _orthonormal_runs(64, 40), _orthonormal_runs(64, 40, torch.float64, seed=1)
    joint = math.hypot(float(fast.se[0]), float(reference.se[0]))
    assert abs(float(fast.log10[0]) - float(reference.log10[0])) <= 3 * joint
    assert fast.samples.dtype == torch.float64


def test_a_1e_minus_300_volume_end_to_end_is_a_number_in_log_space():
    """20-way, 240 orthonormal support points: P(fit) = 20^-240 = 10^-312.2, through the whole analysis.

    Far below 1e-300 the analysis returns finite numbers with finite errors, never an underflow or
    NaN. It does not return an accurate one at these cheap settings: with 16 chains over ~900
    levels a run's log P has a variance of ~100 (ln units), so log10 of the (unbiased) mean is
    expected tens of decades low, and 4,560 constraints slow the mixing (docs/volume.md, "Known limits").
    """
    from fewshot.run.volume_analysis import analyze_episodes
    from fewshot.volume.config import VolumeConfig
    n_way, shots = 20, 12
    eye = torch.eye(n_way * shots + n_way)
    labels = torch.arange(n_way).repeat_interleave(shots).unsqueeze(0)
    config = VolumeConfig(enabled=True, chains=16, repeats=2, sweeps=1, burn_in=1, level_fraction=0.25,
                          max_levels=3000, bias_scale=0.0, poisoned=False)
    out = analyze_episodes(eye[: n_way * shots].unsqueeze(0), labels, eye[n_way * shots:].unsqueeze(0),
                           torch.arange(n_way).unsqueeze(0), n_way, [0], config, seed=0, setting="deep")
    assert float(out["stalled"][0]) == 0
    assert -800 < float(out["log10_volume"][0]) < -300
    assert math.isfinite(float(out["log10_volume_se"][0])) and float(out["log10_volume_se"][0]) > 0
    assert 0 <= float(out["expected_accuracy"][0]) <= 1


@pytest.mark.parametrize("block_size", [0, 3, 1])
def test_degenerate_grams_against_plain_monte_carlo(block_size):
    """Duplicate images, more points than dims and a zero feature (with a bias): no crash, right number,
    moving whole columns or blocks of points given the others (a singular K's conditionals)."""
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 0.0]]])
    labels = torch.tensor([[0, 0, 1, 1, 0]])
    settings = SplittingSettings(chains=128, repeats=8, block_size=block_size)
    result = _volume(features, labels, 2, settings, bias_scale=1.0)
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
