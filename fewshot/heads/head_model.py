"""Head models: how a flat parameter vector becomes logits, a norm and a `HeadFit`.

A searching head that treats the head as a black box (`fewshot.heads.episode_loss`, the
`blackbox` head) sees only flat parameter vectors; the model says what they mean:

    n_params(dim, n_way)                     the length P of one head's vector
    logits(params [E, K, P], features [E, M, D]) -> [E, K, M, N]   K candidates per episode
    full_norm_sq(params [E, K, P], dim) -> [E, K]  the `full_norm` loss's squared normalizer
    head_fit(params [E, P], dim, n_way, stats) -> HeadFit
    predict(fit, features [E, M, D]) -> [E, M, N]

`LinearModel` lays a head out as the weight rows then the bias row:
params.view(D + 1, N), parameter p = d * N + n, row D the bias (the layout of pattern search's
`params` too). Its `HeadFit` is the plain (weight [E, D, N], bias [E, N]) every head returns,
so plug-ins and the evaluator see nothing new.

A network head (`fewshot.heads.mlp_model.MLPModel`, `model: mlp`) implements the same five methods:
its `n_params` counts both layers, `logits` runs the forward pass for all candidates at once,
`full_norm_sq` is its normalizer (the seed divides an MLP's logits by a product of layer
norms), and `head_fit` / `predict` store and apply its parameters (`HeadFit.model`, `HeadFit.params`:
`HeadOptimizer.predict` then goes through the model). The episode loss and the
adapters then work unchanged. The span norm (`span_norm`) is defined for linear heads only
(`supports_span_norm`), since it projects a linear head onto the span of the support features.

Example:
    >>> model = LinearModel()
    >>> params = torch.zeros(E, K, model.n_params(D, N))
    >>> model.logits(params, support)          # [E, K, S, N]
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, TypeVar

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, Predictor
from fewshot.heads.common import linear_logits, with_bias_column
from fewshot.heads.starts import draw_start

MAX_DEPTH = 2  # hidden layers a network head may have


@dataclass
class ModelSettings:
    """Args (the head model of a searching head, `sgd`, `pattern_search`, `greedy_random`, `blackbox`):
        model: `linear` (logits = x W + b) or `mlp` (ReLU hidden layers, then a linear read-out).
        width: hidden units per layer of `mlp`.
        depth: hidden layers of `mlp` (1 or 2).
    """

    model: Literal["linear", "mlp"] = "linear"
    width: int = 64
    depth: int = 1


def model_rules(c: Any) -> list[tuple[bool, str, str]]:
    """Setting rules of `ModelSettings` fields (and the losses and starts a network cannot take)."""
    network = c.model != "linear"
    return [(c.width >= 1, "width", ">= 1"), (1 <= c.depth <= MAX_DEPTH, "depth", f"1 or {MAX_DEPTH} (hidden layers)"),
            (not (network and c.loss == "span_norm"), "loss",
             "raw or full_norm with model: mlp (span_norm projects a linear head onto the support span)"),
            (not (network and c.init == "zero"), "init",
             "uniform or gaussian with model: mlp (a zero network is a saddle: no gradient or single move "
             "reaches its hidden units)")]


def model_of(c: Any) -> "HeadModel":
    """The head model named by a config with `ModelSettings` fields."""
    return head_model(c.model, width=c.width, depth=c.depth)


class HeadModel(Predictor):
    """What a flat head parameter vector means (see the module doc)."""

    name: ClassVar[str] = ""
    supports_span_norm: ClassVar[bool] = False

    def __init__(self, **settings: Any):
        """Models without settings ignore the network ones (`width`, `depth`)."""

    def draw_start(self, kind: str, scale: float, episodes: int, dim: int, n_way: int, generator: torch.Generator,
                   device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Starting parameters [E, P] (`fewshot.heads.starts`); a network scales each layer (see its doc)."""
        return draw_start(kind, scale, (episodes, self.n_params(dim, n_way)), generator, device, dtype)

    @abstractmethod
    def n_params(self, dim: int, n_way: int) -> int:
        """Parameters of one head on `dim` features and `n_way` classes."""

    @abstractmethod
    def logits(self, params: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits [E, K, M, N] of K candidate heads [E, K, P] on features [E, M, D]."""

    @abstractmethod
    def full_norm_sq(self, params: torch.Tensor, dim: int) -> torch.Tensor:
        """The squared normalizer [E, K] of the `full_norm` loss of params [E, K, P] on `dim` features."""

    @abstractmethod
    def head_fit(self, params: torch.Tensor, dim: int, n_way: int,
                 stats: dict[str, torch.Tensor]) -> HeadFit:
        """The fitted heads of params [E, P], with `stats` attached."""

    @abstractmethod
    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        """Logits [E, M, N] of features [E, M, D] under fitted heads."""


_MODELS: dict[str, type[HeadModel]] = {}
ModelType = TypeVar("ModelType", bound=type[HeadModel])


def register_model(name: str) -> Callable[[ModelType], ModelType]:
    """Class decorator that registers a `HeadModel` under `name` (a head's `model` setting)."""
    def add(cls: ModelType) -> ModelType:
        cls.name = name
        _MODELS[name] = cls
        return cls
    return add


def head_model(name: str, **settings: Any) -> HeadModel:
    """An instance of the model registered as `name` with its settings (e.g. width, depth)."""
    if name not in _MODELS:
        raise fail(f"Unknown head model {name!r}.", f"Set the head's model to one of {', '.join(sorted(_MODELS))}.")
    return _MODELS[name](**settings)


@register_model("linear")
class LinearModel(HeadModel):
    """logits = features @ W + b; params = [W; b] flattened row-major, [(D + 1) * N]."""

    supports_span_norm = True

    def n_params(self, dim: int, n_way: int) -> int:
        return (dim + 1) * n_way

    def logits(self, params: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        episodes, candidates, size = params.shape
        rows = features.shape[2] + 1
        n_way = size // rows
        # All candidates in one bmm, heads on the left: [E, K * N, D + 1] @ [E, D + 1, M]; the
        # [E, D + 1, K * N] layout on the right took 3.8 ms against 2.7 (E = 100, K = 10, D = 320,
        # one thread). The result is a [..., M, N] view.
        rows_left = params.view(episodes, candidates, rows, n_way).transpose(2, 3).reshape(episodes, -1, rows)
        out = torch.bmm(rows_left, with_bias_column(features.to(params.dtype)).transpose(1, 2))
        return out.view(episodes, candidates, n_way, -1).transpose(2, 3)

    def full_norm_sq(self, params: torch.Tensor, dim: int) -> torch.Tensor:
        return params.double().square().sum(-1)

    def head_fit(self, params: torch.Tensor, dim: int, n_way: int,
                 stats: dict[str, torch.Tensor]) -> HeadFit:
        grid = params.view(params.shape[0], dim + 1, n_way)
        return HeadFit(grid[:, :dim].contiguous(), grid[:, dim].contiguous(), stats=stats)

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        return linear_logits(features, fit.weight, fit.bias)
