"""The `torch` library (built in, no extra): diagonal CMA-ES batched across episodes in torch.

`sep_cma` is sep-CMA-ES (Ros & Hansen, *A simple modification in CMA-ES achieving linear time
and space complexity*, PPSN 2008): CMA-ES with a diagonal covariance matrix, whose learning
rates c1 and c_mu are those of the full algorithm times (P + 2) / 3. The update equations and
default constants are those of Hansen's tutorial (*The CMA evolution strategy: a tutorial*,
arXiv:1604.00772, Table 1) with positive recombination weights only (no active update) and
cumulative step-size adaptation (CSA). The state of every episode of a lockstep group is a row
of a tensor (mean, diagonal C, the two evolution paths [A, P]; sigma [A]), so a generation is
one draw, one loss call and a few batched tensor operations for the whole group, where pycma
runs its Python ask / tell per episode.

Randomness: one `torch.Generator` per episode, seeded from its seed, draws that episode's
[K, P] standard normals each generation, so an episode's head depends neither on the batch
nor on `episodes_at_once`. The normals and the candidates are in the loss's dtype (float32
for the usual float32 features: a float64 draw cost three times as much), the state in
float64. An episode leaves the batch when it stops, spends its budget, or its step size
collapses (sigma * sqrt(max C) < 1e-11, pycma's `tolx`): it then costs nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.heads.blackbox.adapter import (Adapter, BlackboxConfig, default_population, lockstep_groups,
                                            register_adapter)
from fewshot.heads.episode_loss import EpisodeLoss, intra_op_threads

TOLX = 1e-11  # an episode ends when sigma * sqrt(max C) falls below this (pycma's default tolx)


@dataclass(frozen=True)
class SepCMAConstants:
    """sep-CMA-ES's strategy parameters for P parameters and population K (see the module doc)."""

    weights: torch.Tensor   # [mu] recombination weights of the mu best, best first (the others get 0)
    mu_eff: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_1: float
    c_mu: float
    chi_n: float            # E ||N(0, I)||

    @classmethod
    def of(cls, n: int, popsize: int) -> "SepCMAConstants":
        """Hansen's defaults for dimension `n` and population `popsize`, with the sep-CMA scaling.

        Args:
            n: the number of parameters P.
            popsize: candidates per generation (>= 2).
        """
        mu = popsize // 2
        raw = [math.log((popsize + 1) / 2) - math.log(i + 1) for i in range(mu)]
        total = sum(raw)
        positive = [w / total for w in raw]
        mu_eff = 1 / sum(w * w for w in positive)
        c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
        d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
        c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
        c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)
        c_mu = min(1 - c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))
        scale = (n + 2) / 3  # sep-CMA: the diagonal learns (n + 2) / 3 times faster
        c_1s = min(1.0, c_1 * scale)
        c_mus = min(1 - c_1s, c_mu * scale)
        weights = torch.tensor(positive, dtype=torch.float64)
        chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
        return cls(weights, mu_eff, c_sigma, d_sigma, c_c, c_1s, c_mus, chi_n)


class SepCMAState:
    """The search state of A episodes (float64 rows) and its ask / tell (see the module doc).

    Args:
        mean: [A, P] the starting means.
        sigma: the initial step size.
        constants: `SepCMAConstants.of(P, K)`.
    """

    def __init__(self, mean: torch.Tensor, sigma: float, constants: SepCMAConstants):
        self.k = constants
        self.mean = mean.double().clone()
        self.sigma = torch.full((len(mean),), float(sigma), dtype=torch.float64, device=mean.device)
        self.diag = torch.ones_like(self.mean)
        self.p_sigma = torch.zeros_like(self.mean)
        self.p_c = torch.zeros_like(self.mean)
        self.generation = torch.zeros(len(mean), dtype=torch.long, device=mean.device)

    def _rows(self, rows: torch.Tensor) -> tuple[bool, list[torch.Tensor]]:
        """(all rows, the state's [A, P] tensors of rows): the tensors themselves when `rows` is
        every row in order (updated in place), else copies (written back by `tell`)."""
        every = len(rows) == len(self.mean)   # rows come sorted from nonzero(): all of them is 0..E-1
        tensors = [self.mean, self.diag, self.p_sigma, self.p_c]
        return every, tensors if every else [t[rows] for t in tensors]

    def ask(self, rows: torch.Tensor, normals: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Candidates [A, K, P] of rows [A]: mean + sigma sqrt(C) z, in the normals' dtype (into `out`)."""
        _, (mean, diag, _, _) = self._rows(rows)
        scale = diag.sqrt().mul_(self.sigma[rows, None]).to(normals.dtype)
        return torch.addcmul(mean.to(normals.dtype)[:, None], scale[:, None], normals, out=out)

    def tell(self, rows: torch.Tensor, normals: torch.Tensor, values: torch.Tensor,
             scratch: torch.Tensor | None = None) -> None:
        """Update rows [A] from their normals [A, K, P] and losses [A, K] (lower is better).

        In place where it can: at 600 x 3205 a fresh float64 [A, P] tensor cost ~20 ms in page
        faults against ~1 ms for the pass. `scratch` ([A, K, P], optional) receives the squared
        normals, a reused buffer for the same reason.
        """
        k = self.k
        best = torch.argsort(values, dim=1, stable=True)[:, :len(k.weights)]   # the mu best, best first
        # A weight per candidate, 0 past the mu best: two bmm's over all K read [A, K, P] once
        # each, 5x faster than gathering the mu best rows first (measured at 600 x 28 x 3205).
        weights = torch.zeros(values.shape, dtype=normals.dtype, device=normals.device).scatter_(
            1, best, k.weights.to(normals.device, normals.dtype).expand(len(rows), -1))[:, None]
        # The sums run in the normals' dtype (a float64 copy of [A, K, P] cost more than the sums).
        z_w = torch.bmm(weights, normals)[:, 0].double()                               # sum_i w_i z_(i)
        zz_w = torch.bmm(weights, torch.square(normals, out=scratch))[:, 0].double()   # sum_i w_i z_(i)^2
        every, (mean, diag, p_sigma, p_c) = self._rows(rows)
        sigma = self.sigma[rows]
        y_w = diag.sqrt().mul_(z_w)                                             # C^1/2 z_w
        mean.addcmul_(sigma[:, None], y_w)
        p_sigma.mul_(1 - k.c_sigma).add_(z_w, alpha=math.sqrt(k.c_sigma * (2 - k.c_sigma) * k.mu_eff))
        generation = self.generation[rows] + 1
        norm = p_sigma.norm(dim=1)
        corrected = norm / (1 - (1 - k.c_sigma) ** (2 * generation.double())).sqrt()
        h_sigma = (corrected < (1.4 + 2 / (mean.shape[1] + 1)) * k.chi_n).double()
        p_c.mul_(1 - k.c_c).addcmul_((h_sigma * math.sqrt(k.c_c * (2 - k.c_c) * k.mu_eff))[:, None], y_w)
        delta = (1 - h_sigma) * k.c_c * (2 - k.c_c)
        decay = 1 + k.c_1 * delta - k.c_1 - k.c_mu                             # the weights sum to 1
        # C <- decay C + c_1 p_c^2 + c_mu C sum_i w_i z_i^2 = C (decay + c_mu zz_w) + c_1 p_c^2
        diag.mul_(zz_w.mul_(k.c_mu).add_(decay[:, None])).addcmul_(p_c, p_c, value=k.c_1)
        self.sigma[rows] = sigma * torch.exp((k.c_sigma / k.d_sigma) * (norm / k.chi_n - 1))
        self.generation[rows] = generation
        if not every:
            self.mean[rows], self.diag[rows], self.p_sigma[rows], self.p_c[rows] = mean, diag, p_sigma, p_c

    def collapsed(self, rows: torch.Tensor) -> torch.Tensor:
        """[A] rows whose step size collapsed (sigma * sqrt(max C) < TOLX) or is no longer finite."""
        spread = self.sigma[rows] * self.diag[rows].amax(dim=1).sqrt()
        return (spread < TOLX) | ~torch.isfinite(spread)


def episode_normals(generators: dict[int, torch.Generator], rows: list[int], out: torch.Tensor) -> torch.Tensor:
    """Standard normals into out [A, K, P] (CPU): row a from episode rows[a]'s own generator, so
    an episode's draws do not depend on the batch. Returns `out`."""
    popsize, size = out.shape[1:]
    for row, episode in zip(out, rows):  # in place: torch.stack of 60 such draws took 20x longer
        torch.randn(popsize, size, generator=generators[episode], dtype=out.dtype, out=row)
    return out


@register_adapter("torch")
class TorchAdapter(Adapter):
    """Diagonal CMA-ES (`sep_cma`) in torch, batched across the episodes of a group."""

    module = "torch"
    install = "pip install torch (a dependency of fewshot: reinstall fewshot)"

    def optimizers(self) -> list[str]:
        return ["sep_cma"]

    def run(self, loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig) -> None:
        if settings.options:
            raise fail(f"The torch adapter takes no options, got {sorted(settings.options)}.",
                       "Remove heads.blackbox.options (set population and sigma directly).")
        popsize = settings.population or default_population(starts.shape[1])
        constants = SepCMAConstants.of(starts.shape[1], popsize)
        # The update is a few passes over [A, K, P], like a loss call: on the loss's thread count,
        # for the same reason (a thread barrier per pass cost more than the pass on the busy machine).
        with intra_op_threads(loss.threads):
            self._search(loss, starts, seeds, settings, popsize, constants)

    @staticmethod
    def _search(loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig, popsize: int,
                constants: SepCMAConstants) -> None:
        """`run` for every lockstep group: draw, ask, evaluate, tell until no row searches."""
        device, dtype = loss.support.device, loss.support.dtype
        size = starts.shape[1]
        for group in lockstep_groups(len(seeds), settings.episodes_at_once):
            generators = {e: torch.Generator().manual_seed(seeds[e]) for e in group}
            # Buffers reused every generation (rows [:A] of them): the normals (drawn on the CPU),
            # then the candidates, then, once the loss has read those, the squared normals.
            drawn = torch.empty(len(group), popsize, size, dtype=dtype)
            work = torch.empty(len(group), popsize, size, dtype=dtype, device=device)
            state = SepCMAState(starts[group.start:group.stop].to(device), settings.sigma, constants)
            ids = torch.arange(group.start, group.stop, device=device)
            searching = torch.ones(len(group), dtype=torch.bool, device=device)   # not ended by a collapse
            while True:
                rows = (searching & loss.active()[ids]).nonzero().squeeze(1)
                if rows.numel() == 0:
                    break
                episodes = [group.start + int(r) for r in rows.tolist()]
                normals = episode_normals(generators, episodes, drawn[:len(episodes)]).to(device)
                values = loss(state.ask(rows, normals, out=work[:len(episodes)]), ids[rows])
                # Rows still searching after the call evaluated all K; the others are finished.
                live = loss.active()[ids[rows]]
                if not bool(live.all()):
                    rows, normals, values = rows[live], normals[live], values[live]
                if rows.numel():
                    state.tell(rows, normals, values, scratch=work[:len(rows)])
                    gone = rows[state.collapsed(rows)]
                    searching[gone] = False
                    loss.end(ids[gone])
