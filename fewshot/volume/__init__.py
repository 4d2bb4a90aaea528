"""The volume lab: guess & check made exact in logit space, and volumes of fitting regions.

Modules: `gaussian` (the logit prior, whitened), `lin_ess` (linearly constrained elliptical
slice sampling), `splitting` (multilevel splitting for log P(polyhedron)), `exact_head`
(`guess_check` with `method: exact`), `analysis` (the per-episode volume analysis of a run),
`report` (its leaderboard table and plot). See DESIGN.md, "Guess & check, exactly, in logit space".
"""
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.lin_ess import Constraints, feasible_arc_sample, lin_ess_class_step, lin_ess_step
from fewshot.volume.splitting import SplitResult, SplittingSettings, split_volume
from fewshot.volume.streams import Streams, stream_seed

__all__ = ["LogitPrior", "Constraints", "feasible_arc_sample", "lin_ess_step", "lin_ess_class_step", "SplitResult",
           "SplittingSettings", "split_volume", "Streams", "stream_seed"]
