"""The `evotorch` library (extra `[evotorch]`): its functional `cem` and `pgpe`, batched across episodes.

evotorch's functional API keeps a batch of search distributions, one center per episode
([A, P]), and `cem_ask` / `pgpe_ask` draw every episode's population in one call ([A, K, P]):
the only library here that searches all episodes at once, so a generation is one draw, one
loss call and one update for the whole lockstep group. It draws from torch's *global*
generator; the adapter runs each group inside `torch.random.fork_rng`, seeded from the
group's first episode seed, so nothing outside changes the search and the search changes
nothing outside. The draw covers the group, so an episode's head depends on its group
(`episodes_at_once`; the evaluator's chunks fix the groups).

Settings: `sigma` is `stdev_init`; `population` the popsize (default 4 + 3 ln P, rounded up to
even for pgpe's symmetric sampling); `options` go to `cem` (default parenthood_ratio 0.5) or
`pgpe` (default center_learning_rate = sigma, stdev_learning_rate 0.1, the clipup optimizer).
Episodes that stopped keep being drawn for (a batched state has fixed rows) but are neither
evaluated into their result nor counted.
"""
from __future__ import annotations

import torch

from fewshot.heads.blackbox.adapter import (Adapter, BlackboxConfig, default_population, lockstep_groups,
                                            register_adapter)
from fewshot.heads.episode_loss import EpisodeLoss


@register_adapter("evotorch")
class EvotorchAdapter(Adapter):
    """evotorch's functional CEM and PGPE, batched across the episodes of a group."""

    module = "evotorch.algorithms.functional"
    install = "pip install 'fewshot[evotorch]'"

    def optimizers(self) -> list[str]:
        return ["cem", "pgpe"]

    def run(self, loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig) -> None:
        functional = self.load()
        device, dtype = loss.support.device, loss.support.dtype
        popsize = settings.population or default_population(starts.shape[1])
        if settings.optimizer == "pgpe":
            popsize += popsize % 2
        for group in lockstep_groups(len(seeds), settings.episodes_at_once):
            ids = torch.tensor(list(group), device=device)
            centers = starts[group.start:group.stop].to(device, dtype)
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seeds[group.start])
                if settings.optimizer == "cem":
                    options = {"parenthood_ratio": 0.5, **settings.options}
                    state = functional.cem(center_init=centers, objective_sense="min", stdev_init=settings.sigma,
                                           **options)
                    ask, tell = functional.cem_ask, functional.cem_tell
                else:
                    options = {"center_learning_rate": settings.sigma, "stdev_learning_rate": 0.1, **settings.options}
                    state = functional.pgpe(center_init=centers, objective_sense="min", stdev_init=settings.sigma,
                                            **options)
                    ask, tell = functional.pgpe_ask, functional.pgpe_tell
                while bool(loss.active()[ids].any()):
                    population = ask(state, popsize=popsize)                                   # [A, K, P]
                    values = loss(population, ids)
                    # Rows that stopped get +inf; the update needs finite values, and ignores them anyway.
                    finite = torch.where(torch.isfinite(values), values, torch.finfo(torch.float64).max / 4)
                    state = tell(state, population, finite.to(population.dtype))
