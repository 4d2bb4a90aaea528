"""Per-episode feature preprocessing before fitting heads (`features` section of the config).

Example:
    >>> support, query = preprocess(support, query, normalize="l2", center=True)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from episodes.errors import fail

NORMALIZATIONS = ("l2", "none")


def preprocess(support: torch.Tensor, query: torch.Tensor, *, normalize: str,
               center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Center on the support mean (optional), then L2-normalize (optional), per episode.

    Only the support set defines the center, so no query information leaks into the fit.
    A vector that is zero after centering stays zero under normalization.

    Args:
        support: [E, S, D] support features.
        query: [E, Q, D] query features of the same episodes.
        normalize: `l2` scales every feature vector to unit length; `none` leaves it.
        center: subtract each episode's mean support feature from its support and query.

    Returns:
        (support, query), new tensors of the same shapes.
    """
    if normalize not in NORMALIZATIONS:
        raise fail(f"Feature normalization {normalize!r} is not one of {list(NORMALIZATIONS)}.",
                   "Set features.normalize to l2 or none.")
    if support.dim() != 3 or query.dim() != 3 or support.shape[0] != query.shape[0] \
            or support.shape[2] != query.shape[2]:
        raise fail(f"Support features {tuple(support.shape)} and query features "
                   f"{tuple(query.shape)} are not batches [E, S, D] and [E, Q, D] of the same "
                   "episodes.", "Pass features stacked per episode with matching E and D.")
    if center:
        mean = support.mean(dim=1, keepdim=True)
        support, query = support - mean, query - mean
    if normalize == "l2":
        support, query = F.normalize(support, dim=2), F.normalize(query, dim=2)
    return support, query
