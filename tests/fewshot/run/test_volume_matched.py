"""Guess & check at a head's own loss: against plain rejection, empty regions, what is not measured."""
import dataclasses
import math

import pytest
import torch

from episodes.errors import UserError

from fewshot.heads.losses import decision_loss
from fewshot.run.volume_matched import analyze_matched, matched_key
from fewshot.volume.config import VolumeConfig

CONFIG = VolumeConfig(enabled=True, chains=64, repeats=4, max_levels=200, matched_loss="span_norm")


def _episodes(count=2, n_way=2, k_shot=1, n_query=5, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(count, n_way, dim, generator=g)
    draw = lambda k: centres.repeat_interleave(k, 1) + 0.8 * torch.randn(count, n_way * k, dim, generator=g)  # noqa: E731
    labels = lambda k: torch.arange(n_way).repeat_interleave(k).expand(count, -1).contiguous()  # noqa: E731
    return draw(k_shot), labels(k_shot), draw(n_query), labels(n_query)


@pytest.mark.parametrize("kind", ["span_norm", "full_norm"])
def test_matches_rejection_where_rejection_works(kind):
    """2-way 1-shot, unit Gaussian prior: P(fits and normalized loss <= h) and the mean query accuracy
    of those heads, by counting 200k prior heads, against the composite splitting run (h: a loss held by
    20% of the fitting heads): log10 P within 3 joint standard errors, accuracy within its joint interval.
    With full_norm the query accuracy needs each chain's out-of-span weights (the loss conditions them)."""
    config = dataclasses.replace(CONFIG, matched_loss=kind)
    s, y, q, qy = _episodes()
    draws = 200_000
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(draws, 6, 2, generator=g, dtype=torch.float64)
    bias = torch.randn(draws, 2, generator=g, dtype=torch.float64)
    for e in range(2):
        support, labels = s[e].double().expand(draws, -1, -1), y[e].expand(draws, -1)
        fits = ((support @ weight + bias[:, None]).argmax(-1) == labels).all(1)
        loss = decision_loss(kind, support, labels, weight, bias)
        h = float(loss[fits].quantile(0.2))
        region = fits & (loss <= h)
        p = region.double().mean()
        accuracy = ((q[e].double() @ weight + bias[:, None]).argmax(-1) == qy[e]).double().mean(1)[region]
        out = analyze_matched(s[e:e + 1], y[e:e + 1], q[e:e + 1], qy[e:e + 1], 2, [e], config,
                              {"h": torch.tensor([h])}, seed=0, setting="t")
        log10, se = float(out[matched_key("h", "log10_volume")]), float(out[matched_key("h", "log10_volume_se")])
        ref_se = float((p * (1 - p) / draws).sqrt() / p / math.log(10))
        assert abs(log10 - float(p.log10())) <= 3 * math.hypot(se, ref_se), (e, log10, float(p.log10()), se)
        mean, mean_se = float(out[matched_key("h", "expected_accuracy")]), float(out[matched_key("h", "expected_accuracy_se")])
        ref_mean_se = float(accuracy.std() / math.sqrt(accuracy.numel()))
        assert abs(mean - float(accuracy.mean())) <= 3 * math.hypot(mean_se, ref_mean_se), (e, mean, float(accuracy.mean()))
        assert float(out[matched_key("h", "stalled")]) == 0 and float(out[matched_key("h", "empty")]) == 0


def test_a_loss_below_the_attainable_minimum_is_empty_and_unmeasured_heads_are_nan():
    s, y, q, qy = _episodes(count=3)
    config = VolumeConfig(enabled=True, chains=16, repeats=2, max_levels=100, matched_loss="span_norm",
                          matched_episodes=2)
    losses = {"low": torch.tensor([1e-4, 0.3, 0.3]), "network": torch.full((3,), math.nan)}
    out = analyze_matched(s, y, q, qy, 2, [0, 1, 2], config, losses, seed=0, setting="t")
    assert float(out[matched_key("low", "log10_volume")][0]) == -math.inf       # no head has that loss
    assert float(out[matched_key("low", "empty")][0]) == 1 and out[matched_key("low", "expected_accuracy")][0].isnan()
    assert out[matched_key("low", "log10_volume")][2].isnan()                   # past matched_episodes
    for key in ("log10_volume", "expected_accuracy", "chain_accuracy", "empty"):
        assert out[matched_key("network", key)].isnan().all(), key


def test_same_numbers_whatever_the_batching_and_the_other_heads():
    s, y, q, qy = _episodes(count=3)
    config = VolumeConfig(enabled=True, chains=16, repeats=2, max_levels=100, matched_loss="span_norm")
    losses = {"a": torch.tensor([0.5, 0.6, 0.55]), "b": torch.tensor([0.62, 0.66, 0.6])}
    whole = analyze_matched(s, y, q, qy, 2, [0, 1, 2], config, losses, seed=0, setting="t")
    last = analyze_matched(s[2:], y[2:], q[2:], qy[2:], 2, [2], config, {"b": losses["b"][2:]}, seed=0, setting="t")
    for key, value in last.items():
        assert torch.allclose(whole[key][2:], value, rtol=1e-12, atol=0, equal_nan=True), key


def test_full_norm_without_a_bias_is_refused_naming_the_fix():
    with pytest.raises(UserError, match="bias_scale > 0"):
        VolumeConfig(enabled=True, matched_loss="full_norm", bias_scale=0.0).check()
    VolumeConfig(enabled=True, matched_loss="full_norm", bias_scale=0.5).check()
