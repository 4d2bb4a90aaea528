"""An example gradient-free head on the public episode loss: a (1+1)-ES with the one-fifth rule.

The tutorial on docs/blackbox.md walks through it. Installed, it is the head `one_plus_one_es`:

    heads: {sgd: {}, es: {head: one_plus_one_es, budget: 500, sigma: 0.05}}
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fewshot.heads import HeadFit, HeadOptimizer
from fewshot.heads.episode_loss import EpisodeLoss
from fewshot.heads.protocol import FitProtocol, fit_with_protocol, protocol_rules
from fewshot.heads.starts import draw_start


@dataclass
class Config(FitProtocol):
    """Args (and the fit protocol's: init, loss, band, check_every, on_failure, targets, ...):
        budget: loss evaluations per episode.
        sigma: the initial step size.
    """

    budget: int = 1000
    sigma: float = 0.1


class OnePlusOneES(HeadOptimizer):
    """Per episode: one Gaussian child of the parent; keep it if its loss is no worse; sigma
    grows after a success and shrinks after a failure, at rest at a 1/5 success rate."""

    Config = Config

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.budget >= 1, "budget", ">= 1"), (c.sigma > 0, "sigma", "> 0")] + protocol_rules(c)

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        # The protocol's restarts (on_failure: restart) and `fitted` stat come with fit_with_protocol.
        return fit_with_protocol(lambda x, y, g: self.search(x, y, n_way, g), support.float(), labels.long(),
                                 generator, self.config)

    def search(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, generator: torch.Generator) -> HeadFit:
        c, (episodes, _, dim) = self.config, support.shape
        size = (dim + 1) * n_way                                    # the linear layout: [W; b] flattened
        parent = draw_start(c.init, c.init_scale, (episodes, size), generator, support.device)
        loss = EpisodeLoss(support, labels, n_way, protocol=c, budget=c.budget, start=parent)
        parent_loss, sigma = loss.best_loss.clone(), torch.full((episodes,), c.sigma, device=support.device)
        damping = math.sqrt(size + 1)
        while bool(loss.active().any()):
            ids = loss.active().nonzero().squeeze(1)
            noise = torch.randn(len(ids), size, generator=generator, device=generator.device).to(support.device)
            child = parent[ids] + sigma[ids, None] * noise
            value = loss(child[:, None], ids)[:, 0]               # counts, stops and keeps the best
            success = value <= parent_loss[ids]
            parent[ids[success]], parent_loss[ids[success]] = child[success], value[success]
            sigma[ids] *= torch.exp((success.float() - 0.2) / damping)   # the one-fifth rule
        return loss.result({"final_sigma": sigma})
