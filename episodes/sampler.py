"""N-way K-shot episodes, sampled for many episodes at once as index tensors.

Example:
    >>> sampler = EpisodeSampler(split.labels, n_way=5, k_shot=5, n_query=15, seed=0)
    >>> episodes = sampler.sample(600)
    >>> support_images = split.images[episodes.support]      # [600, 25, 3, H, W]
    >>> episodes.support_labels                               # [600, 25], values 0..4
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from episodes.errors import fail
from episodes.io import fingerprint

_CHUNK = 1024  # episodes drawn at once (bounds memory; the episodes do not depend on it)
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: stream output j is mix(state + (j + 1) * gamma)


@dataclass(frozen=True, eq=False)
class Episodes:
    """A set of episodes as indices into one split.

    Args:
        classes: [E, n_way] split labels of each episode's classes (episode label i = classes[:, i]).
        support: [E, n_way * k_shot] split indices, class-major (k_shot images of class 0, ...).
        query: [E, n_way * n_query] split indices, class-major.
    """

    classes: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor
    n_way: int
    k_shot: int
    n_query: int
    seed: int

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    @property
    def support_labels(self) -> torch.Tensor:
        """[E, n_way * k_shot] episode labels in [0, n_way)."""
        return _episode_labels(len(self), self.n_way, self.k_shot)

    @property
    def query_labels(self) -> torch.Tensor:
        """[E, n_way * n_query] episode labels in [0, n_way)."""
        return _episode_labels(len(self), self.n_way, self.n_query)

    def subset(self, index: slice | torch.Tensor) -> "Episodes":
        """The episodes at `index` (used to shard episodes across ranks)."""
        return Episodes(self.classes[index], self.support[index], self.query[index],
                        self.n_way, self.k_shot, self.n_query, self.seed)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the sampled indices and settings: equal fingerprints mean equal episodes."""
        settings = f"{self.n_way}-{self.k_shot}-{self.n_query}-{self.seed}"
        return fingerprint([self.classes, self.support, self.query], [settings])


def _episode_labels(count: int, n_way: int, per_class: int) -> torch.Tensor:
    return torch.arange(n_way).repeat_interleave(per_class).expand(count, -1).contiguous()


class EpisodeSampler:
    """Samples episodes from a split's labels, deterministically from a seed.

    Classes within an episode are distinct, and support and query images are disjoint. Episode i
    is drawn from its own random stream, keyed by (seed, i) (splitmix64 on unsigned integers,
    see `episode_streams`), so the same seed gives the same episodes on any machine, and the
    first n episodes of any count are the same: a 600-episode run is a prefix of a 1,000-episode
    run of the same seed, and the two can be paired episode by episode.

    Args:
        labels: int64 [N] class label of every image in the split.
        n_way: classes per episode.
        k_shot: support images per class.
        n_query: query images per class.
        seed: seed of the episode set.
    """

    def __init__(self, labels: torch.Tensor, n_way: int, k_shot: int, n_query: int, seed: int = 0):
        labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
        counts = torch.bincount(labels) if labels.numel() else torch.zeros(0, dtype=torch.int64)
        present = (counts > 0).nonzero().flatten()
        if min(n_way, k_shot, n_query + 1) < 1:
            raise fail(f"Episodes need n_way >= 1, k_shot >= 1 and n_query >= 0; got n_way={n_way}, "
                       f"k_shot={k_shot}, n_query={n_query}.", "Set positive episode sizes.")
        if n_way > len(present):
            raise fail(f"A {n_way}-way episode needs {n_way} classes but the split has "
                       f"{len(present)}.", f"Set episodes.n_way to at most {len(present)}.")
        needed = k_shot + n_query
        small = present[counts[present] < needed]
        if len(small):
            fewest = int(counts[present].min())
            raise fail(f"Each episode class needs k_shot + n_query = {needed} images, but "
                       f"{len(small)} class(es) of the split have fewer (the smallest has {fewest}).",
                       f"Lower episodes.k_shot or episodes.n_query so that they add up to at "
                       f"most {fewest}.")
        self.n_way, self.k_shot, self.n_query, self.seed = n_way, k_shot, n_query, seed
        self.classes = present
        order = torch.argsort(labels, stable=True)
        self._counts = counts[present]
        width = int(self._counts.max())
        # table[c, j] = index of the j-th image of class c (padding for smaller classes)
        self._table = torch.full((len(present), width), -1, dtype=torch.int64)
        starts = torch.cumsum(counts, 0) - counts
        for row, cls in enumerate(present.tolist()):
            self._table[row, :counts[cls]] = order[starts[cls]:starts[cls] + counts[cls]]

    def sample(self, count: int) -> Episodes:
        """Draw episodes 0 .. count-1."""
        parts = [self._draw(start, min(_CHUNK, count - start)) for start in range(0, count, _CHUNK)]
        if not parts:
            raise fail("Asked for 0 episodes.", "Set episodes.count to at least 1.")
        classes, support, query = (torch.cat(tensors) for tensors in zip(*parts))
        return Episodes(classes, support, query, self.n_way, self.k_shot, self.n_query, self.seed)

    def _draw(self, start: int, count: int) -> tuple[torch.Tensor, ...]:
        # numpy, single-threaded: these small ops gain nothing from threads and stall on a busy machine
        n_classes = self._table.shape[0]
        per_class = self.k_shot + self.n_query
        words = episode_streams(self.seed, start, count, n_classes + self.n_way * per_class)
        # Classes: the n_way smallest of distinct integer keys (40 random bits, then the position),
        # so the choice is the same on every machine and with any selection algorithm.
        keys = (words[:, :n_classes] >> np.uint64(24)).astype(np.int64) * n_classes + np.arange(n_classes)
        chosen = np.argpartition(keys, self.n_way - 1, axis=1)[:, :self.n_way] if self.n_way < n_classes \
            else np.broadcast_to(np.arange(n_classes), keys.shape)
        rows = np.take_along_axis(chosen, np.argsort(np.take_along_axis(keys, chosen, 1), axis=1), 1)  # [E, n_way]
        # Images: the first k+q steps of a Fisher-Yates shuffle of each chosen class.
        uniform = (words[:, n_classes:] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        picks = partial_shuffle(self._counts.numpy()[rows].reshape(-1), uniform.reshape(count * self.n_way, per_class))
        images = self._table.numpy()[rows[:, :, None], picks.reshape(count, self.n_way, per_class)]  # [E, n_way, k+q]
        support = images[:, :, :self.k_shot].reshape(count, -1)
        query = images[:, :, self.k_shot:].reshape(count, -1)
        return tuple(torch.from_numpy(np.ascontiguousarray(part)) for part in (self.classes.numpy()[rows], support, query))


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function, in place on uint64 (unsigned arithmetic wraps, by definition)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def episode_streams(seed: int, start: int, count: int, width: int) -> np.ndarray:
    """uint64 [count, width]: the first `width` words of the streams of episodes start .. start+count-1.

    The stream of episode i is splitmix64 started at mix(mix(seed) + i): it depends on (seed, i) only.

    Args:
        seed: seed of the episode set (any integer; taken modulo 2^64).
        start: index of the first episode.
        count: episodes.
        width: words per episode.
    """
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed % (1 << 64)], dtype=np.uint64))
        states = _mix64(key + np.arange(start, start + count, dtype=np.uint64))
        steps = np.arange(1, width + 1, dtype=np.uint64) * np.uint64(_GAMMA)
        return _mix64(states[:, None] + steps[None, :])


def partial_shuffle(sizes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """The first m positions of a Fisher-Yates shuffle of range(size), for many rows at once.

    Step t swaps position t with j_t = t + floor(u_t * (size - t)). Only the positions touched so
    far differ from the identity, so instead of a [rows, size] table each row keeps its j's and the
    value each swap put at j (what position t held): the value at a position is the latest value
    put there, else the position itself. Memory and time are O(rows * m^2), not O(rows * size).

    Args:
        sizes: int64 [R] the size of each row's range (at least m).
        uniform: float64 [R, m] uniforms in [0, 1), one per step.

    Returns:
        int64 [R, m]: the picks, distinct within a row.
    """
    rows, steps = uniform.shape
    picks = np.empty((rows, steps), dtype=np.int64)
    jumps = np.empty((rows, steps), dtype=np.int64)    # j_t
    placed = np.empty((rows, steps), dtype=np.int64)   # the value put at position j_t at step t

    def value_at(position: np.ndarray, step: int) -> np.ndarray:
        value = position.copy()
        for earlier in range(step):  # in order, so the latest swap onto `position` wins
            hit = jumps[:, earlier] == position
            value[hit] = placed[hit, earlier]
        return value

    for step in range(steps):
        jump = step + (uniform[:, step] * (sizes - step)).astype(np.int64)
        picks[:, step] = value_at(jump, step)
        placed[:, step] = value_at(np.full(rows, step, dtype=np.int64), step)
        jumps[:, step] = jump
    return picks
