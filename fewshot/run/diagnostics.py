"""Diagnostics of the heads that head optimizers find, per episode, on their own support set.

Cross-entropy on separable support sets has no finite minimum, so a head's raw scale says how
long it was trained, not where it sits; every geometric diagnostic here is therefore measured on
the span-projected, class-centred head (`fewshot.heads.span`: the least-norm head with the same support
predictions; its norm is ||theta_span||^2 = sum_k z_k^T G^+ z_k, G the support Gram matrix with a
ones column), so that it depends on the head's direction only and not on its scale, its part
outside the support span, or a shift common to all classes.

- support_loss, support_accuracy: cross-entropy and accuracy of the head on its support set.
- span_norm_loss, full_norm_loss: the normalized support losses of `fewshot.heads.losses`
  (`decision_loss`, the loss the heads' bands and stops use; not the class-centred span norm of
  the other diagnostics): the losses at which the volume analysis matches guess & check to a head.
- weight_norm: ||W||_F as fitted (bias excluded): the scale the optimizer reached.
- sparsity: the fraction of NON-ZERO entries of W (pattern search leaves most entries zero).
- normalized_margin: min over support points of (true logit - largest other logit) / ||theta_span||;
  the quantity the multiclass SVM maximizes (seed 003), negative when a support point is wrong.
- max_margin_cosine: cosine between the head and the max-margin (Crammer-Singer) head of the same
  support set, both span-projected: 1 for the max-margin head, the direction gradient descent on
  separable data converges to.
- local_volume_r{r}: the fraction of random perturbations of relative size r (uniform directions
  in the span, norm r ||theta_span||) after which the head still classifies every support point
  correctly; 0 for a head that does not fit its support set. Flatness measured as volume, the
  notion of seed 000 (a head deep inside a wide fitting region keeps fitting).
- sharpness: mean rise of the normalized loss CE(Z / ||theta_span||) (scale-invariant: the same
  for theta and 10 theta) under perturbations of relative size rho in the span, both signs of each
  direction (antithetic pairs cancel the first-order term). 0 for the zero head. On L2-normalized
  features the unit-norm logits are small and this loss nearly linear in them, so the rise mostly
  measures the curvature of the normalization, not a basin: on the demo it calls the poisoned
  head flattest, the opposite of its local volume (docs/diagnostics.md). Read flatness from
  the local volumes.
- asymmetry: for the same directions, with rises r+ and r-, the mean of |r+ - r-| / (|r+| + |r-|)
  on the normalized loss (which, unlike raw cross-entropy on separable data, has a minimum over
  directions): 0 for a symmetric valley, 1 for a one-sided one (or a slope: a head away from the
  normalized loss's minimum). A pair with r+ = r- = 0 counts as 0. No head sits at that minimum
  (near the class-mean direction on normalized features), so this reads as distance from it,
  not as seed 002's asymmetric valley around a minimum.

Network heads (`model: mlp`, a fit with `HeadFit.model`): the span projection, the max-margin
reference and the span perturbations describe a head that is linear in the features, so for a
network only support_loss, support_accuracy, weight_norm and sparsity (over all its parameters)
and function_margin (min over support points of true logit - largest other logit, in function
space, unnormalized) are measured; the linear-only ones are absent, with their reason in
`LINEAR_ONLY` (`absent_diagnostics`), never reported as 0. Asking `diagnose` for one of them
(`names`) on a network fit is an error naming the fix.

The max-margin reference of a support set is solved once and reused by every head evaluated on
it (a small cache keyed by the support Gram matrix's content and the labels).

Example:
    >>> stats = diagnose(head, fit, support, labels, generator=torch.Generator().manual_seed(0))
    >>> stats["max_margin_cosine"].shape     # [E]
"""
from __future__ import annotations

import math

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, HeadOptimizer
from fewshot.heads.common import linear_accuracy, linear_loss
from fewshot.heads.crammer_singer import remembered_dual
from fewshot.heads.losses import decision_loss
from fewshot.heads.max_margin import MaxMarginHead
from fewshot.heads.span import SupportSpan

VOLUME_RADII = (0.25, 0.5, 1.0)
NORMALIZED_LOSSES = ("span_norm", "full_norm")   # stored as f"{kind}_loss"
_SPAN = "measured on the span-projected head, which exists for heads linear in the features only"
LINEAR_ONLY = {"normalized_margin": _SPAN, "max_margin_cosine": _SPAN + " (the max-margin reference is linear)",
               **{f"{kind}_loss": "normalized by the norm of a linear head's weights" for kind in NORMALIZED_LOSSES},
               **{f"local_volume_r{r:g}": _SPAN + " (perturbations in the support span)" for r in VOLUME_RADII},
               "sharpness": _SPAN, "asymmetry": _SPAN}


def absent_diagnostics(fit: HeadFit) -> dict[str, str]:
    """The diagnostics `diagnose` leaves out for `fit`, each with its reason (none for a linear fit)."""
    return {} if fit.is_linear else dict(LINEAR_ONLY)


def diagnose(head: HeadOptimizer, fit: HeadFit, support: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator, rho: float = 0.05, directions: int = 8,
             radii: tuple[float, ...] = VOLUME_RADII, perturbations: int = 64,
             names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Diagnostics of fitted heads on their support sets, each a float tensor [E].

    `head.predict` must be affine in (weight, bias) with one column per class (true for every
    linear head, including the cosine prototype's feature normalization): the features as the
    head sees them are `predict` of an identity head.

    Args:
        head: the head that produced `fit` (its `predict` turns features into logits).
        fit: the fitted heads, weight [E, D, N] and bias [E, N].
        support: [E, S, D] support features the heads were fitted on.
        labels: [E, S] support labels.
        generator: source of the random directions.
        rho: sharpness / asymmetry perturbation size relative to ||theta_span||.
        directions: random directions per episode for sharpness (each used with both signs).
        radii: relative perturbation sizes of the local volumes.
        perturbations: random perturbations per episode and radius for the local volumes.
        names: the diagnostics wanted (None: all that apply); one the fit's model cannot have is an error.
    """
    if directions < 1 or perturbations < 1 or rho < 0 or any(r <= 0 for r in radii):
        raise fail(f"Diagnostics need directions >= 1, perturbations >= 1, rho >= 0 and radii > 0, got "
                   f"directions={directions}, perturbations={perturbations}, rho={rho}, radii={radii}.",
                   "Pass positive counts, a non-negative rho and positive radii.")
    missing = [name for name in (names or []) if name in absent_diagnostics(fit)]
    if missing:
        raise fail(f"The diagnostics {', '.join(missing)} are not defined for a network head: they are "
                   f"{_SPAN}.", "Ask for support_loss, support_accuracy, weight_norm, sparsity or function_margin, "
                   "or use a linear head (model: linear).")
    if not fit.is_linear:
        stats = _network_diagnostics(head, fit, support, labels)
    else:
        stats = _linear_diagnostics(head, fit, support, labels, generator, rho, directions, radii, perturbations)
    return {name: value for name, value in stats.items() if names is None or name in names}


def _network_diagnostics(head: HeadOptimizer, fit: HeadFit, support: torch.Tensor,
                         labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The diagnostics defined for a network fit (its flat `params`), each [E]."""
    logits = head.predict(fit, support)
    params = fit.params
    return {name: value.float() for name, value in {
        "support_loss": linear_loss(logits, labels), "support_accuracy": linear_accuracy(logits, labels),
        "weight_norm": params.flatten(1).norm(dim=1), "sparsity": (params != 0).flatten(1).float().mean(dim=1),
        "function_margin": _margins(logits.double(), labels).amin(dim=1)}.items()}


def _linear_diagnostics(head: HeadOptimizer, fit: HeadFit, support: torch.Tensor, labels: torch.Tensor,
                        generator: torch.Generator, rho: float, directions: int, radii: tuple[float, ...],
                        perturbations: int) -> dict[str, torch.Tensor]:
    """Every diagnostic of a linear fit (see the module doc), each [E]."""
    weight, n_way = fit.weight, fit.weight.shape[2]
    logits = head.predict(fit, support)
    episodes, dim = support.shape[0], weight.shape[1]
    identity = torch.eye(dim, dtype=weight.dtype, device=weight.device).expand(episodes, dim, dim)
    seen = head.predict(HeadFit(identity, weight.new_zeros(episodes, dim)), support)
    span = SupportSpan.of(seen)
    coords = span.coordinates(logits)                                       # [E, S, N]
    norm = coords.flatten(1).norm(dim=1)
    reference = span.coordinates(span.gram @ _max_margin_alpha(span, labels, n_way))
    reference_norm = reference.flatten(1).norm(dim=1)
    cosine = (coords * reference).sum(dim=(1, 2)) / (norm * reference_norm).clamp(min=1e-300)
    rise_plus, rise_minus = _normalized_loss_rises(span, coords, norm, labels, rho, directions, generator)
    spread = rise_plus.abs() + rise_minus.abs()
    imbalance = torch.where(spread > 0, (rise_plus - rise_minus).abs() / spread.clamp(min=1e-300), 0.0)
    stats = {
        "support_loss": linear_loss(logits, labels),
        "support_accuracy": linear_accuracy(logits, labels),
        "weight_norm": weight.flatten(1).norm(dim=1),
        "sparsity": (weight != 0).flatten(1).float().mean(dim=1),
        "normalized_margin": torch.where(norm > 0, _margins(logits.double(), labels).amin(dim=1) / norm.clamp(
            min=1e-300), 0.0),
        "max_margin_cosine": torch.where(norm > 0, cosine, 0.0),
        # The features as the head sees them: logits = seen @ weight + bias (predict is affine).
        **{f"{kind}_loss": decision_loss(kind, seen, labels, weight, fit.bias) for kind in NORMALIZED_LOSSES},
    }
    # The same directions at every radius (common random numbers: volumes fall with r per episode).
    fits = _margins(logits.double(), labels).amin(dim=1) > 0
    centred = span.logits(coords)
    moves = span.logits(span.random_directions((perturbations,), n_way, generator))   # [E, M, S, N]
    for radius in radii:
        moved = centred[:, None] + moves * (radius * norm)[:, None, None, None]
        kept = (_margins(moved, labels[:, None]).amin(dim=-1) > 0).double().mean(dim=1)
        stats[f"local_volume_r{radius:g}"] = torch.where(fits, kept, 0.0)
    stats["sharpness"] = torch.cat([rise_plus, rise_minus], dim=1).mean(dim=1)
    stats["asymmetry"] = imbalance.mean(dim=1)
    return {name: value.float() for name, value in stats.items()}


def _margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True logit minus the largest other logit, [..., S], of logits [..., S, N] and labels [E, S]."""
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true = logits.gather(-1, index).squeeze(-1)
    other = logits.scatter(-1, index, -math.inf).amax(dim=-1)
    return true - other


def normalized_loss(logits: torch.Tensor, norm: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [E, ...] of support logits [E, ..., S, N] divided by the head's span-projected
    norm [E, ...]: the head scaled to unit norm, so theta and 10 theta score the same."""
    scaled = logits / norm.clamp(min=1e-300)[..., None, None]
    return linear_loss(scaled, labels.reshape(labels.shape[0], *[1] * (logits.dim() - 3), labels.shape[1]))


def _normalized_loss_rises(span: SupportSpan, coords: torch.Tensor, norm: torch.Tensor, labels: torch.Tensor,
                           rho: float, directions: int, generator: torch.Generator
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rises [E, M] of the normalized loss along +d and -d, d of norm rho ||theta_span||."""
    unit = span.random_directions((directions,), coords.shape[-1], generator)     # [E, M, S, N]
    step = unit * (rho * norm)[:, None, None, None]
    centred, moves = span.logits(coords), span.logits(step)
    base = normalized_loss(centred, norm, labels)[:, None]
    rises = []
    for sign in (1.0, -1.0):
        moved_norm = (coords[:, None] + sign * step).flatten(-2).norm(dim=-1)
        rises.append(normalized_loss(centred[:, None] + sign * moves, moved_norm, labels) - base)
    zero = (norm == 0)[:, None]
    return rises[0].masked_fill(zero, 0.0), rises[1].masked_fill(zero, 0.0)


def _max_margin_alpha(span: SupportSpan, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Dual coefficients [E, S, N] of the max-margin head (hard margin where G has full rank, else
    the `max_margin` head's default soft margin): the solve of a `max_margin` head or another head's
    diagnostics on the same chunk where there was one (`remembered_dual`)."""
    settings = MaxMarginHead.Config()
    C = torch.where(span.full_rank, math.inf, settings.C).to(span.gram)
    alpha, _, _ = remembered_dual(span.gram, labels, n_way, C, tol=settings.tol, max_iter=settings.max_iter)
    return alpha
