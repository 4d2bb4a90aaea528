"""The `swa` head: stochastic weight averaging of the `sgd` head's iterates.

Seed 002 (asymmetric valleys): averaging SGD iterates biases the solution toward the flat side
of asymmetric valleys. The head runs the `sgd` head's loop (Gram form when exact) with a constant
or cyclic learning rate and returns the mean of the iterates from `average_start` on: every
iterate for the constant rate, the end of each cycle (the lowest rate) for the cyclic one, as
Izmailov et al. (2018) do. W is linear in the Gram coefficients, so averaging them averages W.

Example:
    >>> head = get_head("swa", schedule="cyclic", cycle=20, average_start=100)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fewshot.heads.base import register_head
from fewshot.heads.sgd import SGDHead


@register_head("swa")
class SWAHead(SGDHead):
    """SGD with a constant or cyclic learning rate; the head is the mean of the late iterates."""

    @dataclass
    class Config(SGDHead.Config):
        """The `sgd` settings (`lr` is the constant rate, or the cycle's highest), and

        Args:
            steps: optimizer steps per episode.
            schedule: `constant`, or `cyclic`: within each cycle of `cycle` steps the rate falls
                linearly from `lr` to `lr_min` (step i, 1-based: t = ((i - 1) mod cycle + 1) / cycle,
                rate (1 - t) lr + t lr_min).
            lr_min: the lowest rate of a cycle.
            cycle: steps per cycle.
            average_start: the first 1-based step whose iterate is averaged (for `cyclic`, the
                first cycle end at or after it).
        """

        steps: int = 200
        schedule: Literal["constant", "cyclic"] = "cyclic"
        lr_min: float = 0.05
        cycle: int = 20
        average_start: int = 100

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        last_cycle_end = c.steps // c.cycle * c.cycle if c.cycle >= 1 else 0
        return super().setting_rules() + [
            (c.lr_min > 0, "lr_min", "> 0"), (c.cycle >= 1, "cycle", ">= 1"),
            (1 <= c.average_start <= c.steps, "average_start", f"in [1, steps={c.steps}]"),
            (c.schedule == "constant" or c.average_start <= last_cycle_end, "average_start",
             f"at most the last cycle end ({last_cycle_end}) with the cyclic schedule")]

    def learning_rate(self, step: int) -> float:
        c = self.config
        if c.schedule == "constant":
            return c.lr
        t = (step % c.cycle + 1) / c.cycle     # step is 0-based: (i - 1) mod cycle with i = step + 1
        return (1 - t) * c.lr + t * c.lr_min

    def averaged_steps(self) -> list[int]:
        c = self.config
        every = 1 if c.schedule == "constant" else c.cycle
        return [i for i in range(c.average_start, c.steps + 1) if i % every == 0]
