"""An example fewshot plug-in: the `ridge` head, closed-form ridge regression on one-hot targets.

Installed, it appears in `fewshot heads` and can be used in a config like any built-in head:

    heads: {sgd: {}, ridge: {l2: 0.5}}
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot.heads import HeadFit, HeadOptimizer


class RidgeHead(HeadOptimizer):
    """Least squares onto one-hot labels with an L2 penalty, solved exactly per episode.

    With centered features X [S, D] and centered one-hot targets Y [S, N], the weight is
    W = X^T (X X^T + l2 I)^-1 Y: an S x S solve (the Gram form), cheap when S << D. The bias
    puts the mean prediction at the mean target. Deterministic: the generator is not used.
    """

    @dataclass
    class Config:
        """Args:
            l2: ridge penalty (> 0); larger values shrink the weight towards zero.
            bias: fit a bias per class (centers features and targets first).
        """

        l2: float = 1.0
        bias: bool = True

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        # Checked when the head is built: a failed rule is a user error naming heads.ridge.l2.
        return [(self.config.l2 > 0, "l2", "> 0")]

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        """Fit one head per episode: support [E, S, D], labels [E, S] -> weight [E, D, N]."""
        features = support.float()
        targets = torch.nn.functional.one_hot(labels.long(), n_way).float()
        feature_mean = features.mean(dim=1, keepdim=True) if self.config.bias else features[:, :1] * 0
        target_mean = targets.mean(dim=1, keepdim=True) if self.config.bias else targets[:, :1] * 0
        centered, centered_targets = features - feature_mean, targets - target_mean
        gram = centered @ centered.transpose(1, 2)
        eye = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
        coefficients = torch.linalg.solve(gram + self.config.l2 * eye, centered_targets)
        weight = centered.transpose(1, 2) @ coefficients                      # [E, D, N]
        bias = (target_mean - feature_mean @ weight).squeeze(1)               # [E, N]
        residual = features @ weight + bias.unsqueeze(1) - targets
        return HeadFit(weight, bias, stats={"support_mse": residual.pow(2).mean(dim=(1, 2))})
