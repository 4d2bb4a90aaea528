"""ResNet-12: shapes at 32x32 and 84x84, the standard parameter count, DropBlock, the registry."""
import pytest
import torch

from backbones import available_backbones, get_backbone
from backbones.dropblock import DropBlock
from backbones.resnet12 import ResNet12
from episodes.errors import UserError


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_standard_resnet12_has_12_4_million_parameters_and_640_d_features():
    model = ResNet12()
    assert parameter_count(model) == 12_424_320
    assert model.feature_dim == 640


@pytest.mark.parametrize("size", [32, 84])
def test_features_have_one_vector_per_image_at_32_and_84_pixels(size):
    model = ResNet12(width=0.25).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, size, size))
    assert features.shape == (2, 160)
    assert torch.isfinite(features).all()


def test_width_multiplier_scales_every_stage():
    model = ResNet12(width=0.5)
    widths = [block.conv1.out_channels for block in model.blocks]
    assert widths == [32, 80, 160, 320] and model.feature_dim == 320
    assert parameter_count(model) < parameter_count(ResNet12()) / 3.5


@pytest.mark.parametrize("size, expected_blocks", [(32, (2, 1)), (84, (5, 2))])
def test_dropblock_block_sizes_fit_the_last_two_stages(size, expected_blocks):
    model = ResNet12(width=0.125, dropblock=0.1).train()
    sides, x = [], torch.randn(2, 3, size, size)
    for block in model.blocks:
        x = block(x)
        sides.append(x.shape[-1])
    assert tuple(model.blocks[i].dropblock.block_size(sides[i], sides[i]) for i in (2, 3)) == expected_blocks
    assert isinstance(model.blocks[0].dropblock, torch.nn.Identity)


def test_dropblock_drops_square_blocks_at_the_requested_rate_only_while_training():
    torch.manual_seed(0)
    drop = DropBlock(0.2, max_block_size=3)
    x = torch.ones(64, 8, 12, 12)
    out = drop.train()(x)
    dropped = (out == 0).float().mean().item()
    assert 0.12 < dropped < 0.28
    assert torch.allclose(out[out > 0], out[out > 0].flatten()[0])  # survivors rescaled equally
    assert torch.equal(drop.eval()(x), x)


def test_dropblock_model_is_random_in_training_and_deterministic_in_eval():
    model = ResNet12(width=0.125, dropblock=0.3)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_registry_builds_by_name_and_rejects_unknown_names_and_settings():
    assert "resnet12" in available_backbones()
    assert get_backbone("resnet12", width=0.25).feature_dim == 160
    with pytest.raises(UserError, match="resnet12"):
        get_backbone("resnet50")
    with pytest.raises(UserError, match="width"):
        get_backbone("resnet12", depth=18)
