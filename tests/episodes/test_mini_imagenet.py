"""miniImageNet from the cache pickles (restricted unpickler) and from Ravi & Larochelle's CSV + JPEGs."""
import csv
import pickle

import pytest
import torch
from PIL import Image

from episodes import UserError, get_dataset_source, load_dataset

SPLITS = {"train": ["n01532829", "n01558993", "n01704323"], "validation": ["n01855672", "n02091244"],
          "test": ["n01930112", "n01981276"]}
CSV_NAMES = {"train": "train", "validation": "val", "test": "test"}


def write_caches(folder, write_mini_cache, protocol=4, per_class=2, size=84):
    for split, names in SPLITS.items():
        write_mini_cache(folder / f"mini-imagenet-cache-{split}.pkl", names, per_class, size, protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5, "numpy1"])
def test_cache_pickles_give_classes_sorted_by_name_with_their_own_images(tmp_path, write_mini_cache, protocol):
    # class_dict lists the classes in reverse order, so sorting must carry the images along
    for split, names in SPLITS.items():
        write_mini_cache(tmp_path / "mini-imagenet" / f"mini-imagenet-cache-{split}.pkl", names[::-1], 3, 84, protocol)
    data = load_dataset("mini_imagenet", data_root=tmp_path)
    for split, part in (("train", data.base), ("validation", data.val), ("test", data.novel)):
        names = SPLITS[split]
        assert part.class_names == tuple(names) and part.images.dtype == torch.uint8
        assert part.images.shape == (3 * len(names), 3, 84, 84)
        assert torch.equal(part.labels, torch.arange(len(names)).repeat_interleave(3))  # grouped by class
        # R = the class's position in the written (reversed) list, G = image index within its class
        assert part.images[:, 0, 5, 5].tolist() == [names[::-1].index(names[int(label)]) for label in part.labels]
        assert part.images[:, 1, 5, 5].tolist() == [0, 1, 2] * len(names)
        assert int(part.images[:, 2].max()) == 0


def test_cache_pickles_directly_under_the_data_root_are_found(tmp_path, write_mini_cache):
    write_caches(tmp_path, write_mini_cache, size=16)
    assert get_dataset_source("mini_imagenet").find(tmp_path, None) == tmp_path
    assert load_dataset("mini_imagenet", data_root=tmp_path, image_size=8).base.images.shape == (6, 3, 8, 8)


def test_malicious_cache_pickle_is_refused_and_its_command_never_runs(tmp_path, write_mini_cache, malicious_pickle):
    write_caches(tmp_path, write_mini_cache, size=8)
    marker = tmp_path / "pwned"
    (tmp_path / "mini-imagenet-cache-test.pkl").write_bytes(malicious_pickle(marker))
    with pytest.raises(UserError, match="mini-imagenet-cache-test.pkl is not a plain data pickle.*may be malicious"):
        load_dataset("mini_imagenet", data_root=tmp_path)
    assert not marker.exists()


def test_truncated_cache_pickle_is_a_user_error(tmp_path, write_mini_cache):
    write_caches(tmp_path, write_mini_cache, size=8)
    path = tmp_path / "mini-imagenet-cache-validation.pkl"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="validation.pkl could not be read as a pickle.*truncated or corrupt"):
        load_dataset("mini_imagenet", data_root=tmp_path)


def test_class_dict_that_does_not_match_the_images_is_a_user_error(tmp_path, write_mini_cache):
    write_caches(tmp_path, write_mini_cache, size=8)
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    cache = write_mini_cache(path, SPLITS["train"], 2, 8)
    cache["class_dict"][SPLITS["train"][0]].append(99)  # a row that does not exist
    path.write_bytes(pickle.dumps(cache))
    with pytest.raises(UserError, match="class_dict of .*train.pkl does not match its 6 images"):
        load_dataset("mini_imagenet", data_root=tmp_path)


def write_csv_layout(root, per_class=2, sizes=((100, 80), (84, 84))):
    folder = root / "mini-imagenet"
    (folder / "images").mkdir(parents=True)
    colours = {}
    for split, names in SPLITS.items():
        rows = []
        for index in range(per_class):
            for name in names:
                filename = f"{name}{index:08d}.jpg"
                colours[filename] = (40 * len(colours) % 256, 200, 30)
                Image.new("RGB", sizes[index % len(sizes)], colours[filename]).save(folder / "images" / filename)
                rows.append([filename, name])
        with open(folder / f"{CSV_NAMES[split]}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["filename", "label"], *rows])
    return folder, colours


def test_csv_layout_decodes_jpegs_of_mixed_sizes_at_84(tmp_path):
    folder, colours = write_csv_layout(tmp_path)
    assert get_dataset_source("mini_imagenet").find(tmp_path, None) == folder
    data = load_dataset("mini_imagenet", data_root=tmp_path)
    base = data.base
    assert base.images.shape == (6, 3, 84, 84) and base.class_names == tuple(SPLITS["train"])
    assert torch.equal(base.labels, torch.tensor([0, 0, 1, 1, 2, 2]))
    for image, label in zip(base.images, base.labels):
        name = SPLITS["train"][label]
        expected = [colours[f"{name}{i:08d}.jpg"] for i in range(2)]
        centre = tuple(image[:, 40, 40].tolist())
        assert any(max(abs(a - b) for a, b in zip(centre, colour)) <= 3 for colour in expected)  # JPEG is lossy


def test_csv_naming_a_missing_image_is_a_user_error(tmp_path):
    folder, _ = write_csv_layout(tmp_path, sizes=((8, 8),))
    (folder / "images" / f"{SPLITS['test'][1]}00000001.jpg").unlink()
    with pytest.raises(UserError, match=r"test.csv names 1 image\(s\) missing from .*n0198127600000001.jpg"):
        load_dataset("mini_imagenet", data_root=tmp_path)


def test_corrupt_jpeg_is_a_user_error_naming_it(tmp_path):
    folder, _ = write_csv_layout(tmp_path, sizes=((8, 8),))
    broken = folder / "images" / f"{SPLITS['validation'][0]}00000000.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="n0185567200000000.jpg is truncated or corrupt"):
        load_dataset("mini_imagenet", data_root=tmp_path)


def test_csv_without_the_header_is_a_user_error(tmp_path):
    folder, _ = write_csv_layout(tmp_path, sizes=((8, 8),))
    (folder / "val.csv").write_text("n01855672.jpg\n")
    with pytest.raises(UserError, match="val.csv is not a miniImageNet split file.*filename,label"):
        load_dataset("mini_imagenet", data_root=tmp_path)


def test_missing_files_name_the_layout_and_the_data_root_option(tmp_path, write_mini_cache):
    write_mini_cache(tmp_path / "mini-imagenet-cache-train.pkl", SPLITS["train"], 1, 8)  # only one of three
    assert get_dataset_source("mini_imagenet").find(tmp_path, None) is None
    with pytest.raises(UserError, match=r"miniImageNet was not found under .*mini-imagenet-cache-\{train,"
                                        r"validation,test\}.pkl.*--data-root.*FEWSHOT_DATA"):
        load_dataset("mini_imagenet", data_root=tmp_path)
