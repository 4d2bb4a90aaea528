"""The plug-in point: a head optimizer fits a linear head on a batch of episodes.

Example plug-in:
    >>> @register_head("my_head")
    ... class MyHead(HeadOptimizer):
    ...     @dataclass
    ...     class Config:
    ...         steps: int = 10
    ...     def fit(self, support, labels, n_way, *, generator):
    ...         ...
    ...         return HeadFit(weight, bias, stats={})
"""
from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar, TypeVar

import torch

from episodes.errors import fail
from fewshot.typed import build_dataclass

ENTRY_POINT_GROUP = "fewshot.heads"
_HEADS: dict[str, type["HeadOptimizer"]] = {}
_plugins_loaded = False
HeadType = TypeVar("HeadType", bound=type["HeadOptimizer"])


class Predictor(ABC):
    """How a non-linear fit turns features into logits (`HeadFit.model`; e.g. an MLP head model)."""

    @abstractmethod
    def predict(self, fit: "HeadFit", features: torch.Tensor) -> torch.Tensor:
        """Logits [E, M, N] of features [E, M, D] under the fitted heads."""


@dataclass
class HeadFit:
    """Fitted heads of a batch of episodes: linear, logits = features @ weight + bias, unless
    `model` is set (a network head), in which case `model.predict(fit, features)` gives the logits.

    Args:
        weight: [E, D, n_way] (a network head: its first layer's weight, [E, D, H]).
        bias: [E, n_way] (a network head: its first layer's bias, [E, H]).
        stats: per-episode statistics, each a tensor [E] (e.g. `steps`, `evaluations`), except
            `runtimes` [E, T] (evaluations to T loss targets, `fewshot.heads.runtimes`).
        model: None for a linear head (every plug-in that returns `HeadFit(weight, bias, stats)`);
            else what predicts (`fewshot.heads.head_model.HeadModel` or another `Predictor`).
        params: [E, P] the network's flat parameters (`model`'s layout), None for a linear head.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    model: Predictor | None = None
    params: torch.Tensor | None = None

    @property
    def is_linear(self) -> bool:
        """Whether logits = features @ weight + bias (no `model`)."""
        return self.model is None


@dataclass
class Queries:
    """The query set of a batch of episodes, given at fit time to oracle heads only.

    Args:
        features: [E, Q, D] query features.
        labels: [E, Q] query labels in [0, n_way).
    """

    features: torch.Tensor
    labels: torch.Tensor


class HeadOptimizer(ABC):
    """Base class of head optimizers. Subclass, define `Config` (a dataclass) and `fit`.

    Args:
        config: the head's settings; keyword arguments override single fields.
    """

    name: ClassVar[str] = ""
    # An oracle head sees the episode's queries at fit time (`fit(..., queries=Queries(...))`):
    # a reference point such as a deliberately bad minimum, never a method to rank.
    oracle: ClassVar[bool] = False

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        name = self.name or type(self).__name__
        for ok, key, rule in self.setting_rules():
            if not ok:
                raise fail(f"heads.{name}.{key} is {getattr(self.config, key)!r}, but must be {rule}.",
                           f"Set heads.{name}.{key} to a value {rule}.")

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        """Checks of `self.config` as (holds, field, rule in words such as "> 0"); none by default."""
        return []

    @abstractmethod
    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        """Fit one head per episode.

        Args:
            support: [E, S, D] support features.
            labels: [E, S] labels in [0, n_way).
            n_way: classes per episode.
            generator: the only source of randomness, so that fits are reproducible.

        Oracle heads (`oracle = True`) also take a keyword `queries: Queries`; the evaluator
        passes it to them only.
        """

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        """Logits [E, Q, n_way] of features [E, Q, D] under the fitted heads (a network fit: its model's)."""
        if fit.model is not None:
            return fit.model.predict(fit, features)
        return torch.baddbmm(fit.bias.unsqueeze(1), features, fit.weight)


def register_head(name: str) -> Callable[[HeadType], HeadType]:
    """Class decorator that registers a `HeadOptimizer` under `name`."""
    def add(cls: HeadType) -> HeadType:
        if name in _HEADS and _HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is registered twice")
        cls.name = name
        _HEADS[name] = cls
        return cls
    return add


def _load_heads() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as error:  # name the broken package rather than fail with its traceback
            raise fail(f"The head plug-in {entry.name!r} ({entry.value}) failed to import: {error}.",
                       "Fix or uninstall the package that provides it.") from error
        if isinstance(loaded, type) and issubclass(loaded, HeadOptimizer) and entry.name not in _HEADS:
            register_head(entry.name)(loaded)


def available_heads() -> list[str]:
    """Names of the registered heads, plug-ins included."""
    _load_heads()
    return sorted(_HEADS)


def head_class(name: str) -> type[HeadOptimizer]:
    """The class registered as `name`; an unknown name is an error listing the known ones."""
    _load_heads()
    if name not in _HEADS:
        near = difflib.get_close_matches(name, list(_HEADS), n=1)
        raise fail(f"Unknown head optimizer {name!r}" + (f" (did you mean {near[0]!r}?)." if near else "."),
                   f"Registered heads: {', '.join(sorted(_HEADS))}.")
    return _HEADS[name]


def get_head(name: str, **config: Any) -> HeadOptimizer:
    """An instance of the head `name` with config fields set from keyword arguments."""
    cls = head_class(name)
    return cls(build_dataclass(cls.Config, config, f"heads.{name}"))
