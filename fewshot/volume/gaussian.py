"""The logit-space Gaussian of a random linear head, whitened so that degenerate Grams are fine.

With W ~ N(0, s^2 I) and b ~ N(0, s_b^2), the logits of class c over the points F [P, D] of an
episode are z_c = F w_c + b_c ~ N(0, K), K = s^2 F F^T + s_b^2 11^T, independent across classes.
Every quantity the volume lab needs (does a head fit the support set, what does it predict on
the queries) depends on the head only through z, so the sampler works on z [P, N] directly:
a prior draw is z = L u with u ~ N(0, I) and K = L L^T. L comes from an eigendecomposition with
negative round-off eigenvalues clamped to 0, which tolerates rank-deficient K (duplicate
images, zero features, more points than dimensions).

Example:
    >>> prior = LogitPrior.from_features(features, scale=1.0, bias_scale=1.0)   # features [E, P, D]
    >>> z = prior.sample(torch.randn(E, C, P, N, dtype=torch.float64))          # [E, C, P, N]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail

__all__ = ["LogitPrior", "PointBlocks", "check_features", "conditional", "draw_given_first"]


def check_features(features: torch.Tensor, what: str = "features") -> None:
    """Fail clearly on non-finite features (a NaN would silently poison every volume)."""
    if features.numel() and not bool(torch.isfinite(features).all()):
        bad = int((~torch.isfinite(features)).flatten(1).any(dim=1).nonzero()[0])
        raise fail(f"The volume lab got NaN or infinite {what} (first in episode {bad}).",
                   "Check the backbone checkpoint and feature extraction; features must be finite.")


@dataclass
class LogitPrior:
    """N(0, K) per class over the P points of each episode, K = factor @ factor^T.

    Args:
        factor: [E, P, P] float64, K = factor factor^T (columns of null directions are 0).
        eigenvalues: [E, P] of K, clamped at 0, ascending.
        eigenvectors: [E, P, P] of K (columns).
        scale, bias_scale: the prior's weight and bias standard deviations.
    """

    factor: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    scale: float
    bias_scale: float

    @classmethod
    def from_features(cls, features: torch.Tensor, *, scale: float, bias_scale: float) -> "LogitPrior":
        """The prior of logits over `features` [E, P, D] (any float dtype; computed in float64)."""
        if not scale > 0:
            raise fail(f"The prior scale must be > 0, but is {scale!r}.", "Set the prior scale to a positive number.")
        if not bias_scale >= 0:
            raise fail(f"The prior bias scale must be >= 0, but is {bias_scale!r}.",
                       "Set the bias scale to 0 (no bias) or a positive number.")
        check_features(features)
        x = features.double()
        gram = scale ** 2 * (x @ x.transpose(1, 2)) + bias_scale ** 2
        values, vectors = torch.linalg.eigh(gram)
        # Round-off makes null eigenvalues slightly negative; they are 0 (rank-deficient K).
        tol = values.abs().amax(dim=1, keepdim=True) * values.shape[1] * 1e-13
        values = torch.where(values > tol, values, torch.zeros_like(values))
        return cls(vectors * values.sqrt().unsqueeze(1), values, vectors, float(scale), float(bias_scale))

    @classmethod
    def from_kernel(cls, kernel: torch.Tensor, *, scale: float = math.nan, bias_scale: float = math.nan) -> "LogitPrior":
        """The prior N(0, K) of a given kernel K [E, P, P] (e.g. `fewshot.volume.nngp.nngp_kernel`).

        `scale` / `bias_scale` are NaN: no weight-space linear head stands behind this prior.
        """
        if kernel.numel() and not bool(torch.isfinite(kernel).all()):
            raise fail("The volume lab got a kernel with NaN or infinite entries.",
                       "Check the features and the prior's variances; both must be finite.")
        values, vectors = torch.linalg.eigh(kernel.double())
        tol = values.abs().amax(dim=1, keepdim=True) * values.shape[1] * 1e-13
        values = torch.where(values > tol, values, torch.zeros_like(values))
        return cls(vectors * values.sqrt().unsqueeze(1), values, vectors, scale, bias_scale)

    def take(self, index: torch.Tensor) -> "LogitPrior":
        """The priors of episodes `index`."""
        return LogitPrior(self.factor[index], self.eigenvalues[index], self.eigenvectors[index], self.scale,
                          self.bias_scale)

    @property
    def variance(self) -> torch.Tensor:
        """Diagonal of K, [E, P]: the prior variance of each point's logit of a class."""
        return (self.factor ** 2).sum(dim=2)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Logits z = L u [E, C, P, N] from standard normal noise u [E, C, P, N]."""
        return torch.einsum("epq,ecqn->ecpn", self.factor, noise)

    def pseudo_inverse(self) -> torch.Tensor:
        """K^+ [E, P, P]: the inverse on the range of K, 0 on its null space."""
        safe = torch.where(self.eigenvalues > 0, self.eigenvalues, torch.ones_like(self.eigenvalues))
        inverse = torch.where(self.eigenvalues > 0, 1 / safe, torch.zeros_like(safe))
        return (self.eigenvectors * inverse.unsqueeze(1)) @ self.eigenvectors.transpose(1, 2)


def conditional(gram: torch.Tensor, target: torch.Tensor, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian conditional of points `target` given points `given` under N(0, gram): the one helper.

    z_T | z_G ~ N(A z_G, K_TT - A K_GT) with the gain A = K_TG K_GG^+ (a pseudo-inverse, so singular
    K: duplicates, more points than dims, stay exact). Used for the blocks of `PointBlocks`, the query
    logits given support logits (`draw_given_first`) and the NNGP head's predictions.

    Args:
        gram: [E, P, P] the joint covariance (float64).
        target, given: point indices (long tensors).
    Returns the gain [E, T, G] and the conditional covariance [E, T, T] (symmetrized).
    """
    cross = gram[:, target][:, :, given]                                           # [E, T, G]
    gain = cross @ torch.linalg.pinv(gram[:, given][:, :, given], hermitian=True)
    covariance = gram[:, target][:, :, target] - gain @ cross.transpose(1, 2)
    return gain, (covariance + covariance.transpose(1, 2)) / 2


def draw_given_first(prior: LogitPrior, observed: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Logits [E, C, P - S, N] of the prior's last points given those of its first S, `observed` [E, C, S, N].

    Matheron's rule: z_rest = z0_rest + A (observed - z0_first) with z0 = L u a fresh joint draw from
    standard normal `noise` [E, C, P, N] and A the gain of `conditional`: exact in distribution.
    """
    shots, points = observed.shape[2], prior.factor.shape[1]
    joint = prior.sample(noise)
    gram = prior.factor @ prior.factor.transpose(1, 2)
    gain, _ = conditional(gram, torch.arange(shots, points), torch.arange(shots))
    return joint[:, :, shots:] + torch.einsum("eqs,ecsn->ecqn", gain, observed.to(joint.dtype) - joint[:, :, :shots])


def _psd_factor(covariance: torch.Tensor) -> torch.Tensor:
    """F with F F^T = covariance [E, b, b], negative round-off eigenvalues clamped to 0."""
    values, vectors = torch.linalg.eigh(covariance)
    return vectors * values.clamp_min(0.0).sqrt().unsqueeze(1)


@dataclass
class PointBlocks:
    """The Gaussian conditional of each block of points' logits (one class) given the other points'.

    For a block B of points, z_B | z_rest ~ N(G_B z, F_B F_B^T) with G_B = K_B,rest K_rest,rest^+
    (zero on B's own columns) and F_B F_B^T = K_BB - G_B K_rest,B: the Schur complement, written
    with the pseudo-inverse so that singular K (duplicates, more points than dims) stay exact.
    The constraints are per point, so a LIN-ESS move of one block of one class column meets only
    that block's constraints: on polytopes with hundreds of points it takes far longer arcs than a
    move of the whole column. Block size 0 (the default) is the whole column: G = 0, F = L.

    Args:
        ranges: (start, stop) of each block of points.
        gains: per block, [E, b, P] (None for a single block).
        factors: per block, [E, b, b].
    """

    ranges: list[tuple[int, int]]
    gains: list[torch.Tensor | None]
    factors: list[torch.Tensor]

    @classmethod
    def from_prior(cls, prior: LogitPrior, size: int = 0) -> "PointBlocks":
        """Contiguous blocks of `size` of the prior's points, as equal as possible; 0 = one block."""
        points = prior.factor.shape[1]
        if size <= 0 or size >= points:
            return cls([(0, points)], [None], [prior.factor])
        gram = prior.factor.double() @ prior.factor.double().transpose(1, 2)
        size = math.ceil(points / math.ceil(points / size))
        ranges, gains, factors = [], [], []
        for start in range(0, points, size):
            stop = min(points, start + size)
            rest = torch.cat([torch.arange(start), torch.arange(stop, points)])
            gain_rest, covariance = conditional(gram, torch.arange(start, stop), rest)
            gain = torch.zeros(gram.shape[0], stop - start, points, dtype=gram.dtype)
            gain[:, :, rest] = gain_rest
            ranges.append((start, stop))
            gains.append(gain)
            factors.append(_psd_factor(covariance))
        return cls(ranges, gains, factors)

    def take(self, index: torch.Tensor) -> "PointBlocks":
        """The blocks of episodes `index`."""
        return PointBlocks(self.ranges, [None if g is None else g[index] for g in self.gains],
                           [f[index] for f in self.factors])

    def to(self, dtype: torch.dtype) -> "PointBlocks":
        """The same blocks in `dtype`."""
        return PointBlocks(self.ranges, [None if g is None else g.to(dtype) for g in self.gains],
                           [f.to(dtype) for f in self.factors])
