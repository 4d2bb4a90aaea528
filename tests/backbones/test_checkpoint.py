"""Checkpoints rebuild the model from name + config + weights; bad files are clear errors."""
import pytest
import torch

from backbones.checkpoint import checkpoint_sha256, load_checkpoint, read_checkpoint, save_checkpoint
from backbones.resnet12 import ResNet12
from episodes.errors import UserError
from episodes.io import file_sha256


def write(path, model=None, backbone="resnet12"):
    return save_checkpoint(path, model or ResNet12(width=0.125), backbone=backbone,
                           backbone_config={"width": 0.125, "dropblock": 0.0}, epoch=2, step=10,
                           dataset_fingerprint="abc", config={"name": "demo"})


def test_checkpoint_rebuilds_the_same_model_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    model = ResNet12(width=0.125)
    path = write(tmp_path / "c.pt", model)
    loaded, info = load_checkpoint(path)
    assert not loaded.training and isinstance(loaded, ResNet12)
    assert {key: info[key] for key in ("backbone", "backbone_config", "feature_dim", "epoch", "step",
                                      "dataset_fingerprint", "config")} == {
        "backbone": "resnet12", "backbone_config": {"width": 0.125, "dropblock": 0.0}, "feature_dim": 80,
        "epoch": 2, "step": 10, "dataset_fingerprint": "abc", "config": {"name": "demo"}}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert checkpoint_sha256(path) == file_sha256(path)
    assert not list(tmp_path.glob(".*tmp"))   # the atomic write left no temporary file


def test_missing_truncated_and_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    path = write(tmp_path / "c.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save(ResNet12(width=0.125).state_dict(), plain)   # a bare state dict, not a checkpoint
    with pytest.raises(UserError, match="not a fewshot backbone checkpoint"):
        load_checkpoint(plain)


class NotPlainData:
    pass


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"format": "fewshot.checkpoint/1", "payload": NotPlainData()}, path)
    with pytest.raises(UserError, match="other than tensors"):
        read_checkpoint(path)


def test_weights_of_another_architecture_or_shape_are_user_errors(tmp_path):
    wide = write(tmp_path / "wide.pt", ResNet12(width=0.25))   # claims width 0.125
    with pytest.raises(UserError, match="wrong shapes"):
        load_checkpoint(wide)
    foreign = torch.load(write(tmp_path / "c.pt"), weights_only=True)
    foreign["model"] = {"conv.weight": torch.zeros(3)}
    torch.save(foreign, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="missing"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="cannot build"):
        load_checkpoint(write(tmp_path / "other.pt", backbone="vit"))
