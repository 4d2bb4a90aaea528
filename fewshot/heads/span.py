"""Linear heads seen from their support set: the span of the support features (with a bias column).

A linear head theta = (W, b) acts on a support set only through its logits Z = X~ theta, with
X~ = [X, 1] the support features plus a ones column. Among all heads with the same support
logits, the one with the least norm lies in the row space of X~ ("span-projected"; DESIGN.md):
with the Gram matrix G = X~ X~^T = V diag(lam) V^T and the orthonormal basis
Q = X~^T V lam^{-1/2} of that row space, theta = Q c, so Z = V lam^{1/2} c and c = lam^{-1/2} V^T Z:
||theta_span||^2 = ||c||^2 = sum_k z_k^T G^+ z_k. The part of a head outside the span (a random
start's, say) changes no support prediction, and neither does adding one vector to every class
(softmax and argmax ignore a shift common to all classes), so `coordinates` also centres the
classes: the result is the least-norm head with the same support predictions and losses.
Everything here is S x S, whatever the feature dimension.

Example:
    >>> span = SupportSpan.of(support)               # support [E, S, D] as the head sees it
    >>> c = span.coordinates(logits)                 # [E, S, N], ||c|| = span-projected norm
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot.heads.common import with_bias_column

# Gram eigenvalues below this fraction of the largest are treated as zero (rank-deficient support).
RANK_TOLERANCE = 1e-7


@dataclass
class SupportSpan:
    """Eigen-decomposition G = V diag(values) V^T of the support Gram matrix with a ones column.

    Args:
        gram: [E, S, S] float64.
        vectors: [E, S, S] orthonormal eigenvectors (columns).
        values: [E, S] eigenvalues, those below the rank tolerance set to 0.
    """

    gram: torch.Tensor
    vectors: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> "SupportSpan":
        """The span of support features [E, S, D] (as the head sees them) plus a ones column."""
        augmented = with_bias_column(features.double())
        gram = torch.bmm(augmented, augmented.transpose(1, 2))
        values, vectors = torch.linalg.eigh(gram)
        values = torch.where(values > RANK_TOLERANCE * values[:, -1:], values, 0.0)
        return cls(gram, vectors, values)

    @property
    def full_rank(self) -> torch.Tensor:
        """[E] bool: G has rank S, so every labelling of the support set is separable."""
        return (self.values > 0).all(dim=1)

    def coordinates(self, logits: torch.Tensor) -> torch.Tensor:
        """Class-centred span coordinates c [E, ..., S, N] of heads with support logits [E, ..., S, N]."""
        logits = logits.double()
        centred = logits - logits.mean(dim=-1, keepdim=True)
        inverse_root = torch.where(self.values > 0, self.values.clamp(min=1e-300).rsqrt(), 0.0)
        vectors = self.vectors.reshape(self.vectors.shape[0], *[1] * (logits.dim() - 3), *self.vectors.shape[1:])
        return inverse_root.reshape(*vectors.shape[:-1], 1) * (vectors.transpose(-1, -2) @ centred)

    def logits(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Support logits [E, ..., S, N] of the heads with span coordinates [E, ..., S, N]."""
        # One bmm over [E, S, (...) * N] rather than a broadcast matmul (which copies V per slice).
        rows = coordinates.movedim(-2, 1)                                   # [E, S, ..., N]
        scaled = (self.values.sqrt().reshape(*rows.shape[:2], *[1] * (rows.dim() - 2)) * rows)
        logits = torch.bmm(self.vectors, scaled.reshape(*rows.shape[:2], -1)).reshape(rows.shape)
        return logits.movedim(1, -2)

    def random_directions(self, shape: tuple[int, ...], n_way: int, generator: torch.Generator) -> torch.Tensor:
        """Unit-norm random directions [E, *shape, S, N] in the span, class-centred: uniform on
        the sphere of the coordinates that can change a support prediction."""
        episodes, shots = self.values.shape
        noise = torch.randn(episodes, *shape, shots, n_way, generator=generator, device=generator.device)
        noise = noise.to(self.values)
        keep = (self.values > 0).reshape(episodes, *[1] * len(shape), shots, 1)
        noise = torch.where(keep, noise - noise.mean(dim=-1, keepdim=True), 0.0)
        return noise / noise.flatten(-2).norm(dim=-1).clamp(min=1e-300)[..., None, None]


def span_norm(span: SupportSpan, logits: torch.Tensor) -> torch.Tensor:
    """Span-projected, class-centred norm [E, ...] of heads with support logits [E, ..., S, N]:
    sqrt(sum_k z_k^T G^+ z_k) after centring the classes (DESIGN.md)."""
    return span.coordinates(logits).flatten(-2).norm(dim=-1)
