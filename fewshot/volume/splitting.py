"""log P(polyhedron) under the logit prior by multilevel splitting (Holmes-Diaconis-Ross), in log space.

P(g_j(z) >= 0 for all j) is written as a product of conditional probabilities over levels
{score(z) >= -shift_k} with shifts decreasing to 0 (score = min_j g_j, the constraints being
normalized by their prior standard deviation). Levels are chosen adaptively: with C chains at
level k, the next shift is the one that keeps a fraction `level_fraction` of them (adaptive
multilevel splitting, Cerou & Guyader 2007), and that fraction is the level's conditional
probability. Killed chains restart from copies of survivors and every chain makes `sweeps`
LIN-ESS sweeps at the new level (one move per class column, `lin_ess_class_step`). The last
level keeps the fraction of chains that satisfy the unshifted constraints; its survivors, after
`burn_in` more sweeps, are the returned samples of the prior restricted to the polyhedron.
Level 0 is the prior itself (exact draws): a large shift makes every point feasible, so no
initial feasible point has to be searched for.

The estimate is accumulated as a sum of logs, so 1e-300 and far below are fine. Its error comes
from `repeats` independent runs per episode (own streams, own levels): the estimate is log10 of
their mean and the standard error the delta-method one, se(mean p) / (mean p ln 10).

Example:
    >>> result = split_volume(prior, constraints, streams, settings)   # streams: E * repeats
    >>> result.log10, result.se                                          # [E] each
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.lin_ess import Constraints, lin_ess_class_step
from fewshot.volume.streams import Streams

__all__ = ["SplittingSettings", "SplitResult", "split_volume", "combine_runs"]
MIN_SHIFT = 1e-9  # a level this close to the cone is the cone (stops contradictory constraints looping)


@dataclass
class SplittingSettings:
    """Args:
        chains: chains per independent run (>= 2).
        repeats: independent runs per episode, for the standard error (>= 2).
        level_fraction: conditional probability targeted at each level, in (0, 1).
        sweeps: LIN-ESS moves per chain after each level's resampling.
        burn_in: extra moves at the final level before samples are returned.
        max_levels: stop a run after this many levels and flag its episode `stalled`.
    """

    chains: int = 64
    repeats: int = 4
    level_fraction: float = 0.5
    sweeps: int = 2
    burn_in: int = 2
    max_levels: int = 1000

    def check(self, where: str) -> None:
        """Fail with a message naming `where.key` on a bad setting."""
        rules = [(self.chains >= 2, "chains", ">= 2"), (self.repeats >= 2, "repeats", ">= 2"),
                 (0 < self.level_fraction < 1, "level_fraction", "in (0, 1)"),
                 (self.sweeps >= 1, "sweeps", ">= 1"), (self.burn_in >= 0, "burn_in", ">= 0"),
                 (self.max_levels >= 1, "max_levels", ">= 1")]
        for ok, key, rule in rules:
            if not ok:
                raise fail(f"{where}.{key} is {getattr(self, key)!r}, but must be {rule}.",
                           f"Set {where}.{key} to a value {rule}.")


@dataclass
class SplitResult:
    """Per episode: log10 P [E], its standard error [E], levels used [E, repeats], and samples.

    `samples` [E, repeats, C, P, N] are logits restricted to the polyhedron (undefined where
    `log10` is -inf: no chain got there); `run_log10` [E, repeats] are the independent estimates;
    `stalled` [E] marks episodes where a run hit `max_levels` (its estimate is then unreliable).
    """

    log10: torch.Tensor
    se: torch.Tensor
    run_log10: torch.Tensor
    levels: torch.Tensor
    samples: torch.Tensor
    stalled: torch.Tensor


def _resample(z: torch.Tensor, score: torch.Tensor, level: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Chains with score < level restart from a uniformly chosen chain with score >= level."""
    alive = score >= level.unsqueeze(1)
    count = alive.sum(1).clamp_min(1)
    order = score.argsort(dim=1, descending=True)                 # survivors first
    pick = order.gather(1, (uniform * count.unsqueeze(1)).long().clamp_max(score.shape[1] - 1))
    source = torch.where(alive, torch.arange(score.shape[1]).expand_as(pick), pick)
    return z.gather(1, source[..., None, None].expand_as(z))


def split_volume(prior: LogitPrior, constraints: Constraints, n_way: int, streams: Streams,
                 settings: SplittingSettings) -> SplitResult:
    """Estimate log10 P(all constraints hold) per episode and sample the prior restricted to it.

    Args:
        prior: logit priors of E episodes (P points, computed in float64).
        constraints: [E, M] constraints (see `Constraints`).
        n_way: classes (the logits are [P, n_way] per chain).
        streams: E * settings.repeats streams, episode-major (episode e, repeat r -> e * repeats + r).
        settings: chains, repeats, levels, sweeps.
    """
    settings.check("volume")
    repeats, chains = settings.repeats, settings.chains
    episodes, points = prior.factor.shape[:2]
    expand = torch.arange(episodes).repeat_interleave(repeats)
    prior = LogitPrior(prior.factor[expand], prior.eigenvalues[expand], prior.eigenvectors[expand],
                       prior.scale, prior.bias_scale)
    constraints = constraints.take(expand)
    problems = episodes * repeats
    z = prior.sample(streams.randn((chains, points, n_way)))
    score = constraints.score(z)
    log_p = torch.zeros(problems, dtype=torch.float64)
    shift = torch.full((problems,), math.inf, dtype=torch.float64)
    levels = torch.zeros(problems, dtype=torch.long)
    active = torch.ones(problems, dtype=torch.bool)
    stalled = torch.zeros(problems, dtype=torch.bool)
    keep = max(1, math.ceil(settings.level_fraction * chains))
    while bool(active.any()):
        index = active.nonzero().squeeze(1)
        s = score[index]
        inside = (s >= 0).double().mean(1)
        level = s.sort(dim=1, descending=True).values[:, keep - 1]
        final = (inside >= settings.level_fraction) | (-level < MIN_SHIFT)
        # A final level keeps the chains inside the polyhedron; others keep the top `keep` chains.
        level = torch.where(final, torch.zeros_like(level), level)
        fraction = (s >= level.unsqueeze(1)).double().mean(1)
        log_p[index] += fraction.log()
        levels[index] += 1
        # A problem out of levels stops here: its chains collapsed into a corner LIN-ESS cannot leave.
        # Its estimate so far bounds P from above; it is flagged `stalled`, never silently mixed in.
        out = levels[index] >= settings.max_levels
        stalled[index[out & ~final]] = True
        final = final | out
        z[index] = _resample(z[index], s, level, streams.rand((chains,), index))
        shift[index] = -level
        moves = torch.where(final, settings.burn_in, settings.sweeps)
        dead = fraction == 0
        for step in range(int(moves.max()) if bool((~dead).any()) else 0):
            move = (moves > step) & ~dead
            sub = index[move]
            sub_prior = LogitPrior(prior.factor[sub], prior.eigenvalues[sub], prior.eigenvectors[sub],
                                   prior.scale, prior.bias_scale)
            z[sub] = lin_ess_class_step(z[sub], shift[sub], constraints.take(sub), sub_prior, streams, sub)
        score[index] = constraints.take(index).score(z[index])
        active[index[final]] = False
    run_log10 = (log_p / math.log(10)).view(episodes, repeats)
    log10, se = combine_runs(run_log10)
    return SplitResult(log10, se, run_log10, levels.view(episodes, repeats),
                       z.view(episodes, repeats, chains, points, n_way), stalled.view(episodes, repeats).any(1))


def combine_runs(run_log10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log10 of the mean of independent estimates and its delta-method standard error."""
    repeats = run_log10.shape[1]
    top = run_log10.amax(1, keepdim=True)
    finite_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    relative = torch.pow(10.0, run_log10 - finite_top)            # p_r / max p, in [0, 1]
    mean = relative.mean(1)
    log10 = torch.where(mean > 0, mean.log10() + finite_top.squeeze(1), torch.full_like(mean, -math.inf))
    spread = relative.std(1, unbiased=True) / math.sqrt(repeats)
    se = torch.where(mean > 0, spread / mean.clamp_min(1e-300) / math.log(10), torch.zeros_like(mean))
    return log10, se
