"""The runtime profiles of the searching heads (`runtime.png`): COCO ECDF and Moré-Wild data profile.

One row of two panels per results file (episode setting): left the runtime ECDF over loss
evaluations (log axis; the fraction of (episode, target) pairs reached), right the data profile
over simplex gradients (evaluations / (P + 1)). The curves are the verified `runtime_profile`
statistics of the results file (`fewshot.results.runtimes`); heads without runtimes are left out.
"""
from __future__ import annotations

import io
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def has_runtimes(docs: Sequence[dict]) -> bool:
    """Whether any head of any document stores a runtime profile."""
    return any("runtime_profile" in head for doc in docs for head in doc["heads"])


def render_runtime(docs: Sequence[dict], dpi: int = 110) -> bytes:
    """The runtime profiles as PNG bytes (see the module doc)."""
    shown = [doc for doc in docs if any("runtime_profile" in head for head in doc["heads"])]
    figure = Figure(figsize=(11, 3.4 * max(len(shown), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    for row, doc in enumerate(shown):
        ecdf_axes = figure.add_subplot(len(shown), 2, 2 * row + 1)
        data_axes = figure.add_subplot(len(shown), 2, 2 * row + 2)
        setting = f"{doc['dataset']['name']}: {doc['episodes']['n_way']}-way {doc['episodes']['k_shot']}-shot"
        for head in doc["heads"]:
            profile = head.get("runtime_profile")
            if profile is None:
                continue
            ecdf, data = profile["ecdf"], profile["data_profile"]
            ecdf_axes.step(ecdf["evaluations"], ecdf["fraction"], where="post", label=head["name"])
            data_axes.step(data["simplex_gradients"], data["fraction"], where="post", label=head["name"])
        for axes, unit in ((ecdf_axes, "loss evaluations"), (data_axes, "simplex gradients: evaluations / (P + 1)")):
            axes.set_xscale("log")
            axes.set_ylim(-0.02, 1.02)
            axes.set_xlabel(unit, fontsize=8)
            axes.grid(alpha=0.3)
        ecdf_axes.set_ylabel("fraction of (episode, target) pairs", fontsize=8)
        ecdf_axes.set_title(f"{setting}: runtime ECDF (COCO)", fontsize=9)
        data_axes.set_title(f"{setting}: data profile (Moré-Wild)", fontsize=9)
        data_axes.legend(fontsize=7, loc="upper left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
