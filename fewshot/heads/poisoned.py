"""The `poisoned` head (an oracle): fits the support set while misclassifying the queries.

Seeds 000/001 ("bad minima exist"): the poisoned runs train on the train set plus the test set
with flipped labels. Here: SGD (the `sgd` head's machinery) on the support set plus the query
features labelled (y + shift) mod N: mean support cross-entropy + `query_weight` * mean poisoned
query cross-entropy (the seed pools them in one mean; with 15 queries per class against 1-5 shots
that drowns the support set, so each set gets its own mean here). The weight stays in the span
of support and query features, so the Gram form is exact. It is a reference point for
"a head that fits the support set can generalize badly", never a method: it reads the queries.

Example:
    >>> head = get_head("poisoned")
    >>> fit = head.fit(support, labels, 5, generator=gen, queries=Queries(query, query_labels))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, Queries, register_head
from fewshot.heads.common import linear_accuracy, linear_logits, linear_loss, validate_inputs
from fewshot.heads.oracle import require_queries
from fewshot.heads.sgd import SGDHead


@register_head("poisoned")
class PoisonedHead(SGDHead):
    """SGD on support cross-entropy plus cross-entropy of the queries with shifted (wrong) labels."""

    oracle = True

    @dataclass
    class Config(SGDHead.Config):
        """The `sgd` settings (longer run, no weight decay: the poisoned set has to be fit), and

        Args:
            shift: queries are labelled (y + shift) mod n_way; must not be a multiple of n_way.
            query_weight: weight of the poisoned queries' mean loss against the support's.
        """

        steps: int = 300
        lr: float = 4.0
        weight_decay: float = 0.0
        shift: int = 1
        query_weight: float = 1.0

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        return super().setting_rules() + [(self.config.shift >= 1, "shift", ">= 1"),
                                          (self.config.query_weight > 0, "query_weight", "> 0")]

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator, queries: Queries | None = None) -> HeadFit:
        validate_inputs(support, labels, n_way)
        queries = require_queries(self.name, queries, support, n_way)
        if self.config.shift % n_way == 0:
            raise fail(f"heads.poisoned.shift={self.config.shift} is a multiple of n_way={n_way}, so the "
                       "'wrong' query labels would be the true ones.",
                       f"Set heads.poisoned.shift to a value in 1..{n_way - 1}.")
        wrong = (queries.labels + self.config.shift) % n_way
        features = torch.cat([support.float(), queries.features.float()], dim=1)
        shots, count = support.shape[1], queries.features.shape[1]
        row_weights = torch.cat([features.new_full((shots,), 1 / shots),
                                 features.new_full((count,), self.config.query_weight / count)])
        row_weights = row_weights / row_weights.sum()      # a weighted mean, so `lr` keeps its scale
        # One fit from the configured start on support + poisoned queries (no restarts: the
        # protocol's stops and failures are about the support set alone).
        fitted = self._fit_once(features, torch.cat([labels, wrong], dim=1), n_way, generator, row_weights)
        weight, bias = fitted.weight, fitted.bias
        support_logits = linear_logits(support.float(), weight, bias)
        query_logits = linear_logits(queries.features.float(), weight, bias)
        return HeadFit(weight, bias, stats={
            "support_loss": linear_loss(support_logits, labels),
            "steps": fitted.stats["steps"],
            "poison_fit": linear_accuracy(query_logits, wrong)})   # queries on their wrong label
