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

import torch

from episodes.errors import fail
from episodes.io import fingerprint

_CHUNK = 1024  # episodes drawn per batch of random keys; part of the sampling definition


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

    Classes within an episode are distinct, and support and query images are disjoint. The
    draw uses only a seeded CPU `torch.Generator` and integer keys, so the same seed gives
    the same episodes on any machine.

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
        """Draw `count` episodes."""
        generator = torch.Generator().manual_seed(self.seed)
        parts = [self._draw(min(_CHUNK, count - start), generator) for start in range(0, count, _CHUNK)]
        if not parts:
            raise fail("Asked for 0 episodes.", "Set episodes.count to at least 1.")
        classes, support, query = (torch.cat(tensors) for tensors in zip(*parts))
        return Episodes(classes, support, query, self.n_way, self.k_shot, self.n_query, self.seed)

    def _draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        n_classes, width = self._table.shape
        per_class = self.k_shot + self.n_query
        # Classes: the n_way smallest of distinct integer keys (the position breaks ties), so the
        # choice is the same on every machine and with any top-k implementation.
        class_keys = torch.randint(0, 1 << 40, (count, n_classes), generator=generator)
        rows = torch.topk(class_keys * n_classes + torch.arange(n_classes), self.n_way,
                          largest=False, sorted=True).indices                     # [E, n_way]
        # Images: the first k+q steps of a Fisher-Yates shuffle of each chosen class, for all
        # episodes at once; k+q random numbers per class instead of one per image.
        sizes = self._counts[rows].flatten()                                      # [E * n_way]
        # order[j, r]: image at position j of row r's shuffle (rows are the episode classes).
        order = torch.arange(width, dtype=torch.int32).unsqueeze(1).repeat(1, count * self.n_way)
        uniform = torch.rand((per_class, count * self.n_way), generator=generator, dtype=torch.float64)
        for step in range(per_class):
            swap = (step + (uniform[step] * (sizes - step)).long()).unsqueeze(0)
            current = order[step].clone()
            order[step] = order.gather(0, swap).squeeze(0)
            order.scatter_(0, swap, current.unsqueeze(0))
        picks = order[:per_class].T.reshape(count, self.n_way, per_class).long()
        images = self._table[rows.unsqueeze(-1), picks]                           # [E, n_way, k+q]
        support = images[:, :, :self.k_shot].reshape(count, -1)
        query = images[:, :, self.k_shot:].reshape(count, -1)
        return self.classes[rows], support, query
