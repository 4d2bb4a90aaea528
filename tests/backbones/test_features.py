"""Feature extraction: inference mode, eval BatchNorm, batching, the model's mode restored."""
import torch

from backbones.augment import to_float
from backbones.features import extract_features
from backbones.resnet12 import ResNet12


def test_features_are_float32_per_image_and_independent_of_the_batch_size():
    torch.manual_seed(0)
    model = ResNet12(width=0.125)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(model, images, batch_size=4, device="cpu")
    assert features.shape == (10, 80) and features.dtype == torch.float32
    assert not features.requires_grad
    assert torch.allclose(features, extract_features(model, images, batch_size=10, device="cpu"),
                          atol=1e-5)


def test_features_use_eval_mode_and_the_shared_normalization_then_restore_training_mode():
    torch.manual_seed(0)
    model = ResNet12(width=0.125).train()
    model(torch.randn(8, 3, 32, 32))     # give BatchNorm running statistics
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(model, images, batch_size=2, device="cpu")
    assert model.training
    with torch.no_grad():
        expected = model.eval()(to_float(images))
    assert torch.allclose(features, expected, atol=1e-5)


def test_no_images_give_an_empty_feature_matrix():
    features = extract_features(ResNet12(width=0.125), torch.zeros((0, 3, 32, 32), dtype=torch.uint8),
                                batch_size=4, device="cpu")
    assert features.shape == (0, 80)
