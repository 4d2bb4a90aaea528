"""Helpers shared by all heads: input checks and the loss / accuracy of batched linear heads.

Example:
    >>> validate_inputs(support, labels, n_way=5)              # UserError on bad input
    >>> logits = linear_logits(support, weight, bias)          # [E, S, N]
    >>> linear_loss(logits, labels), linear_accuracy(logits, labels)   # [E] each
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from episodes.errors import fail

__all__ = ["validate_inputs", "linear_logits", "linear_loss", "linear_accuracy", "class_counts",
           "one_hot", "softmax", "log_sum_exp"]


def validate_inputs(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> None:
    """Check a batch of support sets before fitting; raise `UserError` naming the fix.

    Args:
        support: [E, S, D] floating-point support features.
        labels: [E, S] integer labels in [0, n_way).
        n_way: classes per episode; every class needs at least one support example.
    """
    if not isinstance(support, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise fail("Head support features and labels must be torch tensors.",
                   "Pass support as a float tensor [E, S, D] and labels as an integer tensor "
                   "[E, S].")
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 1:
        raise fail(f"n_way must be a positive integer, but got {n_way!r}.",
                   "Pass the number of classes per episode, e.g. 5.")
    if support.dim() != 3:
        raise fail(f"Support features must have 3 dims [episodes, shots, features], but have shape "
                   f"{tuple(support.shape)}.", "Stack episodes into one tensor [E, S, D].")
    if labels.dim() != 2 or labels.shape != support.shape[:2]:
        raise fail(f"Support labels of shape {tuple(labels.shape)} do not match support features "
                   f"of shape {tuple(support.shape)}.",
                   "Give one label per support example: labels [E, S].")
    if not support.is_floating_point():
        raise fail(f"Support features must be floating point, but are {support.dtype}.",
                   "Convert them with .float() before fitting a head.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise fail(f"Support labels must be integers, but are {labels.dtype}.",
                   "Convert them with .long() before fitting a head.")
    if labels.device != support.device:
        raise fail(f"Support features are on {support.device} but labels are on {labels.device}.",
                   "Move both to the same device before fitting a head.")
    # A finite sum proves every entry finite in one cheap pass; only then look closer.
    if support.numel() and not bool(torch.isfinite(support.sum())) \
            and not bool(torch.isfinite(support).all()):
        bad = int((~torch.isfinite(support)).any(dim=2).any(dim=1).nonzero()[0])
        raise fail(f"Support features contain NaN or infinite values (first in episode {bad}).",
                   "Check the backbone checkpoint and feature extraction; features must be finite.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_way):
        raise fail(f"Support labels range over [{int(labels.min())}, {int(labels.max())}], outside "
                   f"[0, {n_way}) for n_way={n_way}.",
                   "Relabel each episode's classes as 0..n_way-1.")
    missing = class_counts(labels, n_way) == 0
    if labels.shape[0] and bool(missing.any()):
        episode, label = (int(i) for i in missing.nonzero()[0])
        raise fail(f"Class {label} has no support example in episode {episode}.",
                   "Sample at least one support example of every class (k_shot >= 1).")


def class_counts(labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Support examples per class, [E, n_way] int64, of labels [E, S]."""
    counts = torch.zeros(labels.shape[0], n_way, dtype=torch.long, device=labels.device)
    return counts.scatter_add_(1, labels, torch.ones_like(labels))


def linear_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits [E, S, N] = features [E, S, D] @ weight [E, D, N] + bias [E, N]."""
    return torch.baddbmm(bias.unsqueeze(1), features, weight)


def log_sum_exp(logits: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(logits[..., k]) over the last dim, kept as size 1.

    Written out because torch's CPU logsumexp / log_softmax / softmax are several times
    slower on a short last dim (N ~ 5 classes) than these few elementwise ops.
    """
    top = logits.amax(dim=-1, keepdim=True)
    return top + (logits - top).exp().sum(dim=-1, keepdim=True).log()


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim (see `log_sum_exp` for why it is written out)."""
    scaled = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    return scaled / scaled.sum(dim=-1, keepdim=True)


def linear_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per episode, [E], of logits [E, S, N] and labels [E, S].

    Extra leading dims are allowed (logits [..., S, N], labels broadcastable to [..., S]).
    """
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true_logit = logits.gather(-1, index)
    return (log_sum_exp(logits) - true_logit).squeeze(-1).mean(dim=-1)


def linear_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of correct argmax predictions per episode, [E], of logits [E, S, N]."""
    return (logits.argmax(dim=-1) == labels).float().mean(dim=-1)


def one_hot(labels: torch.Tensor, n_way: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Labels [E, S] as one-hot [E, S, n_way] of `dtype`."""
    return F.one_hot(labels, n_way).to(dtype)



def with_bias_column(features: torch.Tensor) -> torch.Tensor:
    """[E, S, D] -> [E, S, D + 1] with a column of ones, so the bias is the last weight row."""
    return torch.cat([features, features.new_ones(*features.shape[:-1], 1)], dim=-1)
