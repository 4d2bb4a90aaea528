"""The `mlp` head model: ReLU hidden layers, then a linear read-out, as one flat parameter vector.

Layers l = 1..depth+1 map fan_in -> fan_out: [D -> H, (H -> H,) H -> N]. Each layer is a block
[(fan_in + 1) * fan_out] of the flat vector, viewable as [fan_in + 1, fan_out]: its weight rows,
then its bias row (the linear model's layout, layer by layer). Hidden units are relu(a W + b).

Starts: each layer is drawn with the configured kind (`uniform` / `gaussian`) at scale
init_scale / sqrt(fan_in), weights and bias alike; `uniform` with init_scale 1 is torch's
`nn.Linear` default. A zero start is rejected by the heads (`model_rules`): it is a saddle.

The `full_norm` normalizer is the product of the layers' squared norms ||[W_l; b_l]||^2 (the seed
divides an MLP's logits by a product of layer norms).

Example:
    >>> model = MLPModel(width=64, depth=1)
    >>> params = model.draw_start("uniform", 1.0, E, D, N, generator, "cpu")      # [E, P]
    >>> model.logits(params.unsqueeze(1), support)                                # [E, 1, S, N]
"""
from __future__ import annotations

import math
from typing import Any

import torch

from fewshot.heads.base import HeadFit
from fewshot.heads.head_model import HeadModel, register_model
from fewshot.heads.starts import draw_start


@register_model("mlp")
class MLPModel(HeadModel):
    """A ReLU network head of `depth` hidden layers of `width` units (see the module doc).

    Args:
        width: hidden units per layer (>= 1).
        depth: hidden layers (>= 1).
    """

    def __init__(self, width: int = 64, depth: int = 1, **settings: Any):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"an mlp head needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.width, self.depth = width, depth

    def shapes(self, dim: int, n_way: int) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every layer, input to read-out."""
        sizes = [dim] + [self.width] * self.depth + [n_way]
        return list(zip(sizes[:-1], sizes[1:]))

    def offsets(self, dim: int, n_way: int) -> list[int]:
        """Start of each layer's block in the flat vector, and its end (len = layers + 1)."""
        ends = [0]
        for fan_in, fan_out in self.shapes(dim, n_way):
            ends.append(ends[-1] + (fan_in + 1) * fan_out)
        return ends

    def n_params(self, dim: int, n_way: int) -> int:
        return self.offsets(dim, n_way)[-1]

    def n_way_of(self, size: int, dim: int) -> int:
        """Classes of a flat vector of `size` parameters on `dim` features."""
        hidden = (dim + 1) * self.width + (self.depth - 1) * (self.width + 1) * self.width
        return (size - hidden) // (self.width + 1)

    def layers(self, params: torch.Tensor, dim: int, n_way: int) -> list[torch.Tensor]:
        """Views [..., fan_in + 1, fan_out] of each layer of params [..., P] (last row: the bias)."""
        ends = self.offsets(dim, n_way)
        return [params[..., start:stop].unflatten(-1, (fan_in + 1, fan_out))
                for (start, stop), (fan_in, fan_out) in zip(zip(ends[:-1], ends[1:]), self.shapes(dim, n_way))]

    def draw_start(self, kind: str, scale: float, episodes: int, dim: int, n_way: int, generator: torch.Generator,
                   device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        blocks = [draw_start(kind, scale / math.sqrt(fan_in), (episodes, (fan_in + 1) * fan_out), generator, device, dtype)
                  for fan_in, fan_out in self.shapes(dim, n_way)]
        return torch.cat(blocks, dim=1)

    def logits(self, params: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        episodes, candidates, size = params.shape
        dim, points = features.shape[2], features.shape[1]
        layers = self.layers(params, dim, self.n_way_of(size, dim))
        # The first layer of all candidates in one bmm: [E, M, D + 1] @ [E, D + 1, K * H].
        first = layers[0].permute(0, 2, 1, 3).reshape(episodes, dim + 1, -1)
        pre = torch.bmm(with_ones(features.to(params.dtype)), first).view(episodes, points, candidates, -1)
        hidden = pre.transpose(1, 2).reshape(episodes * candidates, points, -1)
        for layer in layers[1:]:
            grid = layer.reshape(episodes * candidates, *layer.shape[2:])
            hidden = torch.baddbmm(grid[:, -1:], hidden.relu(), grid[:, :-1])
        return hidden.view(episodes, candidates, points, -1)

    def layer_norms_sq(self, params: torch.Tensor, dim: int, n_way: int) -> torch.Tensor:
        """||[W_l; b_l]||^2 [..., layers] of params [..., P], float64."""
        return torch.stack([layer.double().square().sum((-2, -1)) for layer in self.layers(params, dim, n_way)], -1)

    def full_norm_sq(self, params: torch.Tensor, dim: int) -> torch.Tensor:
        return self.layer_norms_sq(params, dim, self.n_way_of(params.shape[-1], dim)).prod(-1)

    def head_fit(self, params: torch.Tensor, dim: int, n_way: int,
                 stats: dict[str, torch.Tensor]) -> HeadFit:
        first = self.layers(params, dim, n_way)[0]
        # weight / bias are views of the first layer: writing rows of `params` keeps them in step.
        return HeadFit(first[:, :dim], first[:, dim], stats=stats, model=self, params=params)

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        return self.logits(fit.params.unsqueeze(1), features).squeeze(1)


def with_ones(features: torch.Tensor) -> torch.Tensor:
    """[..., M, D] -> [..., M, D + 1] with a column of ones (the bias row of a layer)."""
    return torch.cat([features, features.new_ones(*features.shape[:-1], 1)], dim=-1)
