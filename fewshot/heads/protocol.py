"""The fit protocol shared by the searching heads: start, decision loss, loss band, stops, failures.

A head whose `Config` derives from `FitProtocol` gets these settings; `fit_with_protocol`
runs its single-start fit, marks each episode fitted or not, and restarts the failures.

"Fitted" means 100% support accuracy, and, when set, the decision loss L in the band
(low < L <= high) and L < `loss_threshold`. Searches stop an episode as soon as it has 100%
support accuracy and L <= high (the band's upper edge) and L below the threshold, checked
every `check_every` accepted moves (SGD: steps). The first-fit stop (no band, no threshold)
stops at the first 100%-accurate point checked.

Failures (`on_failure`): `score` keeps an unfitted episode's head and scores it (the default);
`restart` fits it again from a fresh start drawn from the same generator, up to `max_restarts`
times, keeping the last attempt; `drop` keeps it but the results leave it out of the head's
mean (the seed's practice: it averages fitted models only). Every head reports
`stats["fitted"]` (0/1) and `stats["restarts"]` per episode.

Example:
    >>> fit = fit_with_protocol(self._fit_once, support, labels, n_way, generator, self.config)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from fewshot.heads.base import HeadFit
from fewshot.heads.common import linear_accuracy, linear_logits, linear_loss
from fewshot.heads.losses import LossKind, decision_loss, normalized_loss
from fewshot.heads.runtimes import default_targets, merge_attempt, targets_rule
from fewshot.heads.starts import StartKind


@dataclass
class FitProtocol:
    """Args:
        init: start `zero`, `uniform` on [-init_scale, init_scale] or `gaussian` (std init_scale).
        init_scale: the start's scale (the seed: uniform, 1.0).
        loss: the loss of decisions, stops and bands: `raw` cross-entropy, or cross-entropy of the
            logits divided by the head's `full_norm` or `span_norm` (`fewshot.heads.losses`).
        band: [low, high]: stop at 100% support accuracy with loss <= high; count as fitted only
            with loss in (low, high]. None: no band.
        check_every: check the stop every this many accepted moves (SGD: steps).
        on_failure: `score`, `restart` or `drop` unfitted episodes (see the module doc).
        max_restarts: restarts per episode with `on_failure: restart`.
        targets: decision-loss targets of the reported runtimes (`fewshot.heads.runtimes`).
    """

    init: StartKind = "zero"
    init_scale: float = 1.0
    loss: LossKind = "raw"
    band: list[float] | None = None
    check_every: int = 1
    on_failure: Literal["score", "restart", "drop"] = "score"
    max_restarts: int = 10
    targets: list[float] = field(default_factory=default_targets)


def protocol_rules(c: FitProtocol) -> list[tuple[bool, str, str]]:
    """The setting rules of the protocol fields, for a head's `setting_rules`."""
    band_ok = c.band is None or (len(c.band) == 2 and 0 <= c.band[0] < c.band[1])
    return [(c.init_scale > 0, "init_scale", "> 0"), (c.check_every >= 1, "check_every", ">= 1"),
            (c.max_restarts >= 0, "max_restarts", ">= 0"),
            (band_ok, "band", "null or [low, high] with 0 <= low < high"), targets_rule(c.targets)]


def reached_stop(accurate: torch.Tensor, loss: torch.Tensor, c: FitProtocol,
                 threshold: float | None = None) -> torch.Tensor:
    """[E] episodes that may stop: 100% accurate, loss <= band high, loss < threshold.

    Args:
        accurate: [E] bool, 100% support accuracy.
        loss: [E] the decision loss.
        c: the head's settings; threshold: the head's `loss_threshold` (None: none).
    """
    stop = accurate.clone()
    if c.band is not None:
        stop &= loss <= c.band[1]
    if threshold is not None:
        stop &= loss < threshold
    return stop


def fitted_mask(accurate: torch.Tensor, loss: torch.Tensor, c: FitProtocol,
                threshold: float | None = None) -> torch.Tensor:
    """[E] fitted episodes: `reached_stop` and, with a band, loss > low."""
    fitted = reached_stop(accurate, loss, c, threshold)
    if c.band is not None:
        fitted &= loss > c.band[0]
    return fitted


def check_due(accepted: torch.Tensor, checked_at: torch.Tensor, c: FitProtocol) -> torch.Tensor:
    """[E] whether the stop is checked now: every `check_every` accepted moves (and at the start)."""
    return (accepted == 0) | (accepted - checked_at >= c.check_every)


def fit_with_protocol(fit_once: Callable[[torch.Tensor, torch.Tensor, torch.Generator], HeadFit],
                      support: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                      c: FitProtocol, threshold: float | None = None) -> HeadFit:
    """Run `fit_once`, mark fitted episodes, restart failures when `on_failure` is `restart`.

    Args:
        fit_once: fits a batch (support, labels, generator) from fresh starts.
        support: [E, S, D]; labels: [E, S]; generator: shared by all attempts.
        c: the head's settings; threshold: its `loss_threshold` if any.

    Returns the fit with stats `fitted`, `restarts` and `decision_loss` added.
    """
    fit = fit_once(support, labels, generator)
    fitted = _fitted(fit, support, labels, c, threshold)
    restarts = torch.zeros(support.shape[0], device=support.device)
    for _ in range(c.max_restarts if c.on_failure == "restart" else 0):
        todo = (~fitted).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        again = fit_once(support[todo], labels[todo], generator)
        if fit.params is not None:  # a network head: weight and bias are views of its params
            fit.params[todo] = again.params
        else:
            fit.weight[todo], fit.bias[todo] = again.weight, again.bias
        previous = {name: value[todo] for name, value in fit.stats.items()}
        for name, value in merge_attempt(previous, again.stats).items():
            fit.stats[name][todo] = value.to(fit.stats[name].dtype)
        fitted[todo] = _fitted(again, support[todo], labels[todo], c, threshold)
        restarts[todo] += 1
    loss = _decision_loss(fit, support, labels, c).float()
    fit.stats.update({"fitted": fitted.float(), "restarts": restarts, "decision_loss": loss})
    return fit


def _fitted(fit: HeadFit, support: torch.Tensor, labels: torch.Tensor, c: FitProtocol,
            threshold: float | None) -> torch.Tensor:
    if fit.model is None:
        logits = linear_logits(support.float(), fit.weight.float(), fit.bias.float())
    else:
        logits = fit.model.predict(fit, support.float())
    accurate = linear_accuracy(logits, labels) == 1.0
    loss = _decision_loss(fit, support, labels, c)
    return fitted_mask(accurate, loss.to(fit.weight.dtype), c, threshold)


def _decision_loss(fit: HeadFit, support: torch.Tensor, labels: torch.Tensor, c: FitProtocol) -> torch.Tensor:
    """The decision loss [E] (float64) of a linear or network fit (a network: raw or full_norm)."""
    if fit.model is None:
        return decision_loss(c.loss, support, labels, fit.weight, fit.bias)
    logits = fit.model.predict(fit, support.double()).double()
    if c.loss == "raw":
        return linear_loss(logits, labels)
    norm_sq = fit.model.full_norm_sq(fit.params.unsqueeze(1), support.shape[2]).squeeze(1)
    return normalized_loss(logits, labels, norm_sq.sqrt())
