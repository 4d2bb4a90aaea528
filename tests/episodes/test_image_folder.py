"""Any dataset as `DIR/{train,val,test}/<class>/<image files>`."""
import pytest
import torch
from PIL import Image

from episodes import UserError, get_dataset_source, load_dataset
from episodes.imagefiles import read_class_folders

CLASSES = {"train": ["cat", "dog", "emu"], "val": ["fox", "gnu"], "test": ["owl", "yak"]}


@pytest.fixture
def folder(tmp_path, write_class_folders):
    root = tmp_path / "animals"
    for split, names in CLASSES.items():
        # mixed sizes and formats, as real folders have them
        write_class_folders(root / split, names, per_class=3, size=[(40, 30), (84, 84), (120, 90)])
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    return root


def test_folders_are_read_with_classes_sorted_and_images_resized_to_84(folder, class_colour):
    data = load_dataset("image_folder", path=folder)
    for split, part in (("train", data.base), ("val", data.val), ("test", data.novel)):
        assert part.class_names == tuple(CLASSES[split])
        assert part.images.shape == (3 * len(CLASSES[split]), 3, 84, 84) and part.images.dtype == torch.uint8
        assert torch.equal(part.class_counts(), torch.full((len(CLASSES[split]),), 3))
        for image, label in zip(part.images, part.labels):
            assert tuple(image[:, 42, 42].tolist()) == class_colour(int(label))


def test_image_size_picks_the_decode_size(folder):
    assert load_dataset("image_folder", path=folder, image_size=24).val.images.shape == (6, 3, 24, 24)


def test_find_needs_the_path_with_its_three_split_folders(folder, tmp_path):
    source = get_dataset_source("image_folder")
    assert source.find(tmp_path, folder) == folder
    assert source.find(tmp_path, None) is None
    assert source.find(tmp_path, folder / "train") is None


def test_jpeg_and_grayscale_images_become_rgb(tmp_path, write_class_folders):
    for split, names in CLASSES.items():
        write_class_folders(tmp_path / split, names, per_class=2, size=(16, 16), suffix=".jpg")
    Image.new("L", (16, 16), 77).save(tmp_path / "test" / "owl" / "gray.png")
    novel = load_dataset("image_folder", path=tmp_path, image_size=16).novel
    assert novel.images.shape == (5, 3, 16, 16)
    assert novel.images[novel.labels == 0][-1, :, 3, 3].tolist() == [77, 77, 77]  # gray.png sorts last


def test_no_path_is_a_user_error_naming_dataset_path():
    with pytest.raises(UserError, match="needs the folder.*dataset.path=DIR"):
        load_dataset("image_folder")


def test_missing_split_folder_is_a_user_error(folder):
    (folder / "val" / "fox").rename(folder / "fox")
    (folder / "val" / "gnu").rename(folder / "gnu")
    (folder / "val").rmdir()
    with pytest.raises(UserError, match="lacks the sub-folder.s. val.*train/, val/ and test/"):
        load_dataset("image_folder", path=folder)


def test_corrupt_image_names_the_file(folder):
    broken = folder / "test" / "yak" / "001.png"
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(UserError, match="test/yak/001.png is truncated or corrupt"):
        load_dataset("image_folder", path=folder)


def test_class_folder_without_images_is_a_user_error(folder):
    for image in (folder / "val" / "gnu").iterdir():
        image.unlink()
    with pytest.raises(UserError, match="val/gnu holds no image files"):
        load_dataset("image_folder", path=folder)


def test_a_class_in_two_splits_is_a_user_error(folder, write_class_folders):
    write_class_folders(folder / "test", ["cat"], per_class=1)
    with pytest.raises(UserError, match="classes in both its base and novel splits: \\['cat'\\]"):
        load_dataset("image_folder", path=folder)


def test_native_size_needs_images_of_one_size(folder):
    with pytest.raises(UserError, match="different sizes.*dataset.image_size"):
        read_class_folders(folder / "train", image_size=0)
    assert read_class_folders(folder / "train", image_size=12).images.shape == (9, 3, 12, 12)


def test_expected_class_list_must_match_the_folders(folder):
    with pytest.raises(UserError, match=r"do not match the expected classes: missing \['cow'\], unexpected \['emu'\]"):
        read_class_folders(folder / "train", image_size=8, class_names=["cat", "dog", "cow"])
