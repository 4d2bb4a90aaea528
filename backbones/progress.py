"""The pretraining progress bar: loss, accuracy, images/s and time left (rich)."""
from __future__ import annotations

import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainingProgress:
    """A bar over all steps of a run, and one printed line per epoch. Silent on a quiet console.

    Args:
        console: where it draws (`Console(quiet=True)` silences it).
        total_steps: steps of the whole run.
        done_steps: steps already done (when resuming).
        images_per_step: global batch size, for images/s.
    """

    def __init__(self, console: Console, total_steps: int, done_steps: int, images_per_step: int):
        self.console = console
        self.images_per_step = images_per_step
        self.first_step = done_steps
        self.started = time.perf_counter()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                            console=console, disable=console.quiet)
        self.task = self.bar.add_task("pretrain", total=total_steps, completed=done_steps, stats="")

    def __enter__(self) -> "TrainingProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bar.stop()

    def images_per_second(self, step: int) -> float:
        return (step - self.first_step) * self.images_per_step / max(time.perf_counter() - self.started, 1e-9)

    def update(self, step: int, epoch: int, sums: torch.Tensor) -> None:
        """Move the bar to `step`; sums = this epoch's (summed loss, correct, images) on this rank."""
        if self.console.quiet:
            return
        loss, correct, images = sums.tolist()
        stats = (f"epoch {epoch + 1}  loss {loss / max(images, 1):.3f}  acc {100 * correct / max(images, 1):.1f}%  "
                 f"{self.images_per_second(step):.0f} img/s")
        self.bar.update(self.task, completed=step, stats=stats)

    def epoch_done(self, record: dict[str, Any], epochs: int, *, best: bool) -> None:
        """Print the epoch's line: training loss and accuracy, validation accuracy."""
        val = record["val_accuracy"]
        val_text = "" if val is None else f"  val acc {100 * val:.2f}%" + (" (best)" if best else "")
        self.bar.console.print(f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
                               f"train acc {100 * record['accuracy']:.2f}%{val_text}")
