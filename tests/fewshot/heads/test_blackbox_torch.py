"""The `torch` adapter's sep-CMA-ES against a plain per-episode NumPy reference, and against pycma."""
from __future__ import annotations

import math

import cma
import numpy as np
import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.blackbox.adapter import BlackboxConfig, get_adapter
from fewshot.heads.blackbox.torch_adapter import SepCMAConstants, SepCMAState
from fewshot.heads.episode_loss import EpisodeLoss
from fewshot.heads.protocol import FitProtocol
from tests.fewshot.heads.data import blobs


class ReferenceSepCMA:
    """sep-CMA-ES for one episode, written plainly from Hansen's tutorial (arXiv:1604.00772,
    Table 1 and the update of Fig. 6), positive weights, c1 and c_mu times (n + 2) / 3."""

    def __init__(self, mean: np.ndarray, sigma: float, popsize: int):
        n = len(mean)
        mu = popsize // 2
        w = np.array([math.log((popsize + 1) / 2) - math.log(i) for i in range(1, mu + 1)])
        self.w = w / w.sum()
        self.mu, self.mu_eff = mu, 1 / np.sum(self.w ** 2)
        me = self.mu_eff
        self.cs = (me + 2) / (n + me + 5)
        self.ds = 1 + 2 * max(0, math.sqrt((me - 1) / (n + 1)) - 1) + self.cs
        self.cc = (4 + me / n) / (n + 4 + 2 * me / n)
        c1 = 2 / ((n + 1.3) ** 2 + me)
        cmu = min(1 - c1, 2 * (me - 2 + 1 / me) / ((n + 2) ** 2 + me))
        self.c1 = min(1, c1 * (n + 2) / 3)
        self.cmu = min(1 - self.c1, cmu * (n + 2) / 3)
        self.chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n ** 2))
        self.n, self.m, self.sigma = n, mean.astype(float).copy(), sigma
        self.C, self.ps, self.pc, self.g = np.ones(n), np.zeros(n), np.zeros(n), 0

    def ask(self, z: np.ndarray) -> np.ndarray:
        return np.array([self.m + self.sigma * np.sqrt(self.C) * zk for zk in z])

    def tell(self, z: np.ndarray, f: np.ndarray) -> None:
        idx = np.argsort(f, kind="stable")[:self.mu]
        y = np.array([np.sqrt(self.C) * z[i] for i in idx])     # the mu best steps y = C^1/2 z
        y_w = sum(wi * yi for wi, yi in zip(self.w, y))
        z_w = sum(wi * z[i] for wi, i in zip(self.w, idx))      # C^-1/2 y_w
        self.m = self.m + self.sigma * y_w
        self.ps = (1 - self.cs) * self.ps + math.sqrt(self.cs * (2 - self.cs) * self.mu_eff) * z_w
        self.g += 1
        h = np.linalg.norm(self.ps) / math.sqrt(1 - (1 - self.cs) ** (2 * self.g)) < (1.4 + 2 / (self.n + 1)) * self.chi
        self.pc = (1 - self.cc) * self.pc + h * math.sqrt(self.cc * (2 - self.cc) * self.mu_eff) * y_w
        dh = (1 - h) * self.cc * (2 - self.cc)
        rank_mu = sum(wi * yi ** 2 for wi, yi in zip(self.w, y))
        self.C = (1 - self.c1 - self.cmu) * self.C + self.c1 * (self.pc ** 2 + dh * self.C) + self.cmu * rank_mu
        self.sigma *= math.exp((self.cs / self.ds) * (np.linalg.norm(self.ps) / self.chi - 1))


def _sphere(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    return ((x - target) ** 2).sum(-1)


def test_batched_state_follows_the_reference_trajectory_with_rows_dropping_out():
    episodes, n, popsize, generations = 3, 12, 9, 25
    gen = np.random.default_rng(0)
    starts, targets = gen.standard_normal((episodes, n)), gen.standard_normal((episodes, n))
    state = SepCMAState(torch.from_numpy(starts), 0.5, SepCMAConstants.of(n, popsize))
    refs = [ReferenceSepCMA(starts[e], 0.5, popsize) for e in range(episodes)]
    for g in range(generations):
        rows = [0, 1, 2] if g < 10 else [0, 2]                  # episode 1 leaves the batch
        z = gen.standard_normal((len(rows), popsize, n))
        ids = torch.tensor(rows)
        x = state.ask(ids, torch.from_numpy(z))
        values = torch.from_numpy(_sphere(x.numpy(), targets[rows][:, None]))
        state.tell(ids, torch.from_numpy(z), values)
        for a, e in enumerate(rows):
            np.testing.assert_allclose(x[a].numpy(), refs[e].ask(z[a]), rtol=1e-12, atol=1e-12)
            refs[e].tell(z[a], values[a].numpy())
        for e, ref in enumerate(refs):
            np.testing.assert_allclose(state.mean[e].numpy(), ref.m, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(state.diag[e].numpy(), ref.C, rtol=1e-10)
            np.testing.assert_allclose(state.p_c[e].numpy(), ref.pc, rtol=1e-10, atol=1e-12)
            assert float(state.sigma[e]) == pytest.approx(ref.sigma, rel=1e-10)
    assert state.generation.tolist() == [generations, 10, generations]
    # The search learned: a generation of sphere runs shrinks the step and moves toward the target.
    assert float(state.sigma[0]) < 0.5 and not np.allclose(refs[0].C, 1.0)


def _np_loss(support: np.ndarray, labels: np.ndarray, head: np.ndarray, n_way: int) -> tuple[float, bool]:
    """(mean cross-entropy, all correct) of one flat head [(D + 1) * N] on one episode, the plain way."""
    grid = head.reshape(support.shape[1] + 1, n_way)
    logits = support @ grid[:-1] + grid[-1]
    correct = bool((logits.argmax(1) == labels).all())
    logits = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(labels)), labels])), correct


@pytest.mark.parametrize("threshold,noise", [(1e-12, 0.8), (None, 0.3)])
def test_adapter_on_the_episode_loss_matches_the_reference_loop(threshold, noise):
    """Whole adapter against the per-episode loop: the budget ending inside a generation, the best
    head, and (the first-fit stop, threshold None) episodes stopping at different generations."""
    support, labels = blobs(episodes=3, dim=6, dtype=torch.float64, noise=noise)
    n_way, budget, popsize, sigma = 3, 50, 8, 0.4
    settings = BlackboxConfig(library="torch", optimizer="sep_cma", budget=budget, population=popsize, sigma=sigma)
    size = (6 + 1) * n_way
    starts = 0.1 * torch.randn(3, size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seeds = [11, 22, 33]
    loss = EpisodeLoss(support, labels, n_way, protocol=FitProtocol(), budget=budget, threshold=threshold, start=starts)
    get_adapter("torch").run(loss, starts, seeds, settings)
    fit = loss.result()
    for e in range(3):
        x_np, y_np = support[e].numpy(), labels[e].numpy()
        ref, draws = ReferenceSepCMA(starts[e].numpy(), sigma, popsize), torch.Generator().manual_seed(seeds[e])
        best, best_value = starts[e].numpy(), _np_loss(x_np, y_np, starts[e].numpy(), n_way)[0]
        spent, stopped = 0, False
        while spent < budget and not stopped:
            z = torch.randn(popsize, size, generator=draws, dtype=torch.float64).numpy()
            x = ref.ask(z)[:budget - spent]
            evaluated = [_np_loss(x_np, y_np, xk, n_way) for xk in x]
            f = np.array([value for value, _ in evaluated])
            spent += len(x)
            meets = [k for k, (value, correct) in enumerate(evaluated)
                     if correct and (threshold is None or value < threshold)]
            if meets:                                 # the first candidate that meets the stop
                best, best_value, stopped = x[meets[0]], f[meets[0]], True
            elif f.min() < best_value:
                best, best_value = x[f.argmin()], f.min()
            if len(x) == popsize and spent < budget and not stopped:
                ref.tell(z, f)
        np.testing.assert_allclose(torch.cat([fit.weight[e], fit.bias[e, None]]).flatten().numpy(), best,
                                   rtol=1e-9, atol=1e-12)
        assert float(fit.stats["support_loss"][e]) == pytest.approx(best_value, rel=1e-6)
        assert float(fit.stats["evaluations"][e]) == spent and float(fit.stats["stop_reason"][e]) == (0 if stopped else 2)
    if threshold is None:   # the stop path is exercised: episodes left the batch at different times
        assert len(set(fit.stats["evaluations"].tolist())) > 1 and (fit.stats["stop_reason"] == 0).any()
    else:
        assert fit.stats["evaluations"].tolist() == [float(budget)] * 3


def test_sphere_progress_comparable_to_pycma_diagonal():
    """Same dimension, population, step size and budget: both reach far below the start."""
    n, popsize, generations, runs = 30, 12, 150, 4
    ours, theirs = [], []
    for run in range(runs):
        gen = np.random.default_rng(run)
        start = gen.standard_normal(n)
        state = SepCMAState(torch.from_numpy(start)[None], 1.0, SepCMAConstants.of(n, popsize))
        best = math.inf
        for _ in range(generations):
            z = torch.from_numpy(gen.standard_normal((1, popsize, n)))
            f = (state.ask(torch.tensor([0]), z) ** 2).sum(-1)
            state.tell(torch.tensor([0]), z, f)
            best = min(best, float(f.min()))
        ours.append(best)
        rng = np.random.default_rng(100 + run)     # pycma's own `seed` would reseed numpy's global generator
        es = cma.CMAEvolutionStrategy(start, 1.0, {"CMA_diagonal": True, "popsize": popsize, "seed": np.nan,
                                                   "randn": lambda *shape, rng=rng: rng.standard_normal(shape),
                                                   "verbose": -9, "verb_log": 0, "verb_disp": 0})
        for _ in range(generations):
            xs = es.ask()
            es.tell(xs, [float(np.sum(np.square(x))) for x in xs])
        theirs.append(es.result.fbest)
    # From ||x0||^2 ~ 30, both gain more than 4.5 decades (measured: 4e-5 to 3e-4 each) ...
    assert max(ours) < 1e-3 and max(theirs) < 1e-3
    # ... and their medians lie within one decade of each other.
    assert abs(np.log10(np.median(ours)) - np.log10(np.median(theirs))) < 1


def test_few_shot_episodes_comparable_to_pycma_diagonal():
    support, labels = blobs(episodes=6, dim=16)
    settings = {"budget": 400, "sigma": 0.3, "loss_threshold": 1e-9}       # run the whole budget
    ours = get_head("blackbox", library="torch", optimizer="sep_cma", **settings).fit(
        support, labels, 3, generator=torch.Generator().manual_seed(0)).stats["support_loss"]
    theirs = get_head("blackbox", library="cma", optimizer="diagonal", **settings).fit(
        support, labels, 3, generator=torch.Generator().manual_seed(0)).stats["support_loss"]
    # From log 3 = 1.10 at the zero start; measured 0.003-0.010 (torch) and 0.004-0.018 (pycma).
    assert (ours < 0.03).all() and (theirs < 0.03).all()
    assert float(ours.median()) < 3 * float(theirs.median()) and float(theirs.median()) < 3 * float(ours.median())


def test_a_collapsed_step_size_ends_the_episode_after_one_generation():
    support, labels = blobs(episodes=2, dim=8)
    fit = get_head("blackbox", library="torch", optimizer="sep_cma", budget=100, population=6, sigma=1e-13,
                   loss_threshold=1e-9).fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    assert fit.stats["evaluations"].tolist() == [6.0, 6.0] and fit.stats["stop_reason"].tolist() == [3.0, 3.0]


def test_options_are_refused_with_the_fix():
    support, labels = blobs(episodes=1, dim=8)
    head = get_head("blackbox", library="torch", optimizer="sep_cma", options={"tolx": 1})
    with pytest.raises(UserError, match="options"):
        head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UserError, match="sep_cma"):
        get_head("blackbox", library="torch", optimizer="cma")
