"""guess_check: fits easy problems; its guess counts estimate the fitting volume."""
from __future__ import annotations

import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_logits, linear_loss
from fewshot.heads.mlp_model import MLPModel
from tests.fewshot.conftest import run_fewshot


def test_easy_two_way_one_shot_problem_is_solved():
    support = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.2, 0.0], [-1.0, 0.1, 0.3]]]), dim=-1)
    labels = torch.tensor([[0, 1]])
    fit = get_head("guess_check").fit(support.expand(8, -1, -1), labels.expand(8, -1), 2,
                                      generator=torch.Generator().manual_seed(0))
    logits = linear_logits(support.expand(8, -1, -1), fit.weight, fit.bias)
    assert torch.all(linear_accuracy(logits, labels.expand(8, -1)) == 1.0)
    assert torch.all(fit.stats["failed"] == 0) and torch.all(fit.stats["guesses"] >= 1)
    assert torch.all(fit.weight.abs() <= 1.0) and torch.all(fit.bias.abs() <= 1.0)  # uniform [-1, 1]


def test_mean_guess_count_matches_the_fitting_probability():
    """2-way 1-shot, no bias, Gaussian heads. Guess (w1, w2) fits iff u = w1 - w2 has
    u.x1 > 0 and u.x2 < 0, i.e. u lies in the half-spaces with normals x1 and -x2. u is
    isotropic, and two half-spaces whose normals are at angle phi hold a fraction
    (pi - phi) / (2 pi) of the directions; here phi = angle(x1, -x2) = pi - theta, so the
    fitting probability is p = theta / (2 pi), theta = angle(x1, x2). (theta -> 0: the two
    examples coincide, no head fits; theta = pi: opposite examples, half of all heads fit.)
    Guesses until the first fit are geometric: mean 1/p, variance (1 - p) / p^2."""
    episodes, dim = 3000, 4
    generator = torch.Generator().manual_seed(0)
    theta = math.pi / 4 + torch.rand(episodes, generator=generator) * (3 * math.pi / 4)
    # x1 and x2 at angle theta in a random plane of R^dim.
    basis, _ = torch.linalg.qr(torch.randn(episodes, dim, 2, generator=generator))
    x1 = basis[:, :, 0]
    x2 = torch.cos(theta).unsqueeze(1) * basis[:, :, 0] + torch.sin(theta).unsqueeze(1) * basis[:, :, 1]
    support, labels = torch.stack([x1, x2], dim=1), torch.tensor([[0, 1]]).expand(episodes, -1)
    head = get_head("guess_check", distribution="gaussian", bias=False, max_guesses=10_000)
    fit = head.fit(support, labels, 2, generator=torch.Generator().manual_seed(1))
    assert torch.all(fit.stats["failed"] == 0)
    p = (theta / (2 * math.pi)).double()
    guesses = fit.stats["guesses"].double()
    z = (guesses.sum() - (1 / p).sum()) / ((1 - p) / p**2).sum().sqrt()
    assert abs(float(z)) < 4.0, f"mean guesses {float(guesses.mean()):.3f} vs {float((1 / p).mean()):.3f}"
    # The wrong candidate formula, (pi - theta) / (2 pi), predicts clearly different counts.
    wrong = ((math.pi - theta) / (2 * math.pi)).double()
    assert abs(float((1 / wrong).mean() - guesses.mean())) > 1.0


def test_budget_exhausted_is_reported_and_returns_the_best_guess():
    # Identical examples with different labels: no head fits.
    support = torch.ones(3, 2, 4)
    labels = torch.tensor([[0, 1]]).expand(3, -1)
    fit = get_head("guess_check", max_guesses=50, batch=16).fit(support, labels, 2,
                                                                  generator=torch.Generator().manual_seed(0))
    assert torch.all(fit.stats["failed"] == 1.0) and torch.all(fit.stats["guesses"] == 50)
    loss = linear_loss(linear_logits(support, fit.weight, fit.bias), labels)
    assert fit.stats["support_loss"] == pytest.approx(loss, abs=1e-6)
    # Any head loses at least log 2 here (equal logits are best); a typical uniform guess has a
    # logit gap of ~1.3 and loses ~1.0, the best of 50 comes close to log 2.
    assert torch.all(loss < math.log(2) + 0.05)


def test_loss_threshold_and_determinism():
    points = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(2))
    support = torch.nn.functional.normalize(points, dim=-1)
    labels = torch.tensor([[0, 1]]).expand(5, -1)
    head = get_head("guess_check", loss_threshold=0.5, scale=3.0)
    fit = head.fit(support, labels, 2, generator=torch.Generator().manual_seed(3))
    again = head.fit(support, labels, 2, generator=torch.Generator().manual_seed(3))
    loss = linear_loss(linear_logits(support, fit.weight, fit.bias), labels)
    assert torch.all(fit.stats["failed"] == 0) and torch.all(loss < 0.5)
    assert torch.equal(fit.weight, again.weight) and torch.equal(fit.stats["guesses"], again.stats["guesses"])


def test_rejects_bad_settings():
    with pytest.raises(UserError, match="distribution"):
        get_head("guess_check", distribution="cauchy")


def _plain_network_loss(x: torch.Tensor, y: torch.Tensor, params: torch.Tensor, width: int, n_way: int):
    """(cross-entropy, all correct) of one one-hidden-layer ReLU head on one episode, written out."""
    dim = x.shape[1]
    first = params[:(dim + 1) * width].view(dim + 1, width)
    second = params[(dim + 1) * width:].view(width + 1, n_way)
    logits = torch.relu(x @ first[:dim] + first[dim]) @ second[:width] + second[width]
    loss = torch.nn.functional.cross_entropy(logits.double(), y)
    return float(loss), bool((logits.argmax(1) == y).all())


def test_mlp_rejection_matches_a_plain_per_episode_loop_with_the_same_draws():
    """2-way 1-shot, width 8: every guess of every round, one episode at a time, by hand."""
    episodes, dim, width, batch, budget = 12, 5, 8, 4, 12
    points = torch.randn(episodes, 2, dim, generator=torch.Generator().manual_seed(4))
    support = torch.nn.functional.normalize(points, dim=-1)
    labels = torch.tensor([[0, 1]]).expand(episodes, -1)
    head = get_head("guess_check", model="mlp", width=width, batch=batch, max_guesses=budget)
    fit = head.fit(support, labels, 2, generator=torch.Generator().manual_seed(7))
    # The reference draws what the head draws: per round, `batch` networks for each episode still guessing.
    generator, model = torch.Generator().manual_seed(7), MLPModel(width=width)
    size = model.n_params(dim, 2)
    best = torch.zeros(episodes, size)
    best_loss, guesses, done = [math.inf] * episodes, [0] * episodes, [False] * episodes
    while True:
        active = [e for e in range(episodes) if not done[e] and guesses[e] < budget]
        if not active:
            break
        draws = model.draw_start("uniform", 1.0, len(active) * batch, dim, 2, generator, "cpu")
        draws = draws.view(len(active), batch, size)
        for row, e in enumerate(active):
            for b in range(batch):
                loss, correct = _plain_network_loss(support[e], labels[e], draws[row, b], width, 2)
                guesses[e] += 1
                if correct:
                    best[e], best_loss[e], done[e] = draws[row, b], loss, True
                    break
                if loss < best_loss[e]:
                    best[e], best_loss[e] = draws[row, b], loss
    assert fit.stats["guesses"].tolist() == [float(g) for g in guesses]
    assert fit.stats["failed"].tolist() == [float(not d) for d in done]
    assert 0 < sum(done) < episodes                   # both outcomes are exercised
    assert torch.equal(fit.params, best)
    assert fit.stats["support_loss"].tolist() == pytest.approx(best_loss, rel=1e-5)
    # The fitted networks classify their support sets (the model's own forward pass agrees).
    fitted = fit.stats["failed"] == 0
    predicted = head.predict(fit, support).argmax(-1)
    assert (predicted[fitted] == labels[fitted]).all()


def test_mlp_with_method_exact_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(UserError, match="method: rejection"):
        get_head("guess_check", model="mlp", method="exact")
    result = run_fewshot("benchmark", "heads.guess_check.model=mlp", "heads.guess_check.method=exact",
                         "--output-dir", str(tmp_path / "out"), data_root=tmp_path, check=False)
    assert result.returncode == 2 and "distribution: nngp" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
