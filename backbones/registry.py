"""Backbones registered by name, built from their config as keyword arguments.

Example:
    >>> model = get_backbone("resnet12", width=0.5)
    >>> model(torch.zeros(2, 3, 32, 32)).shape          # [2, model.feature_dim]
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from torch import nn

from episodes.errors import fail

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


def register_backbone(name: str) -> Callable[[Factory], Factory]:
    """Decorator that registers a backbone class (or factory) under `name`.

    The module it builds must have an integer attribute `feature_dim` and map images
    [B, 3, H, W] to features [B, feature_dim].
    """
    def add(factory: Factory) -> Factory:
        if name in _BACKBONES and _BACKBONES[name] is not factory:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = factory
        return factory
    return add


def available_backbones() -> list[str]:
    """Names of the registered backbones."""
    return sorted(_BACKBONES)


def get_backbone(name: str, **config: Any) -> nn.Module:
    """Build the backbone `name` with keyword settings (e.g. `width=0.5, dropblock=0.1`).

    Args:
        name: a registered backbone, see `available_backbones()`.
        **config: the backbone's settings; unknown ones are an error naming the valid ones.
    """
    if name not in _BACKBONES:
        raise fail(f"Unknown backbone {name!r}.", f"Known backbones: {', '.join(sorted(_BACKBONES))}.")
    factory = _BACKBONES[name]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise fail(f"Backbone {name!r} has no setting {unknown[0]!r}.",
                   f"Its settings are: {', '.join(accepted) or '(none)'}.")
    return factory(**config)
