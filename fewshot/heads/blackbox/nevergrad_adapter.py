"""The `nevergrad` library (extra `[nevergrad]`): any optimizer of its registry, one per episode.

Each episode gets `nevergrad.optimizers.registry[optimizer]` on an `Array` parametrization
initialised at its start with mutation scale `sigma`, and a budget of `budget` evaluations.
Nevergrad asks one candidate at a time; the adapter asks `population` candidates per episode
(default 1, nevergrad's `num_workers`) and evaluates every episode's asks in one loss call.
Reproducible only with `parametrization.random_state` set before the first ask: it is a
`numpy.random.RandomState` seeded from the episode's seed.
"""
from __future__ import annotations

import numpy as np
import torch

from fewshot.heads.blackbox.adapter import Adapter, BlackboxConfig, lockstep_groups, register_adapter
from fewshot.heads.episode_loss import EpisodeLoss


@register_adapter("nevergrad")
class NevergradAdapter(Adapter):
    """Nevergrad's optimizers by registry name (`DiagonalCMA`, `TBPSA`, `OnePlusOne`, ...)."""

    module = "nevergrad"
    install = "pip install 'fewshot[nevergrad]'"

    def optimizers(self) -> list[str]:
        return sorted(self.load().optimizers.registry)

    def run(self, loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig) -> None:
        ng = self.load()
        workers = settings.population or 1
        device, dtype = loss.support.device, loss.support.dtype
        for group in lockstep_groups(len(seeds), settings.episodes_at_once):
            searches = {}
            for episode in group:
                space = ng.p.Array(init=starts[episode].numpy()).set_mutation(sigma=settings.sigma)
                space.random_state = np.random.RandomState(seeds[episode] % 2 ** 32)
                searches[episode] = ng.optimizers.registry[settings.optimizer](
                    parametrization=space, budget=settings.budget, num_workers=workers, **settings.options)
            while True:
                active = loss.active()
                running = [e for e in searches if bool(active[e])]
                if not running:
                    break
                asked = {e: [searches[e].ask() for _ in range(workers)] for e in running}
                batch = np.stack([np.stack([c.value for c in asked[e]]) for e in running])
                values = loss(torch.from_numpy(batch).to(device, dtype), torch.tensor(running, device=device))
                active = loss.active()
                for e, row in zip(running, values.cpu().tolist()):
                    if bool(active[e]):
                        for candidate, value in zip(asked[e], row):
                            searches[e].tell(candidate, value)
