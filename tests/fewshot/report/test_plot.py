"""The accuracy plot: a real PNG or SVG, written atomically, without touching pyplot's backend."""
import matplotlib
import pytest
import torch

from episodes.errors import UserError
from fewshot.report.plot import plot_accuracy
from fewshot.results.document import HeadResult, build_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_doc(k_shot: int, run: str, offset: float = 0.0, fingerprint: str | None = None) -> dict:
    generator = torch.Generator().manual_seed(k_shot)
    heads = [HeadResult(name, {}, (torch.rand(30, generator=generator) * 0.2 + base + offset).clamp(0, 1), 0.1)
             for name, base in (("sgd", 0.7), ("pattern_search", 0.65), ("prototype", 0.6))]
    return build_results(config={"name": run}, dataset={"name": "glyphs", "fingerprint": "d"}, backbone={},
                         episodes={"n_way": 5, "k_shot": k_shot, "fingerprint": fingerprint or f"e{k_shot}"},
                         heads=heads, hardware={})


def test_png_has_one_panel_per_setting(tmp_path):
    backend = matplotlib.get_backend()
    docs = [make_doc(1, "demo"), make_doc(5, "demo"), make_doc(5, "rerun", 0.05, fingerprint="other")]
    path = plot_accuracy(docs, tmp_path / "accuracy.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy.png"]
    assert matplotlib.get_backend() == backend


def test_svg_by_extension(tmp_path):
    path = plot_accuracy([make_doc(5, "demo")], tmp_path / "plots" / "accuracy.SVG")
    text = path.read_text()
    assert "<svg" in text and "pattern_search" in text


def test_unknown_extension_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"\.png, \.svg"):
        plot_accuracy([make_doc(5, "demo")], tmp_path / "accuracy.jpg")
    assert list(tmp_path.iterdir()) == []
