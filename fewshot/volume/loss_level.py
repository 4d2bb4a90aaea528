"""A loss level on top of the fitting cone: the composite score and the slice move that keeps it.

"Fits the support set and its normalized loss is at most h" is reached by one splitting run on the
composite score (DESIGN.md, "Guess & check at matched loss"):
    xi(z) = min normalized margin            while z does not fit (< 0),
    xi(z) = level(z) = log N - nl(z)          once it fits (> 0: a fitting head has nl < log N),
so the levels climb from "no fit" through "fits" up to log N - h. The loss itself is a callable of
the chain state (`LevelScore`): this module knows nothing of which loss, so other nonlinear
conditions plug in the same way.

The move (`slice_class_step`): per class column (and block of points), the ellipse of LIN-ESS,
its feasible arcs under the cone computed exactly, and on those arcs elliptical slice sampling's
shrinking bracket for level(z) > floor, in arc length over the feasible pieces (Murray, Adams &
MacKay 2010, restricted to the arcs: any condition that holds at t = 0 gives a valid slice move).

`full_norm` needs the weights' part outside the features' span, which no logit sees
(`WeightNorm`): with theta_c = Sigma^1/2 xi_c, xi_c ~ N(0, I_{D+1}) and M = [X, 1] Sigma^1/2,
xi_c = M^T K^+ z_c + beta_c q_hat + rho_c omega_c (q_hat: the bias axis projected off the row
space of M; omega_c uniform in the rest of the null space), so
    ||theta_c||^2 = s^2 (z_c^T K^+ z_c + beta_c^2 + rho_c^2) + (s_b^2 - s^2) (s_b 1^T K^+ z_c + q beta_c)^2,
q = |projected bias axis|, beta_c ~ N(0, 1), rho_c^2 ~ chi^2 with D - rank(K) degrees of freedom.
The chain carries (beta_c, rho_c): on the ellipse beta moves like a logit, and rho like the norm
of a Gaussian vector g moved to g cos t + g' sin t, i.e. rho(t)^2 = (rho cos t + gamma sin t)^2
+ chi sin^2 t with gamma ~ N(0, 1), chi ~ chi^2 (dof - 1): exact, by the rotation invariance of g.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from fewshot.volume.gaussian import LogitPrior, PointBlocks
from fewshot.volume.lin_ess import Constraints, arc_point, column_moves, measurable
from fewshot.volume.streams import Streams

__all__ = ["LevelScore", "LossLevel", "WeightNorm", "bracket_angles", "composite_score", "slice_class_step"]
MAX_SHRINK = 60  # bracket halvings on average far below this; a chain still rejected then stays put

# level(z, extra, rows) -> [E', C]: log N - nl of logits z [E', C, P, N] (extra [E', C, N, 2] or None),
# rows [E'] naming each problem's episode. Per chain: the bracket calls it on the chains still shrinking,
# as [n, 1, P, N] with each chain's episode in rows.
LevelScore = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]


@dataclass
class WeightNorm:
    """||[W; b]||^2 of the head behind support logits z and the out-of-span state (beta, rho), per episode.

    Args:
        kinv: [E, S, S] K^+ of the support prior.
        bias_axis: [E, S] s_b K^+ 1 (the bias coordinate of xi's row-space part is bias_axis . z_c).
        q: [E] norm of the bias axis projected off the row space.
        beta_dims: [E] 1 if the null space of M is not empty, else 0; rho_dof: [E] dof of rho^2.
        scale, bias_scale: s, s_b.
    """

    kinv: torch.Tensor
    bias_axis: torch.Tensor
    q: torch.Tensor
    beta_dims: torch.Tensor
    rho_dof: torch.Tensor
    scale: float
    bias_scale: float

    @classmethod
    def from_prior(cls, prior: LogitPrior, dim: int) -> "WeightNorm":
        """For a support prior over features of dimension `dim` (K = s^2 X X^T + s_b^2 11^T)."""
        kinv = prior.pseudo_inverse()
        ones = torch.ones(kinv.shape[:2], dtype=kinv.dtype)
        bias_axis = prior.bias_scale * (kinv @ ones.unsqueeze(-1)).squeeze(-1)
        q = (1 - prior.bias_scale * (bias_axis * ones).sum(1)).clamp_min(0).sqrt()
        null = dim + 1 - (prior.eigenvalues > 0).sum(1)
        return cls(kinv, bias_axis, q, (null >= 1).long(), (null - 1).clamp_min(0), prior.scale, prior.bias_scale)

    def init(self, shape: tuple[int, int], rows: torch.Tensor, streams: Streams, index: torch.Tensor) -> torch.Tensor:
        """Prior draws of (beta, rho) [E', chains, N, 2] for problems `index` of episodes `rows`."""
        chains, n_way = shape
        beta = streams.randn((chains, n_way), index) * self.beta_dims[rows, None, None]
        rho = streams.chisquare((chains, n_way), index, self.rho_dof[rows]).sqrt()
        return torch.stack([beta, rho], -1)

    def norm_sq(self, z: torch.Tensor, extra: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """||theta||_F^2 [E', C] of logits z [E', C, S, N] and state extra [E', C, N, 2]."""
        z = z.double()
        kinv = self.kinv[rows].unsqueeze(1)
        spanned = (z * (kinv @ z)).sum(-2)                                         # [E', C, N]
        beta, rho = extra[..., 0].double(), extra[..., 1].double()
        cross = (self.bias_axis[rows, None, :, None] * z).sum(-2) + self.q[rows, None, None] * beta
        total = self.scale ** 2 * (spanned + beta ** 2 + rho ** 2) + (self.bias_scale ** 2 - self.scale ** 2) * cross ** 2
        return total.sum(-1).clamp_min(0)

    def weights(self, support: torch.Tensor, z: torch.Tensor, extra: torch.Tensor,
                streams: Streams) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight [E, D, N] and bias [E, N] with support logits z [E, S, N] and state extra [E, N, 2]:
        theta_c = Sigma^1/2 (M^T K^+ z_c + beta_c q_hat + rho_c omega_c), omega_c uniform (one stream each)."""
        episodes, _, dim = support.shape
        n_way = z.shape[-1]
        root = torch.tensor([self.scale] * dim + [self.bias_scale], dtype=torch.float64)
        m = torch.cat([support.double(), torch.ones(episodes, support.shape[1], 1, dtype=torch.float64)], 2) * root
        project = lambda v: v - m.transpose(1, 2) @ (self.kinv @ (m @ v))    # noqa: E731  onto null(M)
        noise = streams.randn((dim + 1, n_way + 1))
        axis = torch.zeros(episodes, dim + 1, 1, dtype=torch.float64)
        axis[:, dim] = 1.0
        axis = project(axis)
        # No bias axis left in the null space (q = 0): any null direction serves, beta only adds norm.
        axis = torch.where(self.q[:, None, None] > 1e-9, axis, project(noise[..., :1]))
        axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-300)
        rest = project(noise[..., 1:])
        rest = rest - axis * (axis * rest).sum(1, keepdim=True)
        rest = rest / rest.norm(dim=1, keepdim=True).clamp_min(1e-300)
        xi = m.transpose(1, 2) @ (self.kinv @ z.double()) + axis * extra[..., 0].unsqueeze(1) + rest * extra[..., 1].unsqueeze(1)
        theta = xi * root[:, None]
        return theta[:, :dim], theta[:, dim]

    def ellipse(self, extra_c: torch.Tensor, rows: torch.Tensor, streams: Streams,
                index: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The state of one class (extra_c [E', C, 2]) along a fresh ellipse: a function (t, sub) -> [e, C, 2],
        or [n, 2] for t [n] when `sub` is a (problems, chains) pair of index tensors (single chains)."""
        chains = extra_c.shape[1]
        fresh = streams.randn((chains, 2), index, extra_c.dtype)
        chi = streams.chisquare((chains,), index, (self.rho_dof[rows] - 1).clamp_min(0), extra_c.dtype)
        beta_new = fresh[..., 0] * self.beta_dims[rows, None].to(extra_c.dtype)
        gamma = fresh[..., 1] * (self.rho_dof[rows, None] >= 1).to(extra_c.dtype)

        def at(t: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
            cos, sin = t.cos(), t.sin()
            state = extra_c[sub]
            beta = state[..., 0] * cos + beta_new[sub] * sin
            rho = ((state[..., 1] * cos + gamma[sub] * sin) ** 2 + chi[sub] * sin ** 2).sqrt()
            return torch.stack([beta, rho], -1)
        return at


@dataclass
class LossLevel:
    """The loss part of a composite splitting run.

    Args:
        score: `LevelScore`, log N - nl (> 0 on every fitting head).
        target: [E] the final level per episode, log N - h for the band's upper edge h (>= 0).
        extra: the out-of-span state, for losses that need it (`WeightNorm`); None otherwise.
    """

    score: LevelScore
    target: torch.Tensor
    extra: WeightNorm | None = None


def composite_score(z: torch.Tensor, extra: torch.Tensor | None, constraints: Constraints, level: LossLevel | None,
                    rows: torch.Tensor) -> torch.Tensor:
    """xi [E', C]: the min normalized margin while < 0 (or always, without a level), else level.score."""
    margin = constraints.score(z).double()
    if level is None:
        return margin
    return torch.where(margin >= 0, level.score(z, extra, rows).double(), margin)


def slice_class_step(z: torch.Tensor, extra: torch.Tensor | None, shift: torch.Tensor, floor: torch.Tensor,
                     constraints: Constraints, blocks: PointBlocks, level: LossLevel, rows: torch.Tensor,
                     streams: Streams, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One Gibbs sweep over class columns (and blocks) keeping the cone shifted by `shift` [E'] and
    level.score > floor [E'] (-inf: no loss condition, then it is exactly `lin_ess_class_step`'s move).

    Returns the moved (z, extra). Each problem draws from its own stream only while one of its chains
    is still shrinking, so results do not depend on which problems share the batch.
    """
    z = z.clone(memory_format=torch.contiguous_format)
    extra = None if extra is None else extra.clone()
    chains = z.shape[1]
    for move in column_moves(z, shift, constraints, blocks, streams, index):
        total = move.gaps.sum(-1)                                              # [E', C]
        ellipse = None if extra is None else level.extra.ellipse(extra[:, :, move.c], rows, streams, index)
        length = streams.rand((chains,), index, z.dtype) * total
        low, high = length - total, length.clone()
        angle = torch.zeros_like(total)
        pending = measurable(total) & torch.isfinite(floor)[:, None]
        take = measurable(total) & ~pending                        # no loss condition: the first draw stands
        angle = torch.where(take, arc_point(move.starts, move.gaps, length), angle)
        for _ in range(MAX_SHRINK):
            # Only the chains still shrinking are scored, each as a problem of one chain (the score is
            # per chain): most are accepted at the first draws, and the bracket's last halvings are
            # a chain or two, not every chain of their problems (measured: bench/matched.py's doc).
            problem, chain = pending.nonzero().unbind(1)
            if not problem.numel():
                break
            pair = (problem, chain)
            spot = torch.remainder(length[pair], total[pair])
            t = arc_point(move.starts[pair], move.gaps[pair], spot)
            trial = z[pair].unsqueeze(1)                                           # [n, 1, P, N], a copy
            trial[:, 0, move.start:move.stop, move.c] = _block_at(move, t, pair)
            trial_extra = None
            if ellipse is not None:
                trial_extra = extra[pair].unsqueeze(1)
                trial_extra[:, 0, move.c] = ellipse(t, pair)
            ok = level.score(trial, trial_extra, rows[problem])[:, 0] > floor[problem]
            angle[pair] = torch.where(ok, t, angle[pair])
            pending[pair] = ~ok
            # Shrink the bracket towards the current point (length 0); a problem with a chain still
            # rejected draws again for all its chains (its stream's order does not depend on the batch).
            rejected = length[pair]
            low[pair] = torch.where(rejected < 0, rejected, low[pair])
            high[pair] = torch.where(rejected >= 0, rejected, high[pair])
            again = pending.any(1).nonzero().squeeze(1)
            if again.numel():
                draw = streams.rand((chains,), index[again], z.dtype)
                length[again] = low[again] + draw * (high[again] - low[again])
        move.apply(z, angle)
        if ellipse is not None:
            extra[:, :, move.c] = ellipse(angle, torch.arange(z.shape[0])).to(extra.dtype)
    return z, extra


def _block_at(move, t: torch.Tensor, sub: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The moved block's logits [n, b] of chains `sub` (problems, chains) at angles t [n]."""
    mean = move.mean if isinstance(move.mean, float) else move.mean[sub]
    t = t.unsqueeze(-1)
    return mean + move.offset[sub] * t.cos() + move.proposal[sub] * t.sin()


def log_n(n_way: int) -> float:
    """log N: the loss of the zero head, the top of every normalized loss."""
    return math.log(n_way)


def bracket_angles(starts: torch.Tensor, gaps: torch.Tensor,
                   accept: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                   streams: Streams, index: torch.Tensor) -> torch.Tensor:
    """Elliptical slice sampling's shrinking bracket on feasible pieces: angles t [E', C] with accept true.

    The generic move for a condition known only as a callable (issue 19's first layer in weight space):
    t is drawn uniformly in arc length over the pieces (starts, gaps) [E', C, M] of `feasible_arcs`
    (one piece (0, 2 pi) = the whole ellipse), and on rejection the bracket shrinks towards the
    current point (length 0) as in `slice_class_step` (Murray, Adams & MacKay 2010). Only the
    chains still shrinking are evaluated: the cost is the mean number of tries, not the maximum.

    Args:
        starts, gaps: the feasible pieces of each chain's ellipse.
        accept: (t [k], problem [k], chain [k]) -> bool [k], the condition at angles t of the chains
            (problem, chain) still shrinking (must hold at t = 0).
        streams, index: the problems' random streams (a problem draws only while one of its chains shrinks).
    Returns the angles; 0 (stay) where the pieces have measure 0 or MAX_SHRINK halvings ran out.
    """
    total = gaps.sum(-1)
    chains = total.shape[1]
    length = streams.rand((chains,), index, total.dtype) * total
    low, high = length - total, length.clone()
    angle = torch.zeros_like(total)
    pending = measurable(total)
    for _ in range(MAX_SHRINK):
        problem, chain = pending.nonzero(as_tuple=True)
        if not problem.numel():
            break
        spot = torch.remainder(length[problem, chain], total[problem, chain])
        t = arc_point(starts[problem, chain], gaps[problem, chain], spot)
        ok = accept(t, problem, chain)
        angle[problem[ok], chain[ok]] = t[ok]
        pending[problem[ok], chain[ok]] = False
        rejected = length[problem, chain]
        low[problem, chain] = torch.where(rejected < 0, rejected, low[problem, chain])
        high[problem, chain] = torch.where(rejected >= 0, rejected, high[problem, chain])
        again = pending.any(1).nonzero().squeeze(1)
        if again.numel():
            draw = streams.rand((chains,), index[again], total.dtype)
            length[again] = torch.where(pending[again], low[again] + draw * (high[again] - low[again]), length[again])
    return angle
