"""volume.png with the matched comparison: each head beside guess & check at its own loss."""
from fewshot.report.volume_tables import matched_points, render_volume


def _doc(matched: bool = True) -> dict:
    """A results document with just what the volume plot reads: sgd matched on episodes 0 and 2."""
    sgd = {"accuracy_mean": 0.475, "percentile": {"mean": 90.0, "ci95": 1.0}}
    if matched:
        sgd["matched"] = {"loss_kind": "span_norm", "episodes": 2,
                          "expected_accuracy": {"mean": 0.7, "ci95": 0.1, "mc_se": 0.01, "n": 2,
                                                "per_episode": [0.6, None, 0.8, None]}}
    return {"dataset": {"name": "toy"}, "episodes": {"n_way": 2, "k_shot": 1},
            "heads": [{"name": "sgd", "per_episode": [1.0, 0.0, 0.9, 0.0]},
                      {"name": "network", "per_episode": [0.5, 0.5, 0.5, 0.5]}],
            "volume": {"expected_accuracy": {"mean": 0.55, "ci95": 0.05},
                       "accuracy_distribution": {"accuracy": [0.0, 0.5, 1.0], "mass": [0.2, 0.5, 0.3]},
                       "heads": {"sgd": sgd, "network": {"accuracy_mean": 0.5, "matched": {
                           "loss_kind": "span_norm", "episodes": 0,
                           "expected_accuracy": {"mean": None, "per_episode": [None] * 4}}}}}}


def test_the_head_is_averaged_over_the_episodes_its_matched_number_has():
    (name, accuracy, estimate, count), = matched_points(_doc())    # the network head has no matched number
    assert (name, count, estimate["mean"]) == ("sgd", 2, 0.7)
    assert abs(accuracy - 0.95) < 1e-12                               # episodes 0 and 2, not all four (0.475)


def test_the_plot_gets_a_matched_panel_only_with_matched_numbers():
    with_matched = render_volume([_doc()], "svg").decode()
    assert "G&amp;C at the head" in with_matched and "sgd (2)" in with_matched
    without = render_volume([_doc(matched=False)], "svg").decode()
    assert "G&amp;C at the head" not in without and "poisoned volumes not computed" in without


def test_a_finite_width_volume_says_its_width_in_the_title():
    from fewshot.report.volume_tables import volume_title
    prior = {"distribution": "nngp", "scale": 1.0, "bias_scale": 1.0, "approximation": None}
    doc = {"dataset": {"name": "glyphs"}, "episodes": {"n_way": 5, "k_shot": 1}, "volume": {"episodes": 50, "prior": prior}}
    assert "finite width" not in volume_title(doc)                     # the NNGP itself: infinite width
    doc["volume"]["prior"] = {**prior, "model": "mlp", "width": 64}
    assert volume_title(doc).endswith("finite width 64 in weight space)")
