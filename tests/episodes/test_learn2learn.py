"""learn2learn interop: optional, never required (it is not installed here)."""
import sys
import types

import pytest
import torch

from episodes import Split, UserError
from episodes.learn2learn import as_meta_dataset


@pytest.fixture
def split():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 4, 4).contiguous()
    return Split(images, torch.tensor([1, 0, 1, 2, 0]), ("a", "b", "c"))


def test_without_learn2learn_the_error_says_how_to_install_it(split, monkeypatch):
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # makes `import learn2learn` fail
    with pytest.raises(UserError, match="learn2learn is not installed.*pip install learn2learn"):
        as_meta_dataset(split)


def test_with_learn2learn_the_split_is_wrapped_in_its_meta_dataset(split, monkeypatch):
    class FakeMetaDataset:
        def __init__(self, dataset, labels_to_indices=None, indices_to_labels=None):
            self.dataset, self.labels_to_indices = dataset, labels_to_indices

    package, data = types.ModuleType("learn2learn"), types.ModuleType("learn2learn.data")
    data.MetaDataset, package.data = FakeMetaDataset, data
    monkeypatch.setitem(sys.modules, "learn2learn", package)
    monkeypatch.setitem(sys.modules, "learn2learn.data", data)

    meta = as_meta_dataset(split)
    assert isinstance(meta, FakeMetaDataset) and len(meta.dataset) == 5
    image, label = meta.dataset[3]
    assert torch.equal(image, split.images[3]) and int(label) == 2
    assert meta.labels_to_indices == {0: [1, 4], 1: [0, 2], 2: [3]}
