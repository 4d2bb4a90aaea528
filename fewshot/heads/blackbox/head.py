"""The `blackbox` head: any black-box optimizer library searches the head, on the public loss.

Per episode, from the configured start (`init`, default W = 0, b = 0), the library's optimizer
(`library`, `optimizer`) searches the flat head parameters (`fewshot.heads.head_model`) on the
decision loss of the fit protocol (`fewshot.heads.episode_loss.EpisodeLoss`): at most `budget`
evaluations, stopping at the protocol's stop (100% support accuracy, loss <= the band's upper
edge / below `loss_threshold`, checked every `check_every` generations), or when the library's
optimizer stops on its own. The head returned is the best head *evaluated* (or the one that
met the stop), never the search distribution's mean, which was never evaluated.

Randomness: one seed per episode is drawn from `fit`'s generator, in episode order; cma,
torch and nevergrad search each episode from its own seed only, so an episode's head depends
neither on the other episodes in the batch nor on `episodes_at_once`. evotorch searches a
whole lockstep group with one batched draw, so its heads depend on the group's episodes (the
evaluator's chunks fix them, so runs still reproduce bit for bit).

Example:
    >>> head = get_head("blackbox", library="cma", optimizer="diagonal", budget=500)
    >>> fit = head.fit(support, labels, n_way=5, generator=torch.Generator().manual_seed(0))
    >>> fit.stats["evaluations"], fit.stats["runtimes"]
"""
from __future__ import annotations

import difflib
from typing import Any

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.blackbox.adapter import BlackboxConfig, available_libraries, get_adapter
from fewshot.heads.common import validate_inputs
from fewshot.heads.episode_loss import EpisodeLoss
from fewshot.heads.head_model import model_of, model_rules
from fewshot.heads.protocol import fit_with_protocol, protocol_rules

_SEED_RANGE = 2 ** 62


@register_head("blackbox")
class BlackboxHead(HeadOptimizer):
    """A black-box optimizer library on the support decision loss (see the module doc)."""

    Config = BlackboxConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        c = self.config
        self.model = model_of(c)  # what the flat candidates mean: `model: linear | mlp`
        self.adapter = get_adapter(c.library)
        self.adapter.load()
        valid = self.adapter.optimizers()
        if c.optimizer not in valid:
            close = difflib.get_close_matches(c.optimizer, valid, n=5)
            listed = ", ".join(valid) if len(valid) <= 12 else \
                f"{len(valid)} names, e.g. {', '.join(close or valid[:8])}"
            raise fail(f"heads.blackbox.optimizer is {c.optimizer!r}, which {c.library} does not have.",
                       f"Set it to one of {listed}.")

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.library in available_libraries(), "library", f"one of {', '.join(available_libraries())}"),
                (c.budget >= 1, "budget", ">= 1"),
                (c.population is None or c.population >= 2, "population", ">= 2 or null (the library's default)"),
                (c.sigma > 0, "sigma", "> 0"), (c.episodes_at_once >= 0, "episodes_at_once", ">= 0"),
                (isinstance(c.options, dict), "options", "a mapping"),
                (c.loss_threshold is None or c.loss_threshold > 0, "loss_threshold", "> 0 or null")] + protocol_rules(c) \
            + model_rules(c)

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        return fit_with_protocol(lambda x, y, g: self._fit_once(x, y, n_way, g), support.float(), labels.long(),
                                 generator, self.config, self.config.loss_threshold)

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        return self.model.predict(fit, features)

    def _fit_once(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator) -> HeadFit:
        c = self.config
        episodes, _, dim = support.shape
        # One draw per episode, in order: episode e's seed is the same in any batch that starts with it.
        seeds = [int(torch.randint(0, _SEED_RANGE, (1,), generator=generator, device=generator.device))
                 for _ in range(episodes)]
        size = self.model.n_params(dim, n_way)
        starts = torch.cat([self.model.draw_start(c.init, c.init_scale, 1, dim, n_way, torch.Generator().manual_seed(seed),
                                                  "cpu", torch.float64) for seed in seeds]) if episodes else \
            torch.zeros(0, size, dtype=torch.float64)
        loss = EpisodeLoss(support, labels, n_way, protocol=c, budget=c.budget, threshold=c.loss_threshold,
                           model=self.model, start=starts.to(support.device, support.dtype))
        self.adapter.run(loss, starts, seeds, c)
        return loss.result()
