"""Oracle heads: only they receive the queries; results and leaderboards mark them, unranked."""
import torch

import pytest

import fewshot.run.evaluate
from episodes import EpisodeSampler
from episodes.errors import UserError
from fewshot.config import FeaturesConfig
from fewshot.run.evaluate import episode_tensors, evaluate_heads
from fewshot.heads import HeadFit, HeadOptimizer, Queries
from fewshot.report.leaderboard import merge, to_markdown
from fewshot.results.document import build_results


class SpyHead(HeadOptimizer):
    """Records every call's arguments and returns zero heads."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def fit(self, support, labels, n_way, **kwargs):
        self.calls.append({"support": support, "labels": labels, **kwargs})
        return HeadFit(support.new_zeros(support.shape[0], support.shape[2], n_way),
                       support.new_zeros(support.shape[0], n_way))


class OracleSpyHead(SpyHead):
    oracle = True


def split_features(classes: int = 6, per_class: int = 12, dim: int = 8):
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(0)), labels


def run_spies(monkeypatch):
    features, labels = split_features()
    episodes = EpisodeSampler(labels, n_way=3, k_shot=2, n_query=4, seed=1).sample(150)   # two chunks
    spies = {"plain": SpyHead(), "oracle": OracleSpyHead()}
    monkeypatch.setattr(fewshot.run.evaluate, "get_head", lambda name, **settings: spies[name])
    results = evaluate_heads(features, episodes, {"plain": {}, "oracle": {}}, FeaturesConfig(), seed=0)
    return features, episodes, spies, results


def test_a_non_oracle_head_never_receives_query_tensors(monkeypatch):
    features, episodes, spies, _ = run_spies(monkeypatch)
    assert len(spies["plain"].calls) == 2
    for chunk, call in enumerate(spies["plain"].calls):
        assert set(call) == {"support", "labels", "generator"}
        support, labels, query, _ = episode_tensors(features, episodes, chunk, FeaturesConfig(), "cpu")
        assert torch.equal(call["support"], support) and torch.equal(call["labels"], labels)
        assert call["support"].shape[1] == 3 * 2          # support rows only, no query rows


def test_an_oracle_head_receives_its_chunks_queries(monkeypatch):
    features, episodes, spies, results = run_spies(monkeypatch)
    for chunk, call in enumerate(spies["oracle"].calls):
        _, _, query, query_labels = episode_tensors(features, episodes, chunk, FeaturesConfig(), "cpu")
        assert isinstance(call["queries"], Queries)
        assert torch.equal(call["queries"].features, query) and torch.equal(call["queries"].labels, query_labels)
    assert [result.oracle for result in results] == [False, True]


def test_results_and_leaderboard_mark_oracle_heads_and_leave_them_unranked(monkeypatch):
    *_, results = run_spies(monkeypatch)
    results[1].per_episode = torch.ones_like(results[1].per_episode)       # the oracle "wins"
    doc = build_results(config={"name": "spy"}, dataset={"name": "d", "split": "test", "fingerprint": "f"},
                        backbone={"name": "b"}, episodes={"n_way": 3, "k_shot": 2, "fingerprint": "e"},
                        heads=results, hardware={})
    assert "oracle" not in doc["heads"][0] and doc["heads"][1]["oracle"] is True
    rows = merge([doc])
    assert [(row.head, row.rank, row.oracle) for row in rows] == [("plain", 1, False), ("oracle", None, True)]
    table = to_markdown(rows)
    assert "| — | oracle (oracle) |" in table and "saw the query set at fit time" in table


def test_an_oracle_head_on_episodes_without_queries_is_a_clear_error():
    features, labels = split_features()
    episodes = EpisodeSampler(labels, n_way=3, k_shot=2, n_query=0, seed=1).sample(20)
    with pytest.raises(UserError, match="no queries.*episodes.n_query") as error:
        evaluate_heads(features, episodes, {"poisoned": {}}, FeaturesConfig(), seed=0)
    assert "leave the 'poisoned' head out" in str(error.value)
