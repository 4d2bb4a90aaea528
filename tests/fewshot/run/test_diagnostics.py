"""Diagnostics of fitted heads: the Gram-space arithmetic against direct computations on the heads'
weights, scale and shift invariance, and hand-made cases with known answers."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.report import build_report
from fewshot.results.document import HeadResult, build_results, read_results, results_filename, write_results
from fewshot.results.verify import content_digest
from fewshot.run.diagnostics import LINEAR_ONLY, VOLUME_RADII, absent_diagnostics, diagnose
from fewshot.run.evaluate import evaluate_chunk
from fewshot.heads import HeadFit, crammer_singer, get_head
from fewshot.heads.span import SupportSpan, span_norm

KEYS = {"support_loss", "support_accuracy", "weight_norm", "sparsity", "normalized_margin", "max_margin_cosine",
        *(f"local_volume_r{r:g}" for r in VOLUME_RADII), "sharpness", "asymmetry", "span_norm_loss", "full_norm_loss"}
LOG_N = {"support_loss", "span_norm_loss", "full_norm_loss"}     # a zero head's loss, log N
INVARIANT = ["normalized_margin", "max_margin_cosine", *(f"local_volume_r{r:g}" for r in VOLUME_RADII),
             "sharpness", "asymmetry", "support_accuracy"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def episodes(count: int = 3, n_way: int = 3, k_shot: int = 3, dim: int = 12, seed: int = 1):
    """L2-normalized class-structured features (separable: S < D + 1)."""
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(count, -1).contiguous()
    centres = torch.randn(count, n_way, dim, generator=gen(seed))
    points = centres.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
    return F.normalize(points + 0.6 * torch.randn(points.shape, generator=gen(seed + 1)), dim=2), labels


def least_norm_head(support: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """[E, D + 1, N]: the least-norm (W; b) with the class-centred logits, by a pseudo-inverse."""
    augmented = torch.cat([support, torch.ones(*support.shape[:2], 1)], dim=2).double()
    centred = logits.double() - logits.double().mean(dim=2, keepdim=True)
    return torch.linalg.pinv(augmented) @ centred


def test_zero_head_has_loss_log_n_and_no_margin_volume_sharpness_or_asymmetry():
    support, labels = episodes(count=2)
    fit = HeadFit(torch.zeros(2, 12, 3), torch.zeros(2, 3))
    stats = diagnose(get_head("sgd"), fit, support, labels, generator=gen())
    assert set(stats) == KEYS
    for name in LOG_N:
        torch.testing.assert_close(stats[name], torch.full((2,), math.log(3)), msg=name)
    for name in KEYS - LOG_N - {"support_accuracy"}:
        assert stats[name].tolist() == [0.0, 0.0], name


def test_span_norm_is_the_least_norm_head_with_the_same_predictions():
    support, labels = episodes()
    weight, bias = torch.randn(3, 12, 3, generator=gen(2)), torch.randn(3, 3, generator=gen(3))
    logits = support @ weight + bias[:, None]
    expected = least_norm_head(support, logits).flatten(1).norm(dim=1)
    torch.testing.assert_close(span_norm(SupportSpan.of(support), logits), expected)
    assert (expected < torch.cat([weight, bias[:, None]], 1).flatten(1).norm(dim=1)).all()


def test_margin_and_max_margin_cosine_match_direct_computations():
    support, labels = episodes()
    head = get_head("sgd", steps=30)
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen())
    logits = support @ fit.weight + fit.bias[:, None]
    theta = least_norm_head(support, logits)
    margin = logits.gather(2, labels[..., None]).squeeze(2) - logits.scatter(2, labels[..., None], -math.inf).amax(2)
    torch.testing.assert_close(stats["normalized_margin"].double(), margin.double().amin(1) / theta.flatten(1).norm(dim=1),
                               rtol=1e-5, atol=1e-6)
    svm = get_head("max_margin").fit(support, labels, 3, generator=gen())
    reference = torch.cat([svm.weight, svm.bias[:, None]], 1).double()   # in the span and centred already
    cosine = F.cosine_similarity(theta.flatten(1), reference.flatten(1), dim=1)
    torch.testing.assert_close(stats["max_margin_cosine"].double(), cosine, rtol=0, atol=1e-5)
    svm_stats = diagnose(get_head("max_margin"), svm, support, labels, generator=gen())
    torch.testing.assert_close(svm_stats["max_margin_cosine"], torch.ones(3), rtol=0, atol=1e-5)
    assert (svm_stats["normalized_margin"] >= stats["normalized_margin"] - 1e-6).all()   # the maximum


def test_scale_out_of_span_parts_and_common_class_shifts_change_nothing():
    support, labels = episodes()
    head = get_head("logistic_regression")
    fit = head.fit(support, labels, 3, generator=gen())
    # A direction orthogonal to every support feature, and one vector added to every class.
    outside = torch.randn(3, 12, 1, generator=gen(4))
    outside -= support.transpose(1, 2) @ torch.linalg.lstsq(support.transpose(1, 2), outside).solution
    shift = torch.randn(3, 12, 1, generator=gen(5))
    changed = HeadFit(10 * fit.weight + 50 * outside + shift, 10 * fit.bias + 3.0)
    before = diagnose(head, fit, support, labels, generator=gen(6))
    after = diagnose(head, changed, support, labels, generator=gen(6))
    for name in INVARIANT:
        torch.testing.assert_close(after[name], before[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sharpness_and_asymmetry_match_the_normalized_loss_of_explicit_heads():
    support, labels = episodes(count=2)
    head = get_head("sgd", steps=20)
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen(7), rho=0.2, directions=4)
    # diagnose draws the sharpness directions first: the same draw, taken to weight space through
    # the orthonormal span basis Q = X~^T V lam^{-1/2}.
    span = SupportSpan.of(support)
    unit = span.random_directions((4,), 3, gen(7))                           # [E, M, S, N]
    augmented = torch.cat([support, torch.ones(2, support.shape[1], 1)], 2).double()
    basis = augmented.transpose(1, 2) @ span.vectors * span.values.clamp(min=1e-300).rsqrt()[:, None]
    theta = least_norm_head(support, support @ fit.weight + fit.bias[:, None])

    def normalized_loss(e, candidate):
        return F.cross_entropy(augmented[e] @ candidate / candidate.norm(), labels[e]).item()

    for e in range(2):
        rises, ratios = [], []
        for d in unit[e]:
            step = 0.2 * theta[e].norm() * (basis[e] @ d)
            up = normalized_loss(e, theta[e] + step) - normalized_loss(e, theta[e])
            down = normalized_loss(e, theta[e] - step) - normalized_loss(e, theta[e])
            rises += [up, down]
            ratios.append(abs(up - down) / (abs(up) + abs(down)))
        assert stats["sharpness"][e].item() == pytest.approx(sum(rises) / len(rises), rel=1e-4, abs=1e-7)
        assert stats["asymmetry"][e].item() == pytest.approx(sum(ratios) / len(ratios), abs=1e-4)


def test_local_volume_matches_perturbing_explicit_heads_in_weight_space():
    support, labels = episodes(count=2, dim=8)
    head = get_head("sgd", steps=50)
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen(8), perturbations=4000)
    # Independent draw: Gaussian weights projected onto the span and centred over classes.
    augmented = torch.cat([support, torch.ones(2, support.shape[1], 1)], 2).double()
    projector = torch.linalg.pinv(augmented) @ augmented                     # onto the row space
    theta = least_norm_head(support, support @ fit.weight + fit.bias[:, None])
    for e in range(2):
        u = projector[e] @ torch.randn(4000, 9, 3, generator=gen(9), dtype=torch.float64)
        u = u - u.mean(dim=2, keepdim=True)
        u = u / u.flatten(1).norm(dim=1)[:, None, None]
        for radius in VOLUME_RADII:
            moved = augmented[e] @ (theta[e] + radius * theta[e].norm() * u)
            kept = (moved.argmax(2) == labels[e]).all(dim=1).double().mean().item()
            assert stats[f"local_volume_r{radius:g}"][e].item() == pytest.approx(kept, abs=0.04), radius


def test_local_volume_falls_with_the_radius_and_is_zero_for_a_head_that_does_not_fit():
    support, labels = episodes()
    head = get_head("sgd", steps=50)
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen())
    volumes = torch.stack([stats[f"local_volume_r{r:g}"] for r in VOLUME_RADII])
    assert (volumes[:-1] >= volumes[1:]).all() and (volumes[0] > 0.5).all()
    wrong = diagnose(head, HeadFit(-fit.weight, -fit.bias), support, labels, generator=gen())
    assert all(wrong[f"local_volume_r{r:g}"].tolist() == [0.0] * 3 for r in VOLUME_RADII)
    assert (wrong["normalized_margin"] < 0).all()


def test_non_separable_support_sets_get_the_soft_margin_reference():
    support, labels = episodes(count=2)
    support = torch.cat([support, support[:, :1]], dim=1)                  # a copy, labelled otherwise
    labels = torch.cat([labels, (labels[:, :1] + 1) % 3], dim=1)
    head = get_head("sgd", steps=30)
    stats = diagnose(head, head.fit(support, labels, 3, generator=gen()), support, labels, generator=gen())
    assert torch.isfinite(torch.stack(list(stats.values()))).all()
    assert (stats["normalized_margin"] <= 0).all() and (stats["local_volume_r0.25"] == 0).all()


def test_cosine_prototype_is_diagnosed_through_its_own_predict():
    support = torch.randn(2, 6, 4, generator=gen(6)) * 5
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    head = get_head("prototype", metric="cosine")
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen())
    torch.testing.assert_close(stats["support_loss"], fit.stats["support_loss"])
    normalized = F.normalize(support, dim=2)       # the features the cosine head sees
    expected = diagnose(get_head("sgd"), fit, normalized, labels, generator=gen())
    for name in INVARIANT:
        torch.testing.assert_close(stats[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_normalized_losses_divide_the_logits_by_the_least_norm_and_the_full_norm_of_the_head():
    """Against the definitions directly: the span norm is the norm of the least-norm [W; b] with the same
    support logits (a pseudo-inverse, not centred), the full norm that of [W; b]; both scale-invariant."""
    support, labels = episodes()
    weight, bias = torch.randn(3, 12, 3, generator=gen(7)), torch.randn(3, 3, generator=gen(8))
    logits = (support @ weight + bias[:, None]).double()
    augmented = torch.cat([support, torch.ones(*support.shape[:2], 1)], dim=2).double()
    norms = {"span_norm": (torch.linalg.pinv(augmented) @ logits).flatten(1).norm(dim=1),
             "full_norm": torch.cat([weight, bias[:, None]], 1).double().flatten(1).norm(dim=1)}
    for scale in (1.0, 40.0):
        stats = diagnose(get_head("sgd"), HeadFit(weight * scale, bias * scale), support, labels, generator=gen())
        for kind, norm in norms.items():
            expected = F.cross_entropy((logits / norm[:, None, None]).flatten(0, 1), labels.flatten(),
                                       reduction="none").view(3, -1).mean(1)
            torch.testing.assert_close(stats[f"{kind}_loss"].double(), expected, rtol=1e-5, atol=1e-6, msg=kind)
    assert not torch.equal(stats["span_norm_loss"], stats["full_norm_loss"])     # random heads: out-of-span part


@pytest.mark.parametrize("settings", [{"directions": 0}, {"perturbations": 0}, {"rho": -1.0}, {"radii": (0.0,)}])
def test_bad_settings_are_user_errors(settings):
    support, labels = episodes(count=1)
    with pytest.raises(UserError, match="Diagnostics need"):
        diagnose(get_head("sgd"), HeadFit(torch.zeros(1, 12, 3), torch.zeros(1, 3)), support, labels,
                 generator=gen(), **settings)


def _network_doc(tmp_path):
    """A results file of a linear and a network head, the network's linear-only diagnostics absent."""
    support, labels = episodes(count=4)
    query, query_labels = episodes(count=4, seed=7)
    heads = []
    for name, settings in (("sgd", {"steps": 20}), ("mlp", {"model": "mlp", "width": 6, "init": "uniform", "steps": 20})):
        head = get_head("sgd", **settings)
        part = evaluate_chunk(name, head, (support, labels, query, query_labels), 3, 0, seed=0, device="cpu")
        heads.append(HeadResult(name, {}, part["accuracy"], part["seconds"], part["diagnostics"],
                                absent_diagnostics=part["absent"]))
    assert heads[0].absent_diagnostics == {} and heads[1].absent_diagnostics
    assert set(heads[1].absent_diagnostics) == set(absent_diagnostics(
        get_head("sgd", model="mlp", width=6, init="uniform").fit(support, labels, 3, generator=gen())))
    doc = build_results(config={"name": "t"}, dataset={"name": "glyphs", "split": "test", "fingerprint": "d" * 16},
                        backbone={"name": "resnet12", "checkpoint_sha256": "c" * 64},
                        episodes={"n_way": 3, "k_shot": 3, "n_query": 3, "count": 4, "seed": 0, "fingerprint": "e" * 16},
                        heads=heads, hardware={"platform": "test"})
    path = write_results(tmp_path / results_filename(3, 3), doc)
    return path, json.loads(path.read_text())


def test_results_file_records_absent_diagnostics_with_their_reason_not_zero(tmp_path):
    path, stored = _network_doc(tmp_path)
    linear, network = stored["heads"]
    assert "absent_diagnostics" not in linear and set(LINEAR_ONLY) <= set(linear["diagnostics"])
    assert network["absent_diagnostics"] == dict(sorted(LINEAR_ONLY.items()))       # each with its reason
    assert not set(LINEAR_ONLY) & set(network["diagnostics"])                       # absent, not 0
    assert read_results(path)["heads"][1]["absent_diagnostics"]["span_norm_loss"].startswith("normalized by")


@pytest.mark.parametrize("damage,message", [
    (lambda head: head.update(absent_diagnostics=["sharpness"]), "heads.1.absent_diagnostics"),
    (lambda head: head["absent_diagnostics"].update(sharpness=""), "heads.1.absent_diagnostics"),
    (lambda head: head["diagnostics"].update(sharpness={"mean": 0.0, "ci95": 0.0, "n": 4}),
     "heads.1.diagnostics.sharpness is recorded, but heads.1.absent_diagnostics"),
])
def test_read_refuses_damaged_absent_diagnostics(tmp_path, damage, message):
    path, stored = _network_doc(tmp_path)
    damage(stored["heads"][1])
    stored["digest"] = content_digest(stored)        # a consistent digest: the type check must find it
    path.write_text(json.dumps(stored))
    with pytest.raises(UserError, match="results") as error:
        read_results(path)
    assert message in str(error.value)


def test_report_shows_absent_diagnostics_as_a_dash_with_the_reason(tmp_path):
    _, stored = _network_doc(tmp_path)
    page = build_report([stored], sources=["r.json"], written="now")
    table = page[page.index('id="diagnostics"'):]
    table = table[:table.index("</section>")]
    rows = table.split("<tr>")
    network = next(row for row in rows if row.startswith("<td>mlp</td>"))
    linear = next(row for row in rows if row.startswith("<td>sgd</td>"))
    assert network.count("<td class=num>— (") == len(LINEAR_ONLY) and "<td class=num>0</td>" not in network
    assert "— (" not in linear
    assert "Not defined for this head: normalized by the norm of a linear head&#x27;s weights." in table


def test_asking_a_network_fit_for_a_linear_only_diagnostic_names_the_fix():
    support, labels = episodes()
    head = get_head("pattern_search", model="mlp", width=4, init="uniform", max_evaluations=200)
    fit = head.fit(support, labels, 3, generator=gen())
    with pytest.raises(UserError, match="local_volume_r0.5") as error:
        diagnose(head, fit, support, labels, generator=gen(), names=["local_volume_r0.5", "weight_norm"])
    assert "model: linear" in str(error.value)
    assert set(diagnose(head, fit, support, labels, generator=gen(), names=["weight_norm"])) == {"weight_norm"}


def test_the_max_margin_reference_reuses_the_max_margin_heads_solve(monkeypatch):
    support, labels = episodes(count=4, seed=5)
    head = get_head("max_margin")
    fit = head.fit(support, labels, 3, generator=gen())
    solves, solve = [], crammer_singer.solve_dual
    monkeypatch.setattr(crammer_singer, "solve_dual", lambda *a, **k: solves.append(1) or solve(*a, **k))
    reused = diagnose(head, fit, support, labels, generator=gen(1))
    assert solves == []                                            # the head's solve served the reference
    assert torch.allclose(reused["max_margin_cosine"], torch.ones(4), atol=1e-4)
    crammer_singer._SOLVED.clear()
    solved = diagnose(head, fit, support, labels, generator=gen(1))
    assert solves == [1]                                           # nothing remembered: solved again
    assert all(torch.equal(reused[name], solved[name]) for name in KEYS)


def test_a_remembered_solve_is_handed_out_as_copies():
    support, labels = episodes(count=4, seed=6)
    gram = SupportSpan.of(support).gram
    C = torch.full((4,), math.inf, dtype=gram.dtype)
    alpha, _, _ = crammer_singer.solve_dual(gram, labels, 3, C)
    kept = alpha.clone()
    crammer_singer.remembered_dual(gram, labels, 3, C)[0].zero_()
    assert torch.equal(crammer_singer.remembered_dual(gram, labels, 3, C)[0], kept)
