"""Checks for oracle heads: heads that see the episode's queries at fit time (`HeadOptimizer.oracle`).

Example:
    >>> queries = require_queries("poisoned", queries, support, n_way=5)   # UserError if absent
"""
from __future__ import annotations

import torch

from episodes.errors import fail
from fewshot.heads.base import Queries


def require_queries(head: str, queries: Queries | None, support: torch.Tensor, n_way: int) -> Queries:
    """The queries an oracle head was given, checked against its support set.

    Args:
        head: the head's registered name, for messages.
        queries: what the caller passed as `queries=` (None when it passed nothing).
        support: [E, S, D] support features, already validated.
        n_way: classes per episode.
    """
    if queries is None:
        raise fail(f"The {head!r} head is an oracle: it fits on the query set too, but no queries were given.",
                   "Run it through `fewshot evaluate`/`fewshot benchmark` (which pass the queries to oracle "
                   "heads), or call fit(..., queries=Queries(features, labels)).")
    if not isinstance(queries, Queries):
        raise fail(f"The {head!r} head got queries of type {type(queries).__name__}.",
                   "Pass queries=Queries(features [E, Q, D], labels [E, Q]).")
    features, labels = queries.features, queries.labels
    if isinstance(features, torch.Tensor) and features.dim() == 3 and features.shape[1] == 0:
        raise fail(f"The {head!r} head is an oracle that fits on the queries, but the episodes have no "
                   "queries (episodes.n_query = 0).",
                   f"Set episodes.n_query to at least 1, or leave the {head!r} head out of `heads`.")
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[0] != support.shape[0] \
            or features.shape[2] != support.shape[2] or features.shape[1] == 0:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise fail(f"The {head!r} head needs query features [E, Q, D] with Q >= 1 matching support "
                   f"{tuple(support.shape)}, but got {shape}.",
                   "Pass one non-empty query set per episode, with the support's feature dimension.")
    # The support checks, without the every-class-present rule: a query set need not hold every class.
    _check_query_values(head, features, labels, n_way, support)
    return Queries(features.to(support.dtype), labels)


def _check_query_values(head: str, features: torch.Tensor, labels: torch.Tensor, n_way: int,
                        support: torch.Tensor) -> None:
    if not features.is_floating_point():
        raise fail(f"The {head!r} head's query features must be floating point, but are {features.dtype}.",
                   "Convert them with .float() before fitting.")
    if not isinstance(labels, torch.Tensor) or labels.shape != features.shape[:2] or labels.is_floating_point() \
            or labels.dtype == torch.bool:
        raise fail(f"The {head!r} head's query labels must be integers of shape {tuple(features.shape[:2])}.",
                   "Give one integer label per query: labels [E, Q].")
    if features.device != support.device or labels.device != support.device:
        raise fail(f"The {head!r} head's queries are not on the support's device {support.device}.",
                   "Move support and queries to the same device before fitting.")
    if not bool(torch.isfinite(features).all()):
        raise fail(f"The {head!r} head's query features contain NaN or infinite values.",
                   "Check the backbone checkpoint and feature extraction; features must be finite.")
    if int(labels.min()) < 0 or int(labels.max()) >= n_way:
        raise fail(f"The {head!r} head's query labels range over [{int(labels.min())}, {int(labels.max())}], "
                   f"outside [0, {n_way}).", "Relabel each episode's classes as 0..n_way-1.")
