"""The `sgd` head on a network model (`model: mlp`): all episodes at once, with bmm.

The first layer's weight gradient is X^T dP (dP [S, H] the gradient at its pre-activations), so,
as for a linear head (`fewshot.heads.sgd`), SGD with momentum and weight decay keeps W1 in the
form X^T A + c W1_perp (W1_perp the start's part outside the support span, c a scalar decayed by
the weight decay alone). Its pre-activations are G A + b1 with G = X X^T: the dual form updates
A [S, H] instead of W1 [D, H], the same iterates at about D / S times fewer flops. The later
layers are small (H x H, H x N) and stay in weight space; their gradients are written out (one
backward pass of a ReLU stack), so a step is a few bmm's for all episodes. Adam, and
`form: primal`, run torch.optim on batched [E, ...] parameters with autograd (per coordinate, so
every episode keeps its own trajectory).

Weight decay applies to weights, not biases, as for the linear head; `bias: false` keeps every
bias at 0. The stop checks are those of the linear head (raw or full_norm loss: the product of
the layers' squared norms).

Example:
    >>> fit = fit_network(head, model, support, labels, 5, generator, average)   # HeadFit, model=model
"""
from __future__ import annotations

from typing import Any

import torch

from fewshot.heads.base import HeadFit
from fewshot.heads.common import linear_loss, log_sum_exp, one_hot, softmax
from fewshot.heads.mlp_model import MLPModel


def row_weights_of(head: Any, episodes: int, shots: int, generator: torch.Generator, device: torch.device,
                   dtype: torch.dtype, row_weights: torch.Tensor | None) -> torch.Tensor:
    """[E, S] this step's weight of each row's cross-entropy (mini-batch rows, `row_weights`)."""
    base = torch.full((shots,), 1 / shots, dtype=dtype, device=device) if row_weights is None else row_weights.to(dtype)
    weights = base.expand(episodes, shots)
    rows = head._batch_rows(episodes, shots, generator, device)
    if rows is None:
        return weights
    # Only the batch rows count, each at S / B times its weight: unbiased for the full loss.
    picked = torch.zeros(episodes, shots, dtype=dtype, device=device)
    return picked.scatter_(1, rows, weights.gather(1, rows) * shots / rows.shape[1])


def forward(pre: torch.Tensor, rest: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(pre-activations of every hidden layer, logits) from the first layer's pre-activations [E, S, H]
    and the later layers [E, fan_in + 1, fan_out]."""
    pres, hidden = [pre], pre
    for index, layer in enumerate(rest):
        hidden = torch.baddbmm(layer[:, -1:], hidden.relu(), layer[:, :-1])
        if index < len(rest) - 1:
            pres.append(hidden)
    return pres, hidden


def backward(pres: list[torch.Tensor], rest: list[torch.Tensor], d_logits: torch.Tensor
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(gradient at the first pre-activations [E, S, H], gradients of the later layers) of
    sum(d_logits * logits): the backward pass of `forward`."""
    grads: list[torch.Tensor] = []
    upstream = d_logits
    for index in range(len(rest) - 1, -1, -1):
        hidden = pres[index].relu()
        grads.append(torch.cat([hidden.transpose(1, 2) @ upstream, upstream.sum(1, keepdim=True)], 1))
        upstream = (upstream @ rest[index][:, :-1].transpose(1, 2)) * (pres[index] > 0)
    return upstream, grads[::-1]


def _bias_mask(layer: torch.Tensor) -> torch.Tensor:
    """1 on weight rows, 0 on the bias row of [E, fan_in + 1, fan_out] (weight decay skips biases)."""
    mask = torch.ones_like(layer[:1, :, :1])
    mask[:, -1] = 0
    return mask


def fit_network(head: Any, model: MLPModel, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                generator: torch.Generator, average: Any, row_weights: torch.Tensor | None = None) -> HeadFit:
    """One fit of the network heads of a batch from a fresh start (see the module doc).

    Args:
        head: the `SGDHead` (settings and hooks: `learning_rate`, `_batch_rows`, `_check`, `_stopped`).
        model: the network; support [E, S, D]; labels [E, S]; n_way: classes.
        generator: draws the start and the mini-batches.
        average: an `_IterateAverage` of the steps to average (the `swa` head).
        row_weights: [S] weights of the rows' losses (the `poisoned` head), None: the mean.
    """
    c = head.config
    episodes, shots, dim = support.shape
    params = model.draw_start(c.init, c.init_scale, episodes, dim, n_way, generator, support.device, support.dtype)
    layers = [layer.clone() for layer in model.layers(params, dim, n_way)]
    if not c.bias:
        for layer in layers:
            layer[:, -1] = 0
    run = _fit_dual if head.uses_dual_form else _fit_primal
    layers, steps = run(head, support, labels, n_way, generator, layers, average, row_weights)
    params = torch.cat([layer.flatten(1) for layer in layers], 1)
    logits = model.logits(params.unsqueeze(1), support).squeeze(1)
    return model.head_fit(params, dim, n_way, {"support_loss": linear_loss(logits, labels), "steps": steps.float()})


def _full_norm_sq(first_sq: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor:
    norm_sq = first_sq.double()
    for layer in rest:
        norm_sq = norm_sq * layer.double().square().sum((1, 2))
    return norm_sq


def _fit_dual(head: Any, support: torch.Tensor, labels: torch.Tensor, n_way: int, generator: torch.Generator,
              layers: list[torch.Tensor], average: Any, row_weights: torch.Tensor | None
              ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Momentum SGD with the first layer as W1 = X^T A + c W1_perp; returns (layers, steps [E])."""
    c = head.config
    episodes, shots, dim = support.shape
    gram = torch.bmm(support, support.transpose(1, 2))
    targets = one_hot(labels, n_way, support.dtype)
    wide = support.double()
    weight0, bias = layers[0][:, :dim], layers[0][:, dim].clone()
    coef = torch.linalg.pinv(gram.double(), hermitian=True) @ (wide @ weight0.double())
    outside = (weight0.double() - wide.transpose(1, 2) @ coef).to(support.dtype)
    outside_sq = outside.flatten(1).square().sum(1)
    coef, rest = coef.to(support.dtype), layers[1:]
    scale, scale_velocity = torch.ones_like(outside_sq), torch.zeros_like(outside_sq)
    coef_velocity, bias_velocity = torch.zeros_like(coef), torch.zeros_like(bias)
    velocities = [torch.zeros_like(layer) for layer in rest]
    decay = [_bias_mask(layer) * c.weight_decay for layer in rest]
    steps = torch.zeros(episodes, dtype=torch.long, device=support.device)
    running = torch.ones(episodes, dtype=torch.bool, device=support.device)
    for step in range(c.steps):
        pres, logits = forward(torch.baddbmm(bias.unsqueeze(1), gram, coef), rest)
        if head._check(step):
            first_sq = (coef * (gram @ coef)).sum((1, 2)) + scale.square() * outside_sq + bias.square().sum(1)
            running &= ~head._stopped(support, labels, logits, _full_norm_sq(first_sq, rest), None)
            if not bool(running.any()):
                break
        weights = row_weights_of(head, episodes, shots, generator, support.device, support.dtype, row_weights)
        d_pre, grads = backward(pres, rest, (softmax(logits) - targets) * weights.unsqueeze(2))
        rate = -head.learning_rate(step) * running.to(coef.dtype)
        # torch.optim.SGD: v = momentum * v + (grad + wd * p); p -= lr * v. In A: grad_W1 = X^T dP.
        coef_velocity.mul_(c.momentum).add_(d_pre).add_(coef, alpha=c.weight_decay)
        scale_velocity.mul_(c.momentum).add_(scale, alpha=c.weight_decay)
        coef.add_(coef_velocity * rate.view(-1, 1, 1))
        scale.add_(scale_velocity * rate)
        if c.bias:
            bias_velocity.mul_(c.momentum).add_(d_pre.sum(1))
            bias.add_(bias_velocity * rate.view(-1, 1))
        for layer, velocity, grad, rule in zip(rest, velocities, grads, decay):
            if not c.bias:
                grad[:, -1] = 0
            velocity.mul_(c.momentum).add_(grad).add_(layer * rule)
            layer.add_(velocity * rate.view(-1, 1, 1))
        steps += running.long()
        average.add(step + 1, coef, bias, scale, *rest)
    # W1 is linear in (A, c): averaging them averages the weights.
    coef, bias, scale, *rest = average.result(coef, bias, scale, *rest)
    weight = torch.bmm(support.transpose(1, 2), coef) + scale.view(-1, 1, 1) * outside
    return [torch.cat([weight, bias.unsqueeze(1)], 1), *rest], steps


def _fit_primal(head: Any, support: torch.Tensor, labels: torch.Tensor, n_way: int, generator: torch.Generator,
                layers: list[torch.Tensor], average: Any, row_weights: torch.Tensor | None
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """torch.optim (SGD or Adam) on batched layers [E, ...] with autograd; returns (layers, steps [E])."""
    c = head.config
    episodes, shots, dim = support.shape
    weights = [layer[:, :-1].clone().requires_grad_(True) for layer in layers]
    biases = [layer[:, -1].clone().requires_grad_(c.bias) for layer in layers]
    groups = [{"params": weights, "weight_decay": c.weight_decay}]
    if c.bias:
        groups.append({"params": biases, "weight_decay": 0.0})
    optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=c.lr) if c.optimizer == "adam" else \
        torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)
    steps = torch.zeros(episodes, dtype=torch.long, device=support.device)
    running = torch.ones(episodes, dtype=torch.bool, device=support.device)

    def logits_of() -> torch.Tensor:
        hidden = support
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden.relu() if index else hidden, weight)
        return hidden

    for step in range(c.steps):
        for group in optimizer.param_groups:
            group["lr"] = head.learning_rate(step)
        if head._check(step):
            with torch.no_grad():
                norm_sq = torch.ones(episodes, dtype=torch.float64, device=support.device)
                for weight, bias in zip(weights, biases):
                    norm_sq = norm_sq * (weight.double().square().sum((1, 2)) + bias.double().square().sum(1))
                running &= ~head._stopped(support, labels, logits_of(), norm_sq, None)
            if not bool(running.any()):
                break
        kept = [p.detach().clone() for p in weights + biases]
        rows = row_weights_of(head, episodes, shots, generator, support.device, support.dtype, row_weights)
        optimizer.zero_grad(set_to_none=True)
        logits = logits_of()
        row_loss = log_sum_exp(logits).squeeze(-1) - logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        (row_loss * rows).sum().backward()
        optimizer.step()
        if not bool(running.all()):  # stopped episodes keep their point
            with torch.no_grad():
                for value, old in zip(weights + biases, kept):
                    value.copy_(torch.where(running.view(-1, *[1] * (value.dim() - 1)), value, old))
        steps += running.long()
        average.add(step + 1, *[p.detach() for p in weights + biases])
    parts = average.result(*[p.detach() for p in weights + biases])
    count = len(weights)
    return [torch.cat([w, b.unsqueeze(1)], 1) for w, b in zip(parts[:count], parts[count:])], steps
