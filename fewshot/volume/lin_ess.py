"""Elliptical slice sampling restricted to linear constraints (LIN-ESS), batched and exact.

Gessner, Kanjilal & Hennig (AISTATS 2020): from a feasible z ~ N(0, K) restricted to
{g_j(z) + shift >= 0}, draw z' ~ N(0, K); on the ellipse z cos t + z' sin t each constraint
g_j = a_j cos t + b_j sin t + shift is a sinusoid, so it fails on one arc computable in closed
form. The feasible set is the circle minus the union of those arcs: one arc when shift = 0 (a
cone), possibly several when shift > 0. t is drawn uniformly on it: no rejection, no shrinking.

Constraints here are "logit of class y_i beats logit of class n at point i", normalized by the
prior standard deviation of that difference, so a single `shift` means the same everywhere.

Example:
    >>> cons = Constraints.beat_all(labels, n_way, prior)   # labels [E, P]: every point's class
    >>> z = lin_ess_step(z, shift, cons, prior, streams, index)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior, PointBlocks
from fewshot.volume.streams import Streams

__all__ = ["Constraints", "ColumnMove", "arc_point", "column_moves", "feasible_arc_sample", "feasible_arcs", "lin_ess_step",
           "lin_ess_class_step", "measurable"]
TWO_PI = 2 * math.pi


@dataclass
class Constraints:
    """Point i's logit of class target_i beats every other class's, in prior standard deviations:
    g_in(z) = (z[i, target_i] - z[i, n]) / sigma_i >= -shift for every n != target_i.

    Every point of the prior is constrained (support points to fit, query points for the good and
    poisoned volumes). sigma_i is the prior std of the difference of two classes' logits at point
    i, the same for every pair, so a point's N - 1 constraints collapse into one margin,
    (z[i, target_i] - max_{n != target_i} z[i, n]) / sigma_i, and moving one class's column they
    collapse into one constraint per point (`lin_ess_class_step`).

    Args:
        target: [E, P] the class that must win at each point.
        sigma: [E, P] prior std of the difference of two logits at each point (> 0).
    """

    target: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def beat_all(cls, labels: torch.Tensor, n_way: int, prior: LogitPrior) -> "Constraints":
        """Each of the prior's points must be classified as its label.

        Args:
            labels: [E, P] the class that must win at each point of the prior.
            n_way: classes.
            prior: the logit prior of the P points (for the normalizing standard deviations).
        """
        if labels.shape != prior.variance.shape or bool(((labels < 0) | (labels >= n_way)).any()):
            raise ValueError(f"labels {tuple(labels.shape)} must be one class in [0, {n_way}) per point of the "
                             f"prior {tuple(prior.variance.shape)}")
        variance = prior.variance
        if bool((variance <= 0).any()):
            episode = int((variance <= 0).any(dim=1).nonzero()[0])
            raise fail(f"A point of episode {episode} has all-zero features and the prior has no bias, so its "
                       "logits are all 0 and no head classifies it: the volume is undefined.",
                       "Drop all-zero feature vectors, or give the prior a bias (bias_scale > 0).")
        return cls(labels.long(), (2 * variance).sqrt())

    def take(self, index: torch.Tensor) -> "Constraints":
        """The constraints of episodes `index`."""
        return Constraints(self.target[index], self.sigma[index])

    def values(self, z: torch.Tensor) -> torch.Tensor:
        """All pairwise g [E, C, P * (N - 1)] of logits z [E, C, P, N] (point-major)."""
        n_way = z.shape[-1]
        others = torch.arange(n_way).expand(*self.target.shape, n_way)
        negative = others[others != self.target.unsqueeze(-1)].view(*self.target.shape, n_way - 1)
        chains = z.shape[1]
        own = z.gather(3, self.target[:, None, :, None].expand(-1, chains, -1, 1))
        rival = z.gather(3, negative.unsqueeze(1).expand(-1, chains, -1, -1))
        return ((own - rival) / self.sigma[:, None, :, None]).flatten(2)

    def margins(self, z: torch.Tensor) -> torch.Tensor:
        """min_n g_in [E, C, P]: each point's normalized margin (>= -shift iff all its constraints hold)."""
        index = self.target[:, None, :, None].expand(-1, z.shape[1], -1, 1)
        own = z.gather(3, index)
        rival = z.scatter(3, index, -math.inf).amax(3, keepdim=True)
        return ((own - rival) / self.sigma.unsqueeze(1).unsqueeze(-1)).squeeze(3)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """min_j g_j [E, C]: z satisfies the constraints shifted by s iff score >= -s."""
        return self.margins(z).amin(dim=2)


def feasible_arcs(a: torch.Tensor, b: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The feasible set {t : a_j cos t + b_j sin t + shift >= 0 for all j} as pieces (starts, lengths).

    Args:
        a, b: [..., M] constraint values at the current point and at the proposal.
        shift: [...] (one per row, broadcast over M) or [..., M] (one per constraint).
    Returns starts and lengths [..., M + 1] of disjoint pieces in increasing order (most of length
    0); when t = 0 is feasible the first piece starts there, so arc length 0 is the current point.
    """
    radius = torch.hypot(a, b)
    phase = torch.atan2(b, a)
    # a cos t + b sin t = r cos(t - phase) >= -shift  <=>  |t - phase| <= alpha.
    shift = shift if shift.dim() == a.dim() else shift.unsqueeze(-1)
    cos_alpha = (-shift / radius.clamp_min(torch.finfo(radius.dtype).tiny)).clamp(-1.0, 1.0)
    alpha = torch.arccos(cos_alpha)
    length = TWO_PI - 2 * alpha                                     # the infeasible arc
    low = torch.remainder(phase + alpha, TWO_PI)
    high = low + length
    # Arcs that wrap past 2 pi also cover [0, high - 2 pi]: all such pieces start at 0, so their
    # union is one interval [0, head]. (A point exactly on a boundary makes one; never drop it.)
    head = (high - TWO_PI).amax(dim=-1, keepdim=True).clamp_min(0.0)
    lows, order = low.sort(dim=-1)
    highs = high.gather(-1, order).clamp_max(TWO_PI)
    covered = torch.cat([head, torch.maximum(highs.cummax(dim=-1).values, head)], -1)
    starts = covered[..., :-1]
    gaps = (lows - starts).clamp_min(0.0)                           # feasible piece before each arc
    tail = (TWO_PI - covered[..., -1:]).clamp_min(0.0)              # and after the last one
    return covered, torch.cat([gaps, tail], -1)                     # covered: the starts and the last end


def arc_point(starts: torch.Tensor, gaps: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The angle t [...] at arc length `length` [...] (in [0, total)) along the pieces of `feasible_arcs`."""
    ends = gaps.cumsum(-1)
    piece = torch.searchsorted(ends, length.unsqueeze(-1).contiguous(), right=True).clamp_max(gaps.shape[-1] - 1)
    offset = length - (ends.gather(-1, piece) - gaps.gather(-1, piece)).squeeze(-1)
    return starts.gather(-1, piece).squeeze(-1) + offset


def measurable(total: torch.Tensor) -> torch.Tensor:
    """Round-off leaves slivers of a few eps where a measure-0 set should be: those are empty."""
    return total > 100 * torch.finfo(total.dtype).eps


def feasible_arc_sample(a: torch.Tensor, b: torch.Tensor, shift: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Angles t [...] uniform on {t : a_j cos t + b_j sin t + shift >= 0 for all j}.

    Args:
        a, b: [..., M] constraint values at the current point and at the proposal.
        shift: [...] (one per row, broadcast over M) or [..., M] (one per constraint).
        uniform: [...] uniform [0, 1) draws.
    Returns t in [0, 2 pi); t = 0 (stay) if the feasible set has measure 0.
    """
    starts, gaps = feasible_arcs(a, b, shift)
    total = gaps.sum(-1)
    t = arc_point(starts, gaps, uniform * total)
    return torch.where(measurable(total), t, torch.zeros_like(t))


def lin_ess_step(z: torch.Tensor, shift: torch.Tensor, constraints: Constraints, prior: LogitPrior,
                 streams: Streams, index: torch.Tensor) -> torch.Tensor:
    """One LIN-ESS move of every chain.

    Args:
        z: [E, C, P, N] feasible logits (constraints shifted by `shift`).
        shift: [E] constraint shifts (>= 0).
        constraints: the episodes' constraints ([E, M]).
        prior: the episodes' logit priors (E of them).
        streams: random streams; `index` [E] says which stream each episode draws from.
    """
    proposal = prior.sample(streams.randn(tuple(z.shape[1:]), index, z.dtype))
    t = feasible_arc_sample(constraints.values(z), constraints.values(proposal),
                            shift.unsqueeze(1).expand(z.shape[:2]), streams.rand((z.shape[1],), index, z.dtype))
    t = t.unsqueeze(-1).unsqueeze(-1)
    return z * t.cos() + proposal * t.sin()


def lin_ess_class_step(z: torch.Tensor, shift: torch.Tensor, constraints: Constraints,
                       prior: LogitPrior | PointBlocks, streams: Streams, index: torch.Tensor) -> torch.Tensor:
    """One LIN-ESS move of each class's logit column in turn (a Gibbs sweep over classes), by blocks.

    The prior factorizes over classes (z_c ~ N(0, K) independently), so moving z_c alone with the
    other classes fixed leaves the restricted prior invariant, and so does moving one block B of
    its points given the rest: on the ellipse m + (z_cB - m) cos t + nu sin t around the
    conditional mean m, nu from the conditional (`PointBlocks`). Along it each point of B keeps
    one binding constraint: a point of class c needs z_c above its best rival,
    max_{n != c} z_n; a point of another class y needs z_c below z_y. Each is affine in z_cB with
    an offset from the fixed logits, so the feasible set may be several arcs. Per move this works
    in b dims instead of P * N, and it mixes far better on polytopes with many constraints
    (measured: "Known limits" in docs/volume.md).

    Args: as `lin_ess_step`; `prior` may be `PointBlocks` (a `LogitPrior` is one block).
    """
    # Contiguous: a gathered z can come permuted, and mixed layouts take torch's slow strided paths (measured 4x).
    z = z.clone(memory_format=torch.contiguous_format)
    for move in column_moves(z, shift, constraints, prior, streams, index):
        total = move.gaps.sum(-1)
        t = arc_point(move.starts, move.gaps, streams.rand((z.shape[1],), index, z.dtype) * total)
        move.apply(z, torch.where(measurable(total), t, torch.zeros_like(t)))
    return z


@dataclass
class ColumnMove:
    """One ellipse of `column_moves`: block [start, stop) of class column c, at angle t
    mean + offset cos t + proposal sin t ([E, C, b] each), feasible on the pieces (starts, gaps)."""

    c: int
    start: int
    stop: int
    mean: torch.Tensor | float
    offset: torch.Tensor
    proposal: torch.Tensor
    starts: torch.Tensor
    gaps: torch.Tensor

    def values(self, t: torch.Tensor) -> torch.Tensor:
        """The block's logits [E, C, b] at angles t [E, C]."""
        t = t.unsqueeze(-1)
        return self.mean + self.offset * t.cos() + self.proposal * t.sin()

    def apply(self, z: torch.Tensor, t: torch.Tensor) -> None:
        """Move z [E, C, P, N] in place to angles t [E, C]."""
        z[:, :, self.start:self.stop, self.c] = self.values(t)


def column_moves(z: torch.Tensor, shift: torch.Tensor, constraints: Constraints, prior: LogitPrior | PointBlocks,
                 streams: Streams, index: torch.Tensor):
    """The ellipses of one Gibbs sweep over class columns and blocks, with their feasible arcs.

    A generator: the caller moves z (in place, `ColumnMove.apply`) before asking for the next one,
    which is built from the moved z. Draws one proposal per move from `streams`.
    """
    blocks = prior if isinstance(prior, PointBlocks) else PointBlocks.from_prior(prior)
    chains, n_way = z.shape[1], z.shape[3]
    target, sigma = constraints.target.unsqueeze(1), constraints.sigma.unsqueeze(1)   # [E, 1, P]
    # bmm on a contiguous column and masked_fill for the rivals: the same bits as einsum and cat, fewer copies.
    for c in range(n_way):
        this_class = torch.arange(n_way, device=z.device) == c
        for (start, stop), gain, factor in zip(blocks.ranges, blocks.gains, blocks.factors):
            proposal = torch.bmm(streams.randn((chains, stop - start), index, z.dtype), factor.transpose(1, 2))
            column = z[..., c]
            mean = 0.0 if gain is None else torch.bmm(column.contiguous(), gain.transpose(1, 2))
            part = z[:, :, start:stop]
            own = target[..., start:stop] == c
            if n_way > 1:
                rival = part.masked_fill(this_class, -math.inf).amax(3)
                at_target = part.gather(3, target[..., start:stop].expand(-1, chains, -1).unsqueeze(3)).squeeze(3)
                reference = torch.where(own, rival, at_target)
            else:
                reference = torch.full_like(proposal, -math.inf)
            sign = torch.where(own, 1.0, -1.0) / sigma[..., start:stop]
            offset = column[..., start:stop] - mean
            # g = sign * (m + offset cos t + nu sin t - reference) + shift.
            starts, gaps = feasible_arcs(sign * offset, sign * proposal, shift[:, None, None] + sign * (mean - reference))
            yield ColumnMove(c, start, stop, mean, offset, proposal, starts, gaps)
