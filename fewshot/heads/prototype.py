"""The `prototype` head: nearest class mean (ProtoNet's classifier), written as a linear head.

Euclidean: -||x - mu_k||^2 = 2 x.mu_k - ||mu_k||^2 - ||x||^2, and the last term is the same
for every class, so W = 2 mu^T, b = -||mu||^2 gives the nearest-prototype decision exactly.
Cosine: W = normalized prototypes, b = 0, and `predict` normalizes the query features, so the
logits are cosine similarities.

Example:
    >>> head = get_head("prototype", metric="cosine")
    >>> logits = head.predict(head.fit(support, labels, 5, generator=gen), query)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import class_counts, linear_loss, one_hot, validate_inputs


def class_means(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean support feature of each class, [E, n_way, D].

    Args:
        support: [E, S, D] features.
        labels: [E, S] labels in [0, n_way); every class must occur.
    """
    totals = torch.bmm(one_hot(labels, n_way, support.dtype).transpose(1, 2), support)
    return totals / class_counts(labels, n_way).unsqueeze(2).to(support.dtype)


@register_head("prototype")
class PrototypeHead(HeadOptimizer):
    """Nearest class mean; no optimization, so `generator` is unused."""

    @dataclass
    class Config:
        """Args:
            metric: `euclidean` (squared distance) or `cosine` (similarity).
            temperature: logits are divided by it (changes the loss, never the decisions).
        """

        metric: Literal["euclidean", "cosine"] = "euclidean"
        temperature: float = 1.0

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        return [(self.config.temperature > 0, "temperature", "> 0")]

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        support = support.float()
        means = class_means(support, labels, n_way)                       # [E, N, D]
        if self.config.metric == "cosine":
            weight = F.normalize(means, dim=2).transpose(1, 2)
            bias = support.new_zeros(support.shape[0], n_way)
        else:
            weight = 2 * means.transpose(1, 2)
            bias = -means.square().sum(dim=2)
        fit = HeadFit(weight / self.config.temperature, bias / self.config.temperature)
        fit.stats["support_loss"] = linear_loss(self.predict(fit, support), labels)
        return fit

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        """Logits [E, Q, n_way]; with the cosine metric the features are normalized first."""
        if self.config.metric == "cosine":
            features = F.normalize(features, dim=2)
        return super().predict(fit, features)
