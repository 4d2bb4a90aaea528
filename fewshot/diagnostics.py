"""Diagnostics of the minima that heads find: norm, sparsity, margin, sharpness, asymmetry.

All per episode, batched over episodes and random directions. Parameters theta = (W, b).

- support_loss, support_accuracy: of the fitted head on its own support set.
- weight_norm: ||W||_F (bias excluded).
- sparsity: the fraction of NON-ZERO entries of W (1 = dense; pattern search from a zero start
  leaves most entries exactly zero).
- min_margin: min over support points of (true-class logit - largest other logit) / ||W||_F;
  negative when a support point is misclassified, 0 for a zero weight.
- sharpness: mean support-loss rise L(theta + d) - L(theta) over perturbations
  d = +-rho * ||theta|| * u / ||u||, u Gaussian in all parameters; both signs of every u are
  used (antithetic pairs, which cancel the first-order term). 0 for theta = 0.
- asymmetry: for the same directions, with rises r+ = L(theta + d) - L(theta) and
  r- = L(theta - d) - L(theta), the mean of |r+ - r-| / (|r+| + |r-|), in [0, 1]:
  0 for a symmetric valley (quadratic), 1 when the loss rises along one side only or
  falls along one side (e.g. not a minimum along u). A pair with r+ = r- = 0 counts as 0.

Example:
    >>> stats = diagnose(head, fit, support, labels, generator=torch.Generator().manual_seed(0))
    >>> stats["sharpness"].shape     # [E]
"""
from __future__ import annotations

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, HeadOptimizer
from fewshot.heads.common import linear_accuracy, linear_loss, one_hot


def diagnose(head: HeadOptimizer, fit: HeadFit, support: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator, rho: float = 0.05, directions: int = 8
             ) -> dict[str, torch.Tensor]:
    """Diagnostics of fitted heads on their support sets, each a float tensor [E].

    `head.predict` must be affine in (weight, bias) with one column per class (true for
    every linear head, including the cosine prototype's feature normalization), so the loss
    along many directions comes from one `predict` call on the directions stacked as columns.

    Args:
        head: the head that produced `fit` (its `predict` turns features into logits).
        fit: the fitted heads, weight [E, D, N] and bias [E, N].
        support: [E, S, D] support features the heads were fitted on.
        labels: [E, S] support labels.
        generator: source of the random directions.
        rho: perturbation size relative to ||theta||.
        directions: random directions per episode (each used with both signs).
    """
    if directions < 1 or rho < 0:
        raise fail(f"Diagnostics need directions >= 1 and rho >= 0, got directions={directions}, "
                   f"rho={rho}.", "Pass a positive number of directions and a non-negative rho.")
    weight, n_way = fit.weight, fit.weight.shape[2]
    logits = head.predict(fit, support)
    loss = linear_loss(logits, labels)
    weight_norm = weight.flatten(1).norm(dim=1)

    true_logit = logits.gather(2, labels.unsqueeze(2)).squeeze(2)
    other_logit = logits.masked_fill(one_hot(labels, n_way, torch.bool), float("-inf")).amax(dim=2)
    raw_margin = (true_logit - other_logit).amin(dim=1)
    min_margin = torch.where(weight_norm > 0, raw_margin / weight_norm.clamp(min=1e-30), 0.0)

    rise_plus, rise_minus = _loss_rises(head, fit, support, labels, logits, loss, generator,
                                        rho, directions)
    spread = rise_plus.abs() + rise_minus.abs()
    imbalance = (rise_plus - rise_minus).abs() / spread.clamp(min=1e-30)
    imbalance = torch.where(spread > 0, imbalance, 0.0)
    return {
        "support_loss": loss,
        "support_accuracy": linear_accuracy(logits, labels),
        "weight_norm": weight_norm,
        "sparsity": (weight != 0).flatten(1).float().mean(dim=1),
        "min_margin": min_margin,
        "sharpness": torch.cat([rise_plus, rise_minus], dim=1).mean(dim=1),
        "asymmetry": imbalance.mean(dim=1),
    }


def _loss_rises(head: HeadOptimizer, fit: HeadFit, support: torch.Tensor, labels: torch.Tensor,
                logits: torch.Tensor, loss: torch.Tensor, generator: torch.Generator,
                rho: float, directions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss rises [E, M] along +d and -d for M random relative perturbations d."""
    weight, bias = fit.weight, fit.bias
    episodes, dim, n_way = weight.shape
    size = dim * n_way + n_way
    noise = torch.randn(episodes, directions, size, generator=generator, device=generator.device)
    noise = noise.to(device=weight.device, dtype=weight.dtype)
    theta_norm = (weight.flatten(1).square().sum(dim=1) + bias.square().sum(dim=1)).sqrt()
    step = noise / noise.norm(dim=2, keepdim=True) * (rho * theta_norm)[:, None, None]
    # Stack the M directions as M * N extra classes: column m * N + k is direction m, class k.
    step_weight = step[..., :dim * n_way].reshape(episodes, directions, dim, n_way)
    step_weight = step_weight.permute(0, 2, 1, 3).reshape(episodes, dim, directions * n_way)
    step_bias = step[..., dim * n_way:].reshape(episodes, directions * n_way)
    change = head.predict(HeadFit(step_weight, step_bias), support)       # [E, S, M * N]
    change = change.reshape(episodes, -1, directions, n_way).transpose(1, 2)  # [E, M, S, N]
    per_direction_labels = labels.unsqueeze(1)
    rise_plus = linear_loss(logits.unsqueeze(1) + change, per_direction_labels) - loss.unsqueeze(1)
    rise_minus = linear_loss(logits.unsqueeze(1) - change, per_direction_labels) - loss.unsqueeze(1)
    return rise_plus, rise_minus
