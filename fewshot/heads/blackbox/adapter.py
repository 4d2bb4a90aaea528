"""The adapter interface of the `blackbox` head, its registry, and loading an optional library.

An adapter drives one library's optimizer on an `EpisodeLoss`: it asks the library for
candidates, calls the loss with them (a batch for all episodes still searching), tells the
library the values, and marks episodes whose optimizer stops on its own (`loss.end`). The loss
keeps the best head, counts evaluations and applies the fit protocol's stop; the adapter only
searches. Randomness comes from the per-episode seeds it is given, never from a global state.

Example:
    >>> @register_adapter("mylib")
    ... class MyAdapter(Adapter):
    ...     module, extra = "mylib", "mylib"
    ...     def optimizers(self): return ["es"]
    ...     def run(self, loss, starts, seeds, settings): ...
"""
from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, ClassVar, TypeVar

import torch

from episodes.errors import fail
from fewshot.heads.episode_loss import EpisodeLoss
from fewshot.heads.head_model import ModelSettings
from fewshot.heads.protocol import FitProtocol

_ADAPTERS: dict[str, type["Adapter"]] = {}
AdapterType = TypeVar("AdapterType", bound=type["Adapter"])


@dataclass
class BlackboxConfig(FitProtocol, ModelSettings):
    """Args (and those of `FitProtocol`: init, init_scale, loss, band, check_every, on_failure,
    max_restarts, targets; and of `ModelSettings`: model, width, depth):
        library: `cma`, `torch`, `evotorch` or `nevergrad` (an adapter registered with `register_adapter`).
        optimizer: the library's optimizer: cma `diagonal` or `full` CMA-ES; torch `sep_cma`
            (diagonal CMA-ES batched across episodes); evotorch `cem` or `pgpe`; nevergrad any
            name of `nevergrad.optimizers.registry` (e.g. `DiagonalCMA`).
        budget: loss evaluations per episode.
        population: candidates per generation; None: the library's default (cma, torch and
            evotorch 4 + 3 ln P for P parameters; nevergrad one candidate per ask).
        sigma: the initial step size (standard deviation of the search distribution).
        options: passed through to the library (cma options, evotorch's `cem` / `pgpe`
            keywords, nevergrad optimizer keywords; torch takes none).
        episodes_at_once: episodes searched in lockstep (one loss call per generation for all of
            them); 0: all of a batch, except full CMA-ES (one at a time: its covariance is P x P).
        loss_threshold: also require decision loss below this to stop; None: no threshold.
    """

    library: str = "cma"
    optimizer: str = "diagonal"
    budget: int = 1000
    population: int | None = None
    sigma: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)
    episodes_at_once: int = 0
    loss_threshold: float | None = None


class Adapter(ABC):
    """One library's optimizers on an `EpisodeLoss` (see the module doc)."""

    name: ClassVar[str] = ""
    module: ClassVar[str] = ""            # the importable module
    install: ClassVar[str] = ""           # how to install it, named in the error when it is missing

    def load(self) -> ModuleType:
        """The library's module; a missing library is a `UserError` naming what to install."""
        try:
            return importlib.import_module(self.module)
        except ImportError as error:
            raise fail(f"The blackbox head's library {self.name!r} is not installed ({error}).",
                       f"Install it with {self.install}, or pick another heads.blackbox.library.") from None

    @abstractmethod
    def optimizers(self) -> list[str]:
        """The valid `optimizer` names."""

    @abstractmethod
    def run(self, loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig) -> None:
        """Search every episode of `loss` from starts [E, P] (float64, CPU), episode e from seeds[e]."""


def register_adapter(name: str) -> Callable[[AdapterType], AdapterType]:
    """Class decorator that registers an `Adapter` as the `blackbox` library `name`."""
    def add(cls: AdapterType) -> AdapterType:
        cls.name = name
        _ADAPTERS[name] = cls
        return cls
    return add


def available_libraries() -> list[str]:
    """Names of the registered adapters."""
    return sorted(_ADAPTERS)


def get_adapter(name: str) -> Adapter:
    """An instance of the adapter `name` (unknown: `UserError` listing the known ones)."""
    if name not in _ADAPTERS:
        raise fail(f"Unknown blackbox library {name!r}.", f"Set heads.blackbox.library to one of "
                   f"{', '.join(available_libraries())}.")
    return _ADAPTERS[name]()


def default_population(n_params: int) -> int:
    """CMA-ES's default population 4 + floor(3 ln P), also used for evotorch."""
    return 4 + int(3 * math.log(n_params))


def lockstep_groups(count: int, size: int) -> list[range]:
    """Episodes 0..count-1 in consecutive groups of `size` (0: one group)."""
    size = size or count
    return [range(start, min(start + size, count)) for start in range(0, count, max(size, 1))]
