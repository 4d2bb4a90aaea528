"""Losses that heads use for decisions, stops and loss bands: raw or norm-normalized cross-entropy.

`raw`: the mean support cross-entropy of the logits.
`full_norm`: cross-entropy of the logits divided by the full parameter norm ||[W; b]||_F. The
    seed (Chiang et al., 2023) divides a linear model's logits by ||W||_F (DESIGN.md, "What the
    seed's code actually does"); here the bias row is part of the norm too, so that
    `span_norm <= full_norm` always holds (the span head is the projection of [W; b]).
`span_norm`: cross-entropy of the logits divided by the norm of the head projected onto the
    span of the support features plus the bias column: the minimum-norm head with the same
    support logits. For the logits z_c [S] of class c, ||w_c||^2 = z_c^T G^+ z_c, with
    G = X~ X~^T the support Gram of X~ = [X, 1] and G^+ its pseudo-inverse (degenerate G:
    repeated or collinear shots). A random head's full norm is dominated by its part orthogonal
    to the support features, which changes no prediction; the span norm ignores that part.

Every normalized loss of a zero head (norm 0) is log N: the logits are all zero.

Example:
    >>> norm = head_norm("span_norm", support, weight, bias)          # [E]
    >>> decision_loss("span_norm", logits, labels, norm)                # [E]
"""
from __future__ import annotations

from typing import Literal

import torch

from fewshot.heads.common import linear_loss, with_bias_column

LossKind = Literal["raw", "full_norm", "span_norm"]
LOSS_KINDS: tuple[str, ...] = ("raw", "full_norm", "span_norm")


def span_gram_pinv(support: torch.Tensor) -> torch.Tensor:
    """G^+ [E, S, S] of the support Gram with a ones column, G = [X, 1] [X, 1]^T, in float64.

    Args:
        support: [E, S, D] support features.
    """
    features = with_bias_column(support.double())
    gram = torch.bmm(features, features.transpose(1, 2))
    return torch.linalg.pinv(gram, hermitian=True)


def span_norm_sq(logits: torch.Tensor, gram_pinv: torch.Tensor) -> torch.Tensor:
    """sum_c z_c^T G^+ z_c [...] of support logits [..., S, N] with G^+ [E, S, S] (leading dim E).

    Args:
        logits: [E, S, N] or [E, K, S, N] (K candidates per episode).
        gram_pinv: from `span_gram_pinv`.
    """
    z = logits.to(gram_pinv.dtype)
    pinv = gram_pinv if z.dim() == 3 else gram_pinv.unsqueeze(1)
    return (z * (pinv @ z)).sum(dim=(-2, -1)).clamp(min=0)


def full_norm_sq(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """||[W; b]||_F^2 [E] of weight [E, D, N] and bias [E, N]."""
    return weight.double().flatten(1).square().sum(1) + bias.double().square().sum(1)


def head_norm(kind: str, support: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              gram_pinv: torch.Tensor | None = None) -> torch.Tensor:
    """The normalizer [E] of `kind` (1 for `raw`), float64.

    Args:
        kind: one of `LOSS_KINDS`.
        support: [E, S, D]; weight: [E, D, N]; bias: [E, N].
        gram_pinv: `span_gram_pinv(support)` when already computed.
    """
    if kind == "raw":
        return torch.ones(support.shape[0], dtype=torch.float64, device=support.device)
    if kind == "full_norm":
        return full_norm_sq(weight, bias).sqrt()
    pinv = span_gram_pinv(support) if gram_pinv is None else gram_pinv
    logits = torch.baddbmm(bias.double().unsqueeze(1), support.double(), weight.double())
    return span_norm_sq(logits, pinv).sqrt()


def normalized_loss(logits: torch.Tensor, labels: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [...] of logits [..., S, N] / norm [...]; a zero norm gives zero logits (log N).

    Args:
        logits: support logits.
        labels: [..., S] (broadcastable).
        norm: the normalizer per head (1 for the raw loss).
    """
    norm = norm.to(logits.dtype)
    scale = torch.where(norm > 0, 1 / norm.clamp(min=torch.finfo(norm.dtype).tiny), torch.zeros_like(norm))
    return linear_loss(logits * scale[..., None, None], labels)


def decision_loss(kind: str, support: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor, gram_pinv: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of `kind` [E] of heads (weight, bias) on their support sets, float64."""
    logits = torch.baddbmm(bias.double().unsqueeze(1), support.double(), weight.double())
    return normalized_loss(logits, labels, head_norm(kind, support, weight, bias, gram_pinv))
