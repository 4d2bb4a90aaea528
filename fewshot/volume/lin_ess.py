"""Elliptical slice sampling restricted to linear constraints (LIN-ESS), batched and exact.

Gessner, Kanjilal & Hennig (AISTATS 2020): from a feasible z ~ N(0, K) restricted to
{g_j(z) + shift >= 0}, draw z' ~ N(0, K); on the ellipse z cos t + z' sin t each constraint
g_j = a_j cos t + b_j sin t + shift is a sinusoid, so it fails on one arc computable in closed
form. The feasible set is the circle minus the union of those arcs: one arc when shift = 0 (a
cone), possibly several when shift > 0. t is drawn uniformly on it: no rejection, no shrinking.

Constraints here are "logit of class p beats logit of class n at point i", normalized by the
prior standard deviation of that difference, so a single `shift` means the same everywhere.

Example:
    >>> cons = Constraints.pairwise(points, positive, negative, prior)   # [E, M] each
    >>> z = lin_ess_step(z, shift, cons, prior, streams, index)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.streams import Streams

__all__ = ["Constraints", "feasible_arc_sample", "lin_ess_step", "lin_ess_class_step"]
TWO_PI = 2 * math.pi


@dataclass
class Constraints:
    """g_j(z) = (z[point_j, positive_j] - z[point_j, negative_j]) / sigma_j >= -shift, per episode.

    Args:
        positive, negative: [E, M] indices into z flattened over (point, class).
        sigma: [E, M] prior standard deviation of the difference (> 0).
    """

    positive: torch.Tensor
    negative: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def beat_all(cls, points: torch.Tensor, labels: torch.Tensor, n_way: int, prior: LogitPrior) -> "Constraints":
        """Point `points[e, i]`'s logit of class `labels[e, i]` beats each other class's.

        Args:
            points: [E, Q] indices of the constrained points among the prior's P points.
            labels: [E, Q] the class that must win at each point.
            n_way: classes.
            prior: the logit prior (for the normalizing standard deviations).
        """
        others = torch.arange(n_way).expand(*labels.shape, n_way)
        keep = others != labels.unsqueeze(-1)
        negative = others[keep].view(*labels.shape, n_way - 1)
        point = points.unsqueeze(-1).expand_as(negative)
        variance = prior.variance.gather(1, points)
        if bool((variance <= 0).any()):
            episode = int((variance <= 0).any(dim=1).nonzero()[0])
            raise fail(f"A point of episode {episode} has all-zero features and the prior has no bias, so its "
                       "logits are all 0 and no head classifies it: the volume is undefined.",
                       "Drop all-zero feature vectors, or give the prior a bias (bias_scale > 0).")
        sigma = (2 * variance).sqrt().unsqueeze(-1).expand_as(negative)
        flat = lambda classes: (point * n_way + classes).flatten(1)  # noqa: E731
        return cls(flat(labels.unsqueeze(-1).expand_as(negative)), flat(negative), sigma.flatten(1).clone())

    def cat(self, other: "Constraints") -> "Constraints":
        """Both sets of constraints."""
        return Constraints(torch.cat([self.positive, other.positive], 1), torch.cat([self.negative, other.negative], 1),
                           torch.cat([self.sigma, other.sigma], 1))

    def take(self, index: torch.Tensor) -> "Constraints":
        """The constraints of episodes `index`."""
        return Constraints(self.positive[index], self.negative[index], self.sigma[index])

    def values(self, z: torch.Tensor) -> torch.Tensor:
        """g [E, C, M] of logits z [E, C, P, N]."""
        flat = z.flatten(2)
        shape = (*flat.shape[:2], self.positive.shape[1])
        pos = flat.gather(2, self.positive.unsqueeze(1).expand(shape))
        neg = flat.gather(2, self.negative.unsqueeze(1).expand(shape))
        return (pos - neg) / self.sigma.unsqueeze(1)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """min_j g_j [E, C]: z satisfies the constraints shifted by s iff score >= -s."""
        return self.values(z).amin(dim=2)


def feasible_arc_sample(a: torch.Tensor, b: torch.Tensor, shift: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Angles t [...] uniform on {t : a_j cos t + b_j sin t + shift >= 0 for all j}.

    Args:
        a, b: [..., M] constraint values at the current point and at the proposal.
        shift: [...] (one per row, broadcast over M) or [..., M] (one per constraint).
        uniform: [...] uniform [0, 1) draws.
    Returns t in [0, 2 pi); t = 0 (stay) if the feasible set has measure 0.
    """
    radius = torch.hypot(a, b)
    phase = torch.atan2(b, a)
    # a cos t + b sin t = r cos(t - phase) >= -shift  <=>  |t - phase| <= alpha.
    shift = shift if shift.dim() == a.dim() else shift.unsqueeze(-1)
    cos_alpha = (-shift / radius.clamp_min(1e-300)).clamp(-1.0, 1.0)
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
    gaps, starts = torch.cat([gaps, tail], -1), torch.cat([starts, covered[..., -1:]], -1)
    ends = gaps.cumsum(-1)
    total = ends[..., -1]
    target = uniform * total
    piece = torch.searchsorted(ends, target.unsqueeze(-1).contiguous(), right=True).clamp_max(gaps.shape[-1] - 1)
    offset = target - (ends.gather(-1, piece) - gaps.gather(-1, piece)).squeeze(-1)
    t = starts.gather(-1, piece).squeeze(-1) + offset
    return torch.where(total > 1e-12, t, torch.zeros_like(t))


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
    proposal = prior.sample(streams.randn(tuple(z.shape[1:]), index))
    t = feasible_arc_sample(constraints.values(z), constraints.values(proposal),
                            shift.unsqueeze(1).expand(z.shape[:2]), streams.rand((z.shape[1],), index))
    t = t.unsqueeze(-1).unsqueeze(-1)
    return z * t.cos() + proposal * t.sin()


def lin_ess_class_step(z: torch.Tensor, shift: torch.Tensor, constraints: Constraints, prior: LogitPrior,
                       streams: Streams, index: torch.Tensor) -> torch.Tensor:
    """One LIN-ESS move of each class's logit column in turn (a Gibbs sweep over classes).

    The prior factorizes over classes (z_c ~ N(0, K) independently), so moving z_c alone on
    the ellipse z_c cos t + nu_c sin t, nu_c ~ N(0, K), with the other classes fixed leaves the
    restricted prior invariant. Each constraint involving c is affine in z_c (the other class's
    logit enters its offset, so the feasible set may be several arcs); the others are constant.
    Per move this works in P dims instead of P * N, and it mixes far better on polytopes with
    many constraints (measured: docs/readme/issue8.md).

    Args: as `lin_ess_step`.
    """
    episodes, chains, points, n_way = z.shape
    point = constraints.positive // n_way
    positive_class, negative_class = constraints.positive % n_way, constraints.negative % n_way
    sigma = constraints.sigma.unsqueeze(1)
    noise = streams.randn((n_way, chains, points), index)           # [E, N, C, P]
    shape = (episodes, chains, point.shape[1])
    at_point = point.unsqueeze(1).expand(shape)
    z = z.clone()
    for c in range(n_way):
        proposal = torch.einsum("epq,ecq->ecp", prior.factor, noise[:, c])
        flat = z.flatten(2)
        z_pos = flat.gather(2, constraints.positive.unsqueeze(1).expand(shape))
        z_neg = flat.gather(2, constraints.negative.unsqueeze(1).expand(shape))
        moving = proposal.gather(2, at_point)
        is_pos, is_neg = (positive_class == c).unsqueeze(1), (negative_class == c).unsqueeze(1)
        # g = (z_pos - z_neg) / sigma + shift, with z_c(t) = z_c cos t + nu_c sin t on one side.
        a = torch.where(is_pos, z_pos, torch.where(is_neg, -z_neg, 0.0)) / sigma
        b = torch.where(is_pos, moving, torch.where(is_neg, -moving, 0.0)) / sigma
        offset = torch.where(is_pos, -z_neg, torch.where(is_neg, z_pos, 0.0)) / sigma + shift[:, None, None]
        offset = torch.where(is_pos | is_neg, offset, torch.ones_like(offset))   # constant: never binds
        t = feasible_arc_sample(a, b, offset, streams.rand((chains,), index)).unsqueeze(-1)
        z[..., c] = z[..., c] * t.cos() + proposal * t.sin()
    return z
