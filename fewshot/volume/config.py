"""The `volume` section of a run config: the volume analysis and its prior."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.nngp import NNGPSettings, nngp_kernel
from fewshot.volume.splitting import SplittingSettings
from fewshot.volume.weight_space import NetworkPrior

__all__ = ["VolumeConfig"]


@dataclass
class VolumeConfig(SplittingSettings):
    """The `volume` section: the volume analysis of guess & check in logit space.

    Args:
        enabled: run the volume analysis after the heads (`fewshot benchmark` / `evaluate`).
        prior: `gaussian` (W ~ N(0, scale^2), b ~ N(0, bias_scale^2)) or `uniform` on
            [-scale, scale] (bias on [-bias_scale, bias_scale]), run as the Gaussian with the same
            variance, scale^2 / 3: a CLT approximation, so labelled in the results; or `nngp`, the
            logit prior of an infinitely wide ReLU network head (`fewshot.volume.nngp`, settings
            in `nngp`; scale and bias_scale are then unused).
        scale: prior std (gaussian) or half-width (uniform) of the weights.
        bias_scale: the same for the bias; 0 = no bias.
        episodes: analyse the first this many episodes of each setting; 0 = all.
        poisoned: also estimate log10_volume_good / log10_volume_poisoned (the costly part).
        poisoned_episodes: those two on the first this many analysed episodes only; 0 = all.
        quantiles: quantiles reported of each episode's volume-weighted accuracy distribution.
        nngp: `fewshot.volume.nngp.NNGPSettings` (depth, s1, b1, s2, b2) of `prior: nngp`.
        matched_loss: `none`, `span_norm` or `full_norm`: for each head and episode also the region
            "fits AND normalized loss <= the head's own" (guess & check at the head's loss; the run's
            `fewshot.run.volume_matched`). One splitting run per head and episode: the costly part.
            `full_norm` (the norm of [W; b]) needs a bias in the prior (bias_scale > 0).
        matched_episodes: the matched comparison on the first this many analysed episodes; 0 = all.
        model: `linear` (the logit-space lab under `prior`), or `mlp`: a one-hidden-layer ReLU head of
            width `width` under the Gaussian weight prior with the variances of `nngp` (needs
            `prior: nngp` and `nngp.depth: 1`), sampled in weight space (`fewshot.volume.weight_space`).
        width: hidden units of the `mlp` model (>= 1).

    The multilevel splitting settings (`chains`, `repeats`, `level_fraction`, `sweeps`, `burn_in`,
    `max_levels`, `block_size`) are those of `fewshot.volume.SplittingSettings`; the error bars
    come from the repeats.
    """

    enabled: bool = False
    prior: Literal["gaussian", "uniform", "nngp"] = "gaussian"
    scale: float = 1.0
    bias_scale: float = 1.0
    episodes: int = 0
    poisoned: bool = True
    poisoned_episodes: int = 0
    quantiles: list[float] = field(default_factory=lambda: [0.05, 0.25, 0.5, 0.75, 0.95])
    nngp: NNGPSettings = field(default_factory=NNGPSettings)
    matched_loss: Literal["none", "span_norm", "full_norm"] = "none"
    matched_episodes: int = 0
    model: Literal["linear", "mlp"] = "linear"
    width: int = 64

    def check(self, where: str = "volume") -> None:
        """Fail with a message naming `where.key` on a bad setting."""
        super().check(where)
        self.nngp.check(f"{where}.nngp")
        rules = [(self.scale > 0, "scale", "> 0"), (self.bias_scale >= 0, "bias_scale", ">= 0"),
                 (self.episodes >= 0, "episodes", ">= 0 (0 = all)"),
                 (self.poisoned_episodes >= 0, "poisoned_episodes", ">= 0 (0 = all)"),
                 (self.matched_episodes >= 0, "matched_episodes", ">= 0 (0 = all)"),
                 # The matched loss is a linear head's: no weights stand behind the NNGP prior.
                 (self.matched_loss == "none" or self.prior != "nngp", "matched_loss",
                  "none with prior: nngp (or use prior: gaussian)"),
                 # As the guess_check head's `bias` rule with `loss: full_norm`: the norm of [W; b].
                 (self.matched_loss != "full_norm" or self.bias_scale > 0, "matched_loss",
                  "span_norm with bias_scale 0 (or set bias_scale > 0: full_norm is the norm of [W; b])"),
                 (all(0 <= q <= 1 for q in self.quantiles), "quantiles", "a list of numbers in [0, 1]"),
                 (self.width >= 1, "width", ">= 1 (hidden units of model: mlp)"),
                 # The finite-width head's four variances are the NNGP prior's: the two compare directly.
                 (self.model == "linear" or self.prior == "nngp", "prior",
                  "nngp with model: mlp (its variances s1, b1, s2, b2 are the weights' prior)"),
                 (self.model == "linear" or self.matched_loss == "none", "matched_loss",
                  "none with model: mlp (the matched loss is a linear head's)")]
        for ok, key, rule in rules:
            if not ok:
                raise fail(f"{where}.{key} is {getattr(self, key)!r}, but must be {rule}.",
                           f"Set {where}.{key} to {rule}.")
        if self.model == "mlp" and self.nngp.depth != 1:
            raise fail(f"{where}.nngp.depth is {self.nngp.depth!r}, but {where}.model: mlp samples one hidden layer "
                       "in weight space (depth 1) only.",
                       f"Set {where}.nngp.depth to 1, or use {where}.model: linear with prior: nngp for depth 2 "
                       "(the infinite-width limit).")

    def gaussian_scales(self) -> tuple[float, float]:
        """(s, s_b) of the Gaussian prior used; a uniform prior's half-widths / sqrt(3) (CLT)."""
        factor = 1.0 if self.prior == "gaussian" else 1 / math.sqrt(3)
        return self.scale * factor, self.bias_scale * factor

    def logit_prior(self, features: torch.Tensor) -> LogitPrior:
        """The logit prior over features [E, P, D]: the linear head's Gaussian, or the NNGP kernel's."""
        if self.prior == "nngp":
            return LogitPrior.from_kernel(nngp_kernel(features, self.nngp))
        s, s_b = self.gaussian_scales()
        return LogitPrior.from_features(features, scale=s, bias_scale=s_b)

    def network_prior(self, features: torch.Tensor) -> NetworkPrior:
        """The weight prior of the `mlp` model over features [E, P, D] (`fewshot.volume.weight_space`)."""
        return NetworkPrior.relu(features, width=self.width, nngp=self.nngp)

    def splitting(self) -> SplittingSettings:
        """The multilevel-splitting part of the settings."""
        return SplittingSettings(self.chains, self.repeats, self.level_fraction, self.sweeps, self.burn_in,
                                 self.max_levels, self.block_size)
