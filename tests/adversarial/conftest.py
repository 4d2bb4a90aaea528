"""The fixtures of tests/fewshot (a tiny image folder, its configs, an untrained checkpoint), shared here."""
from tests.fewshot.conftest import fast_config, tiny_checkpoint, tiny_dataset  # noqa: F401  (pytest fixtures)
