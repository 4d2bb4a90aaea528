"""guess_check method exact against method rejection (the independent reference), and its contract."""
from __future__ import annotations

import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_logits
from fewshot.volume import LogitPrior, Streams
from fewshot.heads.guess_check_exact import weights_given_logits

COPIES = 300


def _episode(n_way: int, k_shot: int, dim: int = 6, spread: float = 0.8, seed: int = 0):
    """One clustered, L2-normalized episode with 10 queries per class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_way, dim, generator=g)
    points = lambda n: torch.nn.functional.normalize(  # noqa: E731
        centres.repeat_interleave(n, 0) + spread * torch.randn(n_way * n, dim, generator=g), dim=-1)
    labels = lambda n: torch.arange(n_way).repeat_interleave(n)  # noqa: E731
    return points(k_shot), labels(k_shot), points(10), labels(10)


def _compare(n_way: int, k_shot: int, dim: int):
    support, labels, query, query_labels = _episode(n_way, k_shot, dim=dim, spread=0.8 if n_way == 2 else 3.0)
    batch = lambda t: t.expand(COPIES, *t.shape)  # noqa: E731
    bias = n_way == 2  # 5-way without a bias keeps p >= 1e-4 (near-orthogonal points: about 5^-5)
    rejection = get_head("guess_check", distribution="gaussian", max_guesses=10**7, bias=bias)
    fit = rejection.fit(batch(support), batch(labels), n_way, generator=torch.Generator().manual_seed(1))
    assert bool((fit.stats["failed"] == 0).all())
    p = COPIES / float(fit.stats["guesses"].sum())                 # pooled counts: fitted / tested
    rej_log10, rej_se = math.log10(p), math.sqrt((1 - p) / COPIES) / math.log(10)
    rej_acc = linear_accuracy(rejection.predict(fit, batch(query)), batch(query_labels))
    exact = get_head("guess_check", distribution="gaussian", method="exact", bias=bias,
                     exact={"chains": 128, "repeats": 2})
    efit = exact.fit(batch(support)[:100], batch(labels)[:100], n_way, generator=torch.Generator().manual_seed(2))
    per_copy = efit.stats["log10_volume"].double()
    top = float(per_copy.max())
    mean_p = torch.pow(10.0, per_copy - top)
    ex_log10 = math.log10(float(mean_p.mean())) + top
    ex_se = float(mean_p.std() / math.sqrt(len(mean_p)) / mean_p.mean()) / math.log(10)
    ex_acc = linear_accuracy(exact.predict(efit, batch(query)[:100]), batch(query_labels)[:100])
    assert bool((linear_accuracy(exact.predict(efit, batch(support)[:100]), batch(labels)[:100]) == 1).all())
    return (rej_log10, rej_se, ex_log10, ex_se), (rej_acc, ex_acc), p


@pytest.mark.parametrize("n_way, k_shot, dim", [(2, 1, 6), (2, 3, 6), (5, 1, 32)])
def test_exact_agrees_with_rejection(n_way, k_shot, dim):
    (rej, rej_se, ex, ex_se), (rej_acc, ex_acc), p = _compare(n_way, k_shot, dim)
    assert p >= 1e-4
    assert abs(rej - ex) <= 3 * math.hypot(rej_se, ex_se), (rej, rej_se, ex, ex_se)
    joint = 1.96 * math.hypot(float(rej_acc.std()) / math.sqrt(len(rej_acc)), float(ex_acc.std()) / math.sqrt(len(ex_acc)))
    assert abs(float(rej_acc.mean()) - float(ex_acc.mean())) <= joint + 1e-9, (rej_acc.mean(), ex_acc.mean(), joint)


def test_heads_reproduce_their_sampled_support_logits():
    support, labels, _, _ = _episode(5, 5)
    support = support.unsqueeze(0).double()
    prior = LogitPrior.from_features(support, scale=1.0, bias_scale=1.0)
    logits = prior.sample(torch.randn(1, 1, 25, 5, dtype=torch.float64))[:, 0]
    weight, bias = weights_given_logits(support, logits, prior, Streams([3]))
    assert torch.allclose(linear_logits(support, weight, bias), logits, atol=1e-5)


def test_uniform_prior_rejection_vs_clt_approximation(capsys):
    """No tolerance: the gap is reported (the CLT approximation is exact only as D grows)."""
    support, labels, _, _ = _episode(2, 1, dim=6)
    batch = lambda t: t.expand(COPIES, *t.shape)  # noqa: E731
    fit = get_head("guess_check").fit(batch(support), batch(labels), 2, generator=torch.Generator().manual_seed(1))
    rejection = math.log10(COPIES / float(fit.stats["guesses"].sum()))
    exact = get_head("guess_check", method="exact", exact={"chains": 32, "repeats": 2})
    efit = exact.fit(batch(support)[:50], batch(labels)[:50], 2, generator=torch.Generator().manual_seed(2))
    assert bool((efit.stats["clt_approximation"] == 1).all())
    gap = float(efit.stats["log10_volume"].mean()) - rejection
    with capsys.disabled():
        print(f"\nuniform prior, 2-way 1-shot, D=6: log10 P(fit) rejection {rejection:.3f}, CLT {rejection + gap:.3f}, "
              f"gap {gap:+.3f} decades")
    assert math.isfinite(gap)


def test_same_numbers_for_the_same_generator():
    support, labels, _, _ = _episode(3, 2)
    head = get_head("guess_check", distribution="gaussian", method="exact", exact={"chains": 8, "repeats": 2})
    a = head.fit(support.expand(4, -1, -1), labels.expand(4, -1), 3, generator=torch.Generator().manual_seed(5))
    b = head.fit(support.expand(4, -1, -1), labels.expand(4, -1), 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.stats["log10_volume"], b.stats["log10_volume"])


@pytest.mark.parametrize("settings, match", [({"scale": 0.0}, "scale"), ({"exact": {"chains": 1}}, "chains"),
                                             ({"exact": {"bogus": 1}}, "bogus")])
def test_bad_settings_fail_clearly(settings, match):
    with pytest.raises(UserError, match=match):
        get_head("guess_check", method="exact", **settings)


def test_nan_features_fail_clearly():
    support = torch.tensor([[[float("nan"), 1.0], [0.0, 1.0]]])
    with pytest.raises(UserError, match="NaN"):
        get_head("guess_check", method="exact").fit(support, torch.tensor([[0, 1]]), 2,
                                                    generator=torch.Generator().manual_seed(0))


def test_loss_threshold_is_one_more_level():
    """Heads meet the threshold and the volume shrinks by the fraction of fitting heads below it."""
    support, labels, _, _ = _episode(2, 2)
    batch = lambda t: t.expand(20, *t.shape)  # noqa: E731
    settings = {"chains": 64, "repeats": 2}
    plain = get_head("guess_check", distribution="gaussian", method="exact", exact=settings)
    strict = get_head("guess_check", distribution="gaussian", method="exact", exact=settings, loss_threshold=0.3)
    a = plain.fit(batch(support), batch(labels), 2, generator=torch.Generator().manual_seed(0))
    b = strict.fit(batch(support), batch(labels), 2, generator=torch.Generator().manual_seed(0))
    ok = b.stats["failed"] == 0
    assert bool(ok.any()) and bool((b.stats["support_loss"][ok] < 0.3).all())
    assert float(b.stats["log10_volume"].mean()) < float(a.stats["log10_volume"].mean())


@pytest.mark.parametrize("loss", ["span_norm", "full_norm"])
def test_normalized_band_agrees_with_rejection(loss):
    """2-way 1-shot, a band holding a few % of the fitting heads: one composite splitting run vs
    rejection with the same band: log10 P within 3 se, query accuracy within its joint interval."""
    support, labels, query, query_labels = _episode(2, 1)
    band = [0.55, 0.62]
    batch = lambda t, n: t.expand(n, *t.shape)  # noqa: E731
    rejection = get_head("guess_check", distribution="gaussian", loss=loss, band=band, max_guesses=10**6)
    fit = rejection.fit(batch(support, COPIES), batch(labels, COPIES), 2, generator=torch.Generator().manual_seed(1))
    assert bool((fit.stats["failed"] == 0).all())
    p = COPIES / float(fit.stats["guesses"].sum())
    rej_log10, rej_se = math.log10(p), math.sqrt((1 - p) / COPIES) / math.log(10)
    rej_acc = linear_accuracy(rejection.predict(fit, batch(query, COPIES)), batch(query_labels, COPIES))
    exact = get_head("guess_check", distribution="gaussian", method="exact", loss=loss, band=band,
                     exact={"chains": 64, "repeats": 2})
    efit = exact.fit(batch(support, 60), batch(labels, 60), 2, generator=torch.Generator().manual_seed(2))
    assert bool((efit.stats["failed"] == 0).all()) and not bool(efit.stats["band_empty"].any())
    assert bool(((efit.stats["support_loss"] > band[0]) & (efit.stats["support_loss"] <= band[1])).all())
    from fewshot.heads.losses import decision_loss
    recomputed = decision_loss(loss, batch(support, 60), batch(labels, 60), efit.weight, efit.bias)
    assert torch.allclose(recomputed, efit.stats["support_loss"].double(), atol=1e-4)
    per_copy = efit.stats["log10_volume"].double()
    mean_p = torch.pow(10.0, per_copy - per_copy.max())
    ex_log10 = math.log10(float(mean_p.mean())) + float(per_copy.max())
    ex_se = float(mean_p.std() / math.sqrt(len(mean_p)) / mean_p.mean()) / math.log(10)
    assert abs(rej_log10 - ex_log10) <= 3 * math.hypot(rej_se, ex_se), (rej_log10, rej_se, ex_log10, ex_se)
    ex_acc = linear_accuracy(exact.predict(efit, batch(query, 60)), batch(query_labels, 60))
    joint = 1.96 * math.hypot(float(rej_acc.std()) / math.sqrt(len(rej_acc)), float(ex_acc.std()) / math.sqrt(len(ex_acc)))
    assert abs(float(rej_acc.mean()) - float(ex_acc.mean())) <= joint + 1e-9


def test_band_below_the_attainable_minimum_is_empty_at_once():
    """Per episode: a band below that episode's minimum is `band_empty` (no run); below every one: an error."""
    easy, labels, _, _ = _episode(2, 1)
    near = easy[0] + 0.05 * torch.eye(easy.shape[1])[0]
    hard = torch.nn.functional.normalize(torch.stack([easy[0], near]), dim=-1)   # near-duplicates: a higher minimum
    head = get_head("guess_check", distribution="gaussian", method="exact", loss="span_norm", band=[0.0, 0.45],
                    exact={"chains": 16, "repeats": 2})
    fit = head.fit(torch.stack([easy, hard]), labels.expand(2, -1), 2, generator=torch.Generator().manual_seed(0))
    minimum = fit.stats["min_loss"]
    assert float(minimum[0]) < 0.45 < float(minimum[1]), minimum
    assert fit.stats["band_empty"].tolist() == [0.0, 1.0] and float(fit.stats["log10_volume"][1]) == -math.inf
    assert fit.stats["failed"][1] == 1 and float(fit.stats["levels"][1]) == 0
    with pytest.raises(UserError, match="lowest attainable"):
        head.fit(hard.unsqueeze(0), labels.unsqueeze(0), 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("settings, match", [({"loss": "span_norm", "band": [0.5, 0.4]}, "band"),
                                             ({"loss": "full_norm", "bias": False, "band": [0.1, 0.5]}, "bias"),
                                             ({"loss": "nonsense"}, "loss"), ({"band": [0.1, 0.5]}, "band")])
def test_bad_band_settings_fail_clearly(settings, match):
    with pytest.raises(UserError, match=match):
        get_head("guess_check", method="exact", **settings)


def test_stalled_runs_hand_back_no_head_outside_the_cone():
    """max_levels too small for 5-way 5-shot: stalled, and every head that is not failed fits."""
    support, labels, _, _ = _episode(5, 5, dim=32, spread=3.0)
    head = get_head("guess_check", distribution="gaussian", method="exact", exact={"chains": 8, "repeats": 2, "max_levels": 4})
    fit = head.fit(support.expand(3, -1, -1), labels.expand(3, -1), 5, generator=torch.Generator().manual_seed(0))
    assert bool(fit.stats["stalled"].all())
    fitted = linear_accuracy(head.predict(fit, support.expand(3, -1, -1)), labels.expand(3, -1)) == 1
    assert bool((fitted | (fit.stats["failed"] == 1)).all())
    assert bool((fit.weight[fit.stats["failed"] == 1] == 0).all())


@pytest.mark.parametrize("kind", ["span_norm", "full_norm"])
def test_only_the_ratio_of_bias_to_weight_prior_scale_matters(kind):
    """The cone and the normalized losses are scale-invariant: scaling s and s_b together scales every
    logit (and the full norm) by the same factor, so the same streams give the same probabilities and
    the same chains up to that factor; another ratio s_b / s gives another probability."""
    from fewshot.heads.guess_check_exact import normalized_level
    from fewshot.volume import Constraints, SplittingSettings, split_volume
    support, labels, _, _ = _episode(3, 2, dim=5)
    support, labels = support.unsqueeze(0), labels.unsqueeze(0)
    settings = SplittingSettings(chains=16, repeats=2, max_levels=200)

    def run(scale: float, bias_scale: float):
        prior = LogitPrior.from_features(support, scale=scale, bias_scale=bias_scale)
        level = normalized_level(kind, support, labels, 3, prior, torch.tensor([0.9]))
        return split_volume(prior, Constraints.beat_all(labels, 3, prior), 3, Streams([1, 2]), settings,
                            torch.float64, level=level)
    base, scaled, other = run(1.0, 0.5), run(4.0, 2.0), run(1.0, 2.0)
    torch.testing.assert_close(scaled.run_log10, base.run_log10, rtol=0, atol=1e-9)
    torch.testing.assert_close(scaled.samples, 4.0 * base.samples, rtol=1e-7, atol=1e-9)
    assert float((other.run_log10 - base.run_log10).abs().max()) > 0.05
