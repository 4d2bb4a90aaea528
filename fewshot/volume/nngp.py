"""The NNGP kernel: the logit prior of an infinitely wide ReLU network head.

A head with `depth` ReLU hidden layers of width H, first layer W1 ~ N(0, s1^2), b1 ~ N(0, b1^2),
every later layer (hidden-to-hidden and the read-out) W ~ N(0, s2^2 / H), b ~ N(0, b2^2): as H
grows, each class's logits over an episode's points are a Gaussian process, independent across
classes, with the kernel (Cho & Saul 2009; Lee et al. 2018)

    K0(x, x') = s1^2 x.x' + b1^2                          the first layer's pre-activations
    K_l(x, x') = s2^2 k1(K_{l-1})(x, x') + b2^2           l = 1..depth
    k1(Sigma)(x, x') = sqrt(S11 S22) (sin t + (pi - t) cos t) / (2 pi),  cos t = S12 / sqrt(S11 S22)

(E[relu(u) relu(u')] for (u, u') ~ N(0, Sigma): the degree-1 arc-cosine kernel). For depth 1 the
logits' covariance is K_1 at every width H, not only in the limit (the read-out is independent of
the hidden units); deeper, the finite-width correction is O(1 / H).

Example:
    >>> gram = nngp_kernel(features, NNGPSettings(depth=1))          # [E, P, P]
    >>> prior = LogitPrior.from_kernel(gram)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail

__all__ = ["NNGPSettings", "arccos_expectation", "nngp_kernel"]


@dataclass
class NNGPSettings:
    """Args:
        depth: ReLU hidden layers (1 or 2).
        s1, b1: standard deviations of the first layer's weights and biases.
        s2, b2: of every later layer's weights (times 1 / sqrt(H)) and biases.
    """

    depth: int = 1
    s1: float = 1.0
    b1: float = 1.0
    s2: float = 1.0
    b2: float = 1.0

    def check(self, where: str) -> None:
        """Fail with a message naming `where.key` on a bad setting."""
        rules = [(self.depth in (1, 2), "depth", "1 or 2 (ReLU hidden layers)"), (self.s1 > 0, "s1", "> 0"),
                 (self.b1 >= 0, "b1", ">= 0"), (self.s2 > 0, "s2", "> 0"), (self.b2 >= 0, "b2", ">= 0")]
        for ok, key, rule in rules:
            if not ok:
                raise fail(f"{where}.{key} is {getattr(self, key)!r}, but must be {rule}.", f"Set {where}.{key} to {rule}.")


def arccos_expectation(sigma: torch.Tensor) -> torch.Tensor:
    """E[relu(u_i) relu(u_j)] [..., P, P] for u ~ N(0, sigma) (sigma [..., P, P], float64)."""
    diag = sigma.diagonal(dim1=-2, dim2=-1).clamp_min(0)
    norms = (diag.unsqueeze(-1) * diag.unsqueeze(-2)).sqrt()
    cos = torch.where(norms > 0, sigma / norms.clamp_min(1e-300), torch.zeros_like(sigma)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return norms * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)


def nngp_kernel(features: torch.Tensor, settings: NNGPSettings) -> torch.Tensor:
    """The NNGP kernel K [E, P, P] (float64) of the logits over features [E, P, D] (see the module doc)."""
    x = features.double()
    kernel = settings.s1 ** 2 * (x @ x.transpose(1, 2)) + settings.b1 ** 2
    for _ in range(settings.depth):
        kernel = settings.s2 ** 2 * arccos_expectation(kernel) + settings.b2 ** 2
    return (kernel + kernel.transpose(1, 2)) / 2
