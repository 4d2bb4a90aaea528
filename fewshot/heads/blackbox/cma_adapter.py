"""The `cma` library (pycma, a dependency): diagonal and full CMA-ES, one search per episode.

Each episode gets its own `cma.CMAEvolutionStrategy` (ask / tell); the episodes of a lockstep
group (`episodes_at_once`) ask together, so one loss call evaluates every population of the
group. pycma's `seed` option reseeds numpy's *global* generator, so an unrelated `np.random`
call would change the search: the adapter passes `seed = nan` (no reseeding) and its own
`randn` drawing from the episode's `numpy.random.Generator`, which makes runs bit-identical.
`CMA_diagonal=True` is the diagonal variant (sep-CMA-ES: O(P) per sample); `full` keeps the
P x P covariance (about 860 MB and 1.5 s per generation at P = 3,205), so it searches one
episode at a time unless `episodes_at_once` says otherwise. An episode ends when pycma's own
stop criteria fire (`es.stop()`, e.g. tolfun) before the budget or the protocol's stop.
"""
from __future__ import annotations

import numpy as np
import torch

from fewshot.heads.blackbox.adapter import Adapter, BlackboxConfig, lockstep_groups, register_adapter
from fewshot.heads.episode_loss import EpisodeLoss

_QUIET = {"verbose": -9, "verb_log": 0, "verb_disp": 0, "verb_filenameprefix": ""}


@register_adapter("cma")
class CmaAdapter(Adapter):
    """pycma's CMA-ES: `diagonal` or `full`."""

    module = "cma"
    install = "pip install cma==4.5.0 (a dependency of fewshot: reinstall fewshot)"

    def optimizers(self) -> list[str]:
        return ["diagonal", "full"]

    def run(self, loss: EpisodeLoss, starts: torch.Tensor, seeds: list[int], settings: BlackboxConfig) -> None:
        cma = self.load()
        at_once = settings.episodes_at_once or (1 if settings.optimizer == "full" else 0)
        for group in lockstep_groups(len(seeds), at_once):
            searches = {}
            for episode in group:
                rng = np.random.default_rng(seeds[episode])
                options = {**_QUIET, "seed": np.nan, "randn": lambda *shape, rng=rng: rng.standard_normal(shape),
                           "CMA_diagonal": settings.optimizer == "diagonal", **settings.options}
                if settings.population is not None:
                    options["popsize"] = settings.population
                searches[episode] = cma.CMAEvolutionStrategy(starts[episode].numpy(), settings.sigma, options)
            self._generations(loss, searches)

    @staticmethod
    def _generations(loss: EpisodeLoss, searches: dict) -> None:
        """Ask / evaluate / tell until every episode of the group stopped, ended or ran out."""
        device, dtype = loss.support.device, loss.support.dtype
        while True:
            active = loss.active()
            running = [e for e in searches if bool(active[e])]
            if not running:
                return
            asked = {e: searches[e].ask() for e in running}
            sizes = {len(points) for points in asked.values()}
            ids = torch.tensor(running, device=device)
            if len(sizes) == 1:
                batch = torch.from_numpy(np.stack([np.stack(asked[e]) for e in running])).to(device, dtype)
                values = {e: row for e, row in zip(running, loss(batch, ids).cpu().numpy())}
            else:  # populations differ (a library option changed one): one loss call per episode
                values = {e: loss(torch.from_numpy(np.stack(asked[e])).to(device, dtype)[None], ids[i:i + 1])[0]
                          .cpu().numpy() for i, e in enumerate(running)}
            active = loss.active()
            for e in running:
                if bool(active[e]):  # a finished episode's last values (+inf past its budget) are not told
                    searches[e].tell(asked[e], values[e].tolist())
                    if searches[e].stop():
                        loss.end(torch.tensor([e], device=device))
