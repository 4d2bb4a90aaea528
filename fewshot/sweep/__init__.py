"""Sweeps: a grid of config overrides run as cells, resumable, on this machine or a cluster."""
from fewshot.sweep.grid import Cell, Grid, load_grid
from fewshot.sweep.runner import SweepOutcome, collect, run_sweep

__all__ = ["Cell", "Grid", "SweepOutcome", "collect", "load_grid", "run_sweep"]
