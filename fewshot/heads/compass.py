"""The arithmetic of compass search on a linear head, shared by the `pattern_search` head.

Keyed poll orders (any position of any poll computable on its own) and the O(S) loss of a
coordinate move from per-episode terms; `fewshot/heads/pattern_search.py` explains both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_MASK31 = (1 << 31) - 1
_FEISTEL_ROUNDS = 4
_SAFE_EXPONENT = 30.0  # radius * max|x| above this: compute in float64 (exp range)


def _mix(value: torch.Tensor) -> torch.Tensor:
    """A 31-bit integer hash; products stay below 2**58, so int64 never overflows."""
    value = value & _MASK31
    value = ((value ^ (value >> 16)) * 0x45D9F3B) & _MASK31
    value = ((value ^ (value >> 16)) * 0x45D9F3B) & _MASK31
    return value ^ (value >> 16)


def episode_keys(episodes: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Per-episode keys [E] of the poll orders: the only random draw pattern search makes."""
    keys = torch.randint(0, _MASK31, (episodes,), generator=generator, device=generator.device)
    return keys.to(device)


def poll_side(candidates: int) -> int:
    """Side of the square [0, side^2) that `poll_order` permutes; side^2 >= candidates."""
    return max(2, math.isqrt(max(candidates - 1, 0)) + 1)


def poll_order(keys: torch.Tensor, polls: torch.Tensor, positions: torch.Tensor, side: int) -> torch.Tensor:
    """Values [A, C] at `positions` of each episode's poll: a keyed bijection of [0, side^2).

    A Feistel network with modular addition on [0, side)^2; values >= 2P are skipped by the
    search, so the visited candidates are a random permutation of the 2P moves.

    Args:
        keys: [A] episode keys from `episode_keys`.
        polls: [A] poll counters (0 for an episode's first poll).
        positions: [A, C] positions in [0, side^2).
        side: from `poll_side`.
    """
    rounds = torch.arange(1, _FEISTEL_ROUNDS + 1, device=keys.device) * 0x6A09E667
    poll_key = _mix(keys * 0x9E3779B + _mix(polls + 0x3C6EF372))
    round_keys = _mix(poll_key.unsqueeze(1) + rounds).unsqueeze(2)                  # [A, R, 1]
    left, right = positions // side, positions % side
    for r in range(_FEISTEL_ROUNDS):
        mixed = (torch.add(round_keys[:, r], right, alpha=0x2545F49) & _MASK31) >> 7
        left, right = right, (left + mixed) % side
    return torch.add(right, left, alpha=side)


def state_terms(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The per-episode terms that make a move's loss O(S), and the loss at `logits`.

    Args:
        logits: [..., N, S] (column-major: a column is contiguous).
        labels: [..., S].

    Returns:
        others [..., N, S]: sum over columns j != n of exp(logit_j - shift), as prefix plus
            suffix sums (a total minus one term would cancel);
        shift [..., S]: the largest logit of each example;
        margin [...]: sum over examples of shift - logit of the label (>= 0, no cancellation);
        loss [...]: the mean cross-entropy, as `move_loss` of column 0 left as it is.
    """
    shift = logits.amax(dim=-2)
    scaled = (logits - shift.unsqueeze(-2)).exp()
    zero = torch.zeros_like(scaled[..., :1, :])
    before = torch.cat([zero, scaled.cumsum(dim=-2)[..., :-1, :]], dim=-2)
    after = torch.cat([scaled.flip(-2).cumsum(dim=-2)[..., :-1, :].flip(-2), zero], dim=-2)
    others = before + after
    margin = (shift - logits.gather(-2, labels.unsqueeze(-2)).squeeze(-2)).sum(dim=-1)
    return others, shift, margin, move_loss(logits[..., 0, :], others[..., 0, :], shift, margin)


def move_loss(column: torch.Tensor, others: torch.Tensor, shift: torch.Tensor,
              margin: torch.Tensor) -> torch.Tensor:
    """Mean support cross-entropy [...] once column n of the logits is `column`.

    Args:
        column: [..., S] the new logits of column n.
        others: [..., S] `state_terms` others of column n.
        shift: [..., S] `state_terms` shift.
        margin: [...] `state_terms` margin after the move: for a move of (d, n) by s, the
            current margin - s * T[d, n] (the label logits of class n rise by s * x_d).
    """
    return ((others + (column - shift).exp()).log().sum(dim=-1) + margin) / column.shape[-1]


@dataclass(frozen=True)
class SearchProblem:
    """The fixed inputs of a batch of searches (see `prepare_problem`)."""

    columns: torch.Tensor      # [E * (D + 1), S] feature d of every shot; d = D is 1 (the bias)
    dead: torch.Tensor         # [E * (D + 1)] feature d is 0 on every shot: its moves change nothing
    labels: torch.Tensor       # [E, S]
    class_sums: torch.Tensor   # [E * (D + 1) * N] T[e, d, n] = sum of x_d over the shots of class n
    dim: int
    n_way: int
    shots: int


def prepare_problem(support: torch.Tensor, labels: torch.Tensor, n_way: int, radius: float) -> SearchProblem:
    """Lay out the features by dimension (plus a row of ones for the bias) and their class sums.

    Computes in float64 when the input is float64 or a move could overflow exp in float32.

    Args:
        support: [E, S, D]; labels: [E, S] int64; n_way: classes; radius: the initial radius.
    """
    episodes, shots, dim = support.shape
    largest = max(abs(float(v)) for v in support.aminmax()) if support.numel() else 0.0
    wide = support.dtype == torch.float64 or radius * largest > _SAFE_EXPONENT
    dtype = torch.float64 if wide else torch.float32
    columns = torch.ones(episodes, dim + 1, shots, dtype=dtype, device=support.device)
    columns[:, :dim] = support.transpose(1, 2)
    class_sums = torch.bmm(columns, torch.nn.functional.one_hot(labels, n_way).to(dtype))
    return SearchProblem(columns=columns.view(-1, shots), dead=(columns == 0).all(dim=2).view(-1),
                         labels=labels, class_sums=class_sums.view(-1),
                         dim=dim, n_way=n_way, shots=shots)
