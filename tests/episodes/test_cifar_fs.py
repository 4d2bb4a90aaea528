"""CIFAR-FS from CIFAR-100's python files (folder or .tar.gz) and from learn2learn's PNG folders."""
import os
import pickle

import pytest
import torch

from episodes import UserError, get_dataset_source, load_dataset
from episodes.sources.cifar_fs import standard_classes
from fewshot.cli import main


def test_bundled_class_lists_are_the_standard_bertinetto_split(cifar100_names):
    lists = standard_classes()
    assert [len(lists[split]) for split in ("base", "val", "novel")] == [64, 16, 20]
    every = lists["base"] + lists["val"] + lists["novel"]
    assert len(set(every)) == 100 and sorted(every) == sorted(cifar100_names)
    assert {"baby", "whale", "pickup_truck", "sweet_pepper"} <= set(lists["novel"])
    assert {"otter", "maple_tree", "tractor", "sea"} <= set(lists["val"])


def test_pickle_folder_gives_the_three_splits_with_the_right_images(tmp_path, write_cifar100):
    meta_names = write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    data = load_dataset("cifar_fs", data_root=tmp_path)
    lists = standard_classes()
    for split, size in (("base", 64), ("val", 16), ("novel", 20)):
        part = data.split(split)
        assert part.images.dtype == torch.uint8 and part.images.shape == (3 * size, 3, 32, 32)
        assert part.class_names == tuple(lists[split])
        assert torch.equal(part.class_counts(), torch.full((size,), 3))  # train + test merged
        # R plane = fine label in meta, so each label must point at its class name's images
        fine = part.images[:, 0, 0, 0].long()
        expected = torch.tensor([meta_names.index(lists[split][label]) for label in part.labels])
        assert torch.equal(fine, expected)
        assert bool((part.images[:, 0] == part.images[:, 0, :1, :1]).all())  # channel-major rows
        assert sorted(part.images[:, 2, 0, 0].tolist()) == [0] * (2 * size) + [1] * size


def test_tarball_is_read_in_place_and_matches_the_folder(tmp_path, write_cifar100, make_tarball):
    write_cifar100(tmp_path / "folder")
    (tmp_path / "packed").mkdir()
    make_tarball(tmp_path / "folder" / "cifar-100-python", tmp_path / "packed" / "cifar-100-python.tar.gz")
    from_folder = load_dataset("cifar_fs", data_root=tmp_path / "folder")
    from_tarball = load_dataset("cifar_fs", data_root=tmp_path / "packed")
    for split in ("base", "val", "novel"):
        assert from_tarball.split(split).fingerprint == from_folder.split(split).fingerprint
    assert os.listdir(tmp_path / "packed") == ["cifar-100-python.tar.gz"]  # nothing extracted


def test_learn2learn_png_folders_are_read_with_the_standard_classes(tmp_path, write_class_folders, class_colour):
    lists = standard_classes()
    processed = tmp_path / "cifarfs" / "processed"
    for split, folder in (("base", "train"), ("val", "val"), ("novel", "test")):
        write_class_folders(processed / folder, sorted(lists[split], reverse=True), per_class=2)
    assert get_dataset_source("cifar_fs").find(tmp_path, None) == processed
    data = load_dataset("cifar_fs", data_root=tmp_path)
    novel = data.novel
    assert novel.images.shape == (40, 3, 32, 32) and novel.class_names == tuple(lists["novel"])
    # the folders were written in reverse order: class name -> colour must follow the names
    written = sorted(lists["novel"], reverse=True)
    for image, label in zip(novel.images, novel.labels):
        assert tuple(image[:, 0, 0].tolist()) == class_colour(written.index(lists["novel"][label]))


def test_load_dataset_resizes_when_an_image_size_is_given(tmp_path, write_cifar100):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=0)
    data = load_dataset("cifar_fs", data_root=tmp_path, image_size=40)
    assert data.base.images.shape == (64, 3, 40, 40) and data.novel.images.dtype == torch.uint8


def test_missing_files_name_the_layout_and_the_data_root_option(tmp_path):
    with pytest.raises(UserError, match=r"CIFAR-FS was not found under .*cifar-100-python.*--data-root.*FEWSHOT_DATA"):
        load_dataset("cifar_fs", data_root=tmp_path)
    with pytest.raises(UserError, match="data root .*nowhere does not exist"):
        load_dataset("cifar_fs", data_root=tmp_path / "nowhere")


def test_truncated_pickle_is_a_user_error(tmp_path, write_cifar100):
    write_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(UserError, match="train could not be read as a pickle.*truncated or corrupt"):
        load_dataset("cifar_fs", data_root=tmp_path)


def test_truncated_tarball_is_a_user_error_and_leaves_no_files(tmp_path, write_cifar100, make_tarball):
    write_cifar100(tmp_path / "folder")
    tarball = make_tarball(tmp_path / "folder" / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="cifar-100-python.tar.gz.*truncated"):
        load_dataset("cifar_fs", data_root=tmp_path)
    assert sorted(tmp_path.rglob("*")) == before


def test_malicious_meta_file_is_refused_without_running_it(tmp_path, write_cifar100, malicious_pickle):
    write_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "cifar-100-python" / "meta").write_bytes(malicious_pickle(marker))
    with pytest.raises(UserError, match="meta is not a plain data pickle.*may be malicious"):
        load_dataset("cifar_fs", data_root=tmp_path)
    assert not marker.exists()


def test_meta_lacking_a_split_class_is_a_user_error(tmp_path, write_cifar100, cifar100_names):
    names = [name if name != "whale" else "orca" for name in cifar100_names]
    write_cifar100(tmp_path, names=names)
    with pytest.raises(UserError, match=r"meta file .* lacks 1 class\(es\) named in the CIFAR-FS split lists: \['whale'\]"):
        load_dataset("cifar_fs", data_root=tmp_path)


def test_corrupt_png_in_learn2learn_layout_names_the_file(tmp_path, write_class_folders):
    lists = standard_classes()
    processed = tmp_path / "cifarfs" / "processed"
    for split, folder in (("base", "train"), ("val", "val"), ("novel", "test")):
        write_class_folders(processed / folder, lists[split], per_class=1)
    broken = processed / "test" / "worm" / "000.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(UserError, match=r"test/worm/000.png is truncated or corrupt"):
        load_dataset("cifar_fs", data_root=tmp_path)


def test_datasets_command_shows_found_and_not_found(tmp_path, write_cifar100, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    write_cifar100(tmp_path, train_per_class=1, test_per_class=0)
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("│") and len(line.split()) > 2}
    assert "yes" in rows["cifar_fs"] and str(tmp_path / "cifar-100-python") in rows["cifar_fs"]
    assert "no" in rows["mini_imagenet"].split() and "yes" not in rows["mini_imagenet"]


def test_a_pickle_that_is_not_cifar_100_is_a_user_error(tmp_path, write_cifar100):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": [1, 2, 3], b"fine_labels": []}))
    with pytest.raises(UserError, match="test does not look like a CIFAR-100 python file"):
        load_dataset("cifar_fs", data_root=tmp_path)


def test_an_explicit_path_may_be_the_folder_the_tarball_or_a_root(tmp_path, write_cifar100, make_tarball):
    write_cifar100(tmp_path / "root")
    tarball = make_tarball(tmp_path / "root" / "cifar-100-python", tmp_path / "cifar.tar.gz")
    fingerprints = {load_dataset("cifar_fs", data_root=tmp_path / "unused", path=path).novel.fingerprint
                    for path in (tmp_path / "root", tmp_path / "root" / "cifar-100-python", tarball)}
    assert len(fingerprints) == 1
    with pytest.raises(UserError, match="not found at dataset.path=.*nothing.*leave it unset"):
        load_dataset("cifar_fs", data_root=tmp_path / "root", path=tmp_path / "nothing")
