"""Synthetic episodes shared by the head tests."""
import torch


def blobs(episodes: int = 4, n_way: int = 3, shots: int = 3, dim: int = 24, noise: float = 0.8, seed: int = 0,
          dtype: torch.dtype = torch.float32):
    """L2-normalized Gaussian class blobs: support [E, n_way * shots, dim] and labels [E, n_way * shots]."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(episodes, n_way, dim, generator=generator, dtype=dtype)
    labels = torch.arange(n_way).repeat_interleave(shots).expand(episodes, -1).contiguous()
    points = centers.gather(1, labels.unsqueeze(-1).expand(-1, -1, dim))
    points = points + noise * torch.randn(points.shape, generator=generator, dtype=dtype)
    return torch.nn.functional.normalize(points, dim=-1), labels
