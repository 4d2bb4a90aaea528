"""`fewshot pretrain` on the tiny image-folder dataset, and its prototype validation."""
import sys

import torch
from torch import nn

from backbones.checkpoint import load_checkpoint
from episodes.base import Split
from fewshot.cli import main
from fewshot.commands.pretrain import prototype_validation
from tests.fewshot.conftest import run_fewshot


def pretrain_cli(tiny_config, *args):
    return main(["pretrain", "--config", str(tiny_config), "--quiet", *args])


def test_pretrain_command_writes_a_validated_checkpoint_and_resumes(tmp_path, tiny_config, capsys):
    run = tmp_path / "run"
    assert pretrain_cli(tiny_config, "--output-dir", str(run), "--seed", "4") == 0
    model, info = load_checkpoint(run / "checkpoint-best.pt")
    assert info["config"]["name"] == "tiny" and info["seed"] == 4 and info["feature_dim"] == 80
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 80)
    _, last = load_checkpoint(run / "checkpoint-last.pt")
    accuracies = [record["val_accuracy"] for record in last["history"]]
    assert len(accuracies) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert last["best_accuracy"] == max(accuracies)

    assert pretrain_cli(tiny_config, "--output-dir", str(run)) == 2       # would overwrite the run
    assert "--resume" in capsys.readouterr().err
    assert pretrain_cli(tiny_config, "--output-dir", str(run), "--seed", "4", "--resume") == 0  # done
    assert pretrain_cli(tiny_config, "--output-dir", str(run), "--seed", "4", "--resume", "pretrain.lr=0.5") == 2
    assert "pretrain.lr" in capsys.readouterr().err


def test_pretrain_command_trains_with_two_processes_under_torchrun(tmp_path, tiny_config):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "fewshot")
    run_fewshot("pretrain", "--config", str(tiny_config), "--output-dir", str(tmp_path / "run"),
                "--device", "cpu", data_root=tmp_path, launcher=launcher)
    _, info = load_checkpoint(tmp_path / "run" / "checkpoint-last.pt")
    assert info["epoch"] == 2 and info["step"] == 2 * 3     # 48 images, global batch 16 = 2 x 8
    assert all(0.0 <= record["val_accuracy"] <= 1.0 for record in info["history"])


def test_resume_needs_the_run_directory(tiny_config, capsys):
    assert pretrain_cli(tiny_config, "--resume") == 2
    assert "--output-dir" in capsys.readouterr().err


class MeanColour(nn.Module):
    """A 'backbone' whose feature is the mean colour of the (normalized) image."""

    feature_dim = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def colour_classes(classes: int, per_class: int, noise: float) -> Split:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    colours = torch.rand(classes, 3, generator=generator) * 200 + 20
    images = colours[labels].view(-1, 3, 1, 1) + noise * torch.randn(len(labels), 3, 8, 8, generator=generator)
    return Split(images.clamp(0, 255).to(torch.uint8), labels, tuple(map(str, range(classes))))


def test_prototype_validation_scores_separable_classes_perfectly_and_noise_at_chance():
    separable = prototype_validation(colour_classes(6, 20, noise=2.0), episodes=50, seed=0,
                                     batch_size=64, device="cpu")
    assert separable(MeanColour()) == 1.0
    noise = Split(torch.randint(0, 256, (120, 3, 8, 8), dtype=torch.uint8),
                  torch.arange(6).repeat_interleave(20), tuple(map(str, range(6))))
    chance = prototype_validation(noise, episodes=50, seed=0, batch_size=64, device="cpu")(MeanColour())
    assert 0.1 < chance < 0.35   # 5-way: chance is 0.2
