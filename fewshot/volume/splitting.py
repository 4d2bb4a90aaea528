"""log P(polyhedron) under the logit prior by adaptive multilevel splitting, in log space.

P(g_j(z) >= 0 for all j) is written as a product of conditional probabilities over nested levels
{score(z) > Z_q} rising to {score(z) >= 0} (score = min_j g_j, the constraints being normalized
by their prior standard deviation). The levels are chosen from the chains themselves, by the
generalized adaptive multilevel splitting of Brehier, Gazeau, Goudenege, Lelievre & Rousset
("Unbiasedness of some generalized adaptive multilevel splitting algorithms", Ann. Appl. Probab.
26(6), 2016): with C
chains, Z_q is the k-th smallest score (k = C - ceil(level_fraction * C)); the K_q >= k chains
with score <= Z_q are killed, restart from copies of uniformly chosen survivors (score > Z_q),
and the level's factor is 1 - K_q / C. Every chain then makes `sweeps` LIN-ESS sweeps inside the
new level (one move per class column, `lin_ess_class_step`). Once Z_q >= 0 the last factor is
the fraction of chains with score >= 0, and those chains, after `burn_in` more sweeps, are the
returned samples of the prior restricted to the polyhedron. Level 0 is the prior itself (exact
draws): a large shift makes every point feasible, so no feasible start has to be searched for.

With a loss level (`fewshot.volume.loss_level`) the score is composite: the min margin while a
chain does not fit, log N - nl(z) once it fits; the levels climb on through "fits" up to the
target, and the moves add a shrinking bracket for the loss level on the cone's exact arcs.
When every chain ties at a level (K_q = C) no chain survives: the run ends there with P = 0 and
its episode is flagged `tied` (it used to repeat the level until `max_levels`). A run stopped at
`max_levels` flags its episode `stalled`, and only its chains inside the target region are
marked `inside`: nothing outside the region is handed back as a sample of it.

Why this rule and not "the level is the smallest kept score, the factor the kept fraction": the
estimate of P is unbiased with it for any C (their theorem, under exact conditional sampling),
while the kept-fraction rule overestimates each factor by about (C + 1) / C, which compounds
over levels: +0.27 decades at C = 64 over 40 levels (an idealized simulation;
tests/fewshot/volume/test_splitting.py checks the unbiasedness at C = 16 over ~60 levels).

The estimate is accumulated as a sum of logs, so 1e-300 and far below are fine. Its error comes
from `repeats` independent runs per episode (own streams, own levels): the estimate is log10 of
their mean (the unbiased P, averaged) and the standard error the delta-method one,
se(mean p) / (mean p ln 10).

Example:
    >>> result = split_volume(prior, constraints, streams, settings)   # streams: E * repeats
    >>> result.log10, result.se                                          # [E] each
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior, PointBlocks
from fewshot.volume.lin_ess import Constraints, lin_ess_class_step
from fewshot.volume.loss_level import LossLevel, composite_score, slice_class_step
from fewshot.volume.streams import Streams

__all__ = ["SplittingSettings", "SplitResult", "split_volume", "combine_runs"]
MIN_SHIFT = 1e-6  # a level this close to the cone is the cone (stops contradictory constraints looping)
# The chains run in float32: 1.5x faster per sweep than float64 here (bench/volume.py --dtype), and
# its rounding (1e-7 of a logit) is far below the Monte Carlo error of any estimate. Samples are
# returned in float64; the estimate is accumulated in float64.
SAMPLER_DTYPE = torch.float32


@dataclass
class SplittingSettings:
    """Args:
        chains: chains per independent run (>= 2).
        repeats: independent runs per episode, for the standard error (>= 2).
        level_fraction: conditional probability targeted at each level, in (0, 1).
        sweeps: LIN-ESS moves per chain after each level's resampling.
        burn_in: extra moves at the final level before samples are returned.
        max_levels: stop a run after this many levels and flag its episode `stalled`.
        block_size: each class column moves in blocks of about this many points, each given the
            others (`PointBlocks`); 0 = the whole column. Blocks mix far better on polytopes of
            many points (the good and poisoned volumes), at more steps per sweep.
    """

    chains: int = 64
    repeats: int = 4
    level_fraction: float = 0.5
    sweeps: int = 2
    burn_in: int = 2
    max_levels: int = 1000
    block_size: int = 0

    def check(self, where: str) -> None:
        """Fail with a message naming `where.key` on a bad setting."""
        rules = [(self.chains >= 2, "chains", ">= 2"), (self.repeats >= 2, "repeats", ">= 2"),
                 (0 < self.level_fraction < 1, "level_fraction", "in (0, 1)"),
                 (self.sweeps >= 1, "sweeps", ">= 1"), (self.burn_in >= 0, "burn_in", ">= 0"),
                 (self.max_levels >= 1, "max_levels", ">= 1"),
                 (self.block_size >= 0, "block_size", ">= 0 (0 = whole columns)")]
        for ok, key, rule in rules:
            if not ok:
                raise fail(f"{where}.{key} is {getattr(self, key)!r}, but must be {rule}.",
                           f"Set {where}.{key} to a value {rule}.")


@dataclass
class SplitResult:
    """Per episode: log10 P [E], its standard error [E], levels used [E, repeats], and samples.

    `samples` [E, repeats, C, P, N] are logits restricted to the polyhedron (undefined where
    `log10` is -inf: no chain got there); `run_log10` [E, repeats] are the independent estimates;
    `stalled` [E] marks episodes where a run hit `max_levels` (its estimate is then an upper bound);
    `inside` [E, repeats, C] marks the samples that are in the region (all of a finished run's; of a
    stalled run only those that got there: use no other); `tied` [E] marks episodes where a run ended
    because every chain tied at a level (its P is 0); `extra` [E, repeats, C, N, 2] the out-of-span
    state of a `full_norm` level (None otherwise).
    """

    log10: torch.Tensor
    se: torch.Tensor
    run_log10: torch.Tensor
    levels: torch.Tensor
    samples: torch.Tensor
    stalled: torch.Tensor
    inside: torch.Tensor
    tied: torch.Tensor
    extra: torch.Tensor | None = None


def restart_sources(alive: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """For each chain [n, C]: itself if `alive`, else a uniformly chosen alive chain of its problem."""
    count = alive.sum(1).clamp_min(1)
    order = alive.double().argsort(dim=1, descending=True, stable=True)     # alive chains first
    pick = order.gather(1, (uniform * count.unsqueeze(1)).long().clamp_max(alive.shape[1] - 1))
    return torch.where(alive, torch.arange(alive.shape[1]).expand_as(pick), pick)


def split_volume(prior: LogitPrior, constraints: Constraints, n_way: int, streams: Streams,
                 settings: SplittingSettings, dtype: torch.dtype = SAMPLER_DTYPE, *,
                 level: LossLevel | None = None) -> SplitResult:
    """Estimate log10 P(all constraints hold [and level.score >= level.target]) per episode and sample it.

    Args:
        prior: logit priors of E episodes (P points, computed in float64).
        constraints: the episodes' constraints (see `Constraints`).
        n_way: classes (the logits are [P, n_way] per chain).
        streams: E * settings.repeats streams, episode-major (episode e, repeat r -> e * repeats + r).
        settings: chains, repeats, levels, sweeps.
        dtype: of the chains (float64 for a reference run).
        level: a loss level on top of the cone (`fewshot.volume.loss_level`): the run climbs the
            composite score up to level.target; None = the cone alone.
    """
    settings.check("volume")
    repeats, chains = settings.repeats, settings.chains
    episodes, points = prior.factor.shape[:2]
    problems = episodes * repeats
    log_p = torch.zeros(problems, dtype=torch.float64)
    levels = torch.zeros(problems, dtype=torch.long)
    stalled, tied = torch.zeros(problems, dtype=torch.bool), torch.zeros(problems, dtype=torch.bool)
    samples = torch.zeros(problems, chains, points, n_way, dtype=torch.float64)
    inside = torch.zeros(problems, chains, dtype=torch.bool)
    extras = torch.zeros(problems, chains, n_way, 2, dtype=torch.float64)
    kill = chains - min(chains - 1, max(1, math.ceil(settings.level_fraction * chains)))
    # The state of the problems still running, compacted when some finish (no scatter per step).
    index = torch.arange(problems)
    rows = index // repeats
    blocks = PointBlocks.from_prior(prior, settings.block_size).take(rows).to(dtype)
    prior, constraints = prior.take(rows), constraints.take(rows)
    prior.factor, constraints.sigma = prior.factor.to(dtype), constraints.sigma.to(dtype)
    target = torch.zeros(problems, dtype=torch.float64) if level is None else level.target.double()[rows].clamp_min(0)
    z = prior.sample(streams.randn((chains, points, n_way), dtype=dtype))
    extra = None if level is None or level.extra is None else level.extra.init((chains, n_way), rows, streams, index)
    score = composite_score(z, extra, constraints, level, rows)
    while index.numel():
        value = score.kthvalue(kill, dim=1).values                # Z_q: the k-th smallest score
        # A level this close to the cone is the cone (contradictory constraints would loop forever).
        cone = value < -MIN_SHIFT
        final = ~cone & (value >= target) if level is not None else ~cone
        # Between "fits" and the target the level is on the loss (a level in (-MIN_SHIFT, 0) is "fits").
        threshold = torch.where(cone, value, value.clamp_min(0))
        floor = torch.where(cone, -math.inf, torch.where(final, target, threshold))
        alive = torch.where(final.unsqueeze(1), score >= target.unsqueeze(1), score > threshold.unsqueeze(1))
        shift = torch.where(cone, -value, 0.0)
        log_p[index] += alive.double().mean(1).log()
        levels[index] += 1
        # Every chain tied at the level (K = C): no survivor to restart from, P = 0 (flagged `tied`).
        dead = ~alive.any(1) & ~final
        tied[index[dead]] = True
        # A problem out of levels stops here; its estimate so far bounds P from above. It is flagged
        # `stalled`, never silently mixed in, and its chains outside the target are not `inside`.
        out = (levels[index] >= settings.max_levels) & ~final & ~dead
        stalled[index[out]] = True
        done = final | out | dead
        source = restart_sources(alive, streams.rand((chains,), index, dtype))
        z = z.gather(1, source[..., None, None].expand_as(z))
        extra = None if extra is None else extra.gather(1, source[..., None, None].expand_as(extra))
        moves = torch.where(final, settings.burn_in, settings.sweeps).masked_fill(~alive.any(1), 0)
        for step in range(int(moves.max())):
            sub = (moves > step).nonzero().squeeze(1)
            if level is None and sub.numel() == moves.numel():
                z = lin_ess_class_step(z, shift, constraints, blocks, streams, index)
            elif level is None:
                z[sub] = lin_ess_class_step(z[sub], shift[sub], constraints.take(sub), blocks.take(sub), streams,
                                            index[sub])
            else:
                z[sub], moved = slice_class_step(z[sub], None if extra is None else extra[sub], shift[sub], floor[sub],
                                                 constraints.take(sub), blocks.take(sub), level, rows[sub], streams,
                                                 index[sub])
                if extra is not None:
                    extra[sub] = moved
        score = composite_score(z, extra, constraints, level, rows)
        if bool(done.any()):
            finished = index[done]
            samples[finished] = z[done].double()
            inside[finished] = (score[done] >= target[done].unsqueeze(1)) & alive[done].any(1, keepdim=True)
            if extra is not None:
                extras[finished] = extra[done].double()
            going = (~done).nonzero().squeeze(1)
            index, rows, z, score, target = index[going], rows[going], z[going], score[going], target[going]
            extra = None if extra is None else extra[going]
            blocks, constraints = blocks.take(going), constraints.take(going)
    run_log10 = (log_p / math.log(10)).view(episodes, repeats)
    log10, se = combine_runs(run_log10)
    shape = (episodes, repeats)
    return SplitResult(log10, se, run_log10, levels.view(shape), samples.view(*shape, chains, points, n_way),
                       stalled.view(shape).any(1), inside.view(*shape, chains), tied.view(shape).any(1),
                       None if level is None or level.extra is None else extras.view(*shape, chains, n_way, 2))


def combine_runs(run_log10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log10 of the mean of independent estimates [E, R], and its standard error.

    The error is the delta-method one, se(mean p) / (mean p ln 10), or the spread of the runs'
    log10 / sqrt(R) if larger: runs decades apart (a hard polytope) make the delta method
    saturate at 1 / ln 10 = 0.43 decades whatever their distance, which would understate it.
    """
    repeats = run_log10.shape[1]
    top = run_log10.amax(1, keepdim=True)
    finite_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    relative = torch.pow(10.0, run_log10 - finite_top)            # p_r / max p, in [0, 1]
    mean = relative.mean(1)
    log10 = torch.where(mean > 0, mean.log10() + finite_top.squeeze(1), torch.full_like(mean, -math.inf))
    spread = relative.std(1, unbiased=True) / math.sqrt(repeats)
    delta = spread / mean.clamp_min(1e-300) / math.log(10)
    finite = torch.isfinite(run_log10).all(1)
    log_spread = torch.where(finite, torch.where(finite.unsqueeze(1), run_log10, 0.0).std(1, unbiased=True), 0.0)
    se = torch.maximum(delta, log_spread / math.sqrt(repeats))
    return log10, torch.where(mean > 0, se, torch.zeros_like(mean))
