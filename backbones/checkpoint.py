"""Backbone checkpoints: one file that rebuilds the model (name + config + weights) and resumes training.

A checkpoint is a dict of tensors and plain data, read with `torch.load(weights_only=True)`:
`format`, `backbone`, `backbone_config`, `feature_dim`, `model` (state dict), `epoch`, `step`,
`dataset_fingerprint`, `config` (the run config), and, for resuming, `classifier`, `optimizer`,
`scheduler` and the training counters.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbones.registry import get_backbone
from episodes.errors import UserError, fail
from episodes.io import atomic_torch_save, file_sha256

FORMAT = "fewshot.checkpoint/1"
TRAINING_STATE_KEYS = ("model", "classifier", "optimizer", "scheduler")


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """Full sha256 of a checkpoint file (identifies the backbone in results files)."""
    return file_sha256(path)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, backbone: str,
                    backbone_config: dict[str, Any], **state: Any) -> Path:
    """Atomically write a checkpoint of `model` (weights copied to the CPU).

    Args:
        path: destination file.
        model: the backbone.
        backbone: its registered name.
        backbone_config: the keyword settings that rebuild it with `get_backbone`.
        **state: more entries (epoch, step, config, optimizer state, ...): tensors and plain data.
    """
    payload = {"format": FORMAT, "backbone": backbone, "backbone_config": dict(backbone_config),
               "feature_dim": int(model.feature_dim), "model": _to_cpu(model.state_dict()), **state}
    return atomic_torch_save(path, payload)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, tensors on the CPU; an unreadable or foreign file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise fail(f"The checkpoint {str(path)!r} does not exist.",
                   "Pass the checkpoint-best.pt that `fewshot pretrain` wrote in its output directory.")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch.save: zip, or legacy pickle
        raise fail(f"The checkpoint {str(path)!r} cannot be read: it is not a PyTorch file (neither the zip "
                   f"nor the pickle format that torch.save writes; it starts with {magic!r}).",
                   "Pass the checkpoint-best.pt that `fewshot pretrain` wrote in its output directory.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _refusal_detail(error)
        if "global" in detail.lower():  # a pickle naming classes or functions: loading could run code
            raise fail(f"The file {str(path)!r} holds Python objects other than tensors and plain "
                       f"data, so it is not loaded: it could run code ({detail}).",
                       "Use a checkpoint written by `fewshot pretrain`.") from None
        raise _unreadable(path, pickle.UnpicklingError(detail)) from None
    except Exception as error:  # a damaged file fails in many ways (EOFError, KeyError, zip errors)
        raise _unreadable(path, error) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise fail(f"The file {str(path)!r} is not a fewshot backbone checkpoint.",
                   "Pass the checkpoint-best.pt that `fewshot pretrain` wrote in its output directory.")
    return payload


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the backbone a checkpoint holds.

    Args:
        path: a checkpoint written by `fewshot pretrain`.
        device: where the model is placed.

    Returns:
        (model in eval mode, info): info holds everything but the weights and optimizer state, at
        least `backbone`, `backbone_config`, `feature_dim`, `epoch`, `step`,
        `dataset_fingerprint` and `config`.
    """
    payload = read_checkpoint(path)
    model = build_backbone(payload, path)
    load_weights(model, payload["model"], path)
    info = {key: value for key, value in payload.items() if key not in TRAINING_STATE_KEYS}
    return model.to(device).eval(), info


def build_backbone(payload: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """The (untrained) backbone a checkpoint describes; a bad description is a `UserError`."""
    name, config = payload.get("backbone"), payload.get("backbone_config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise fail(f"The checkpoint {str(path)!r} does not say which backbone it holds.",
                   "Use a checkpoint written by `fewshot pretrain`.")
    try:
        return get_backbone(name, **config)
    except UserError as error:
        raise fail(f"The checkpoint {str(path)!r} holds a backbone this version cannot build: {error}",
                   "Use a checkpoint written by this version of `fewshot pretrain`.") from None
    except (TypeError, ValueError) as error:
        raise fail(f"The checkpoint {str(path)!r} has an invalid backbone config {config!r} ({error}).",
                   "Use a checkpoint written by `fewshot pretrain`.") from None


def load_weights(model: nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """Copy a state dict into `model`; missing, extra or mis-shaped weights are a `UserError`."""
    if not isinstance(state_dict, dict):
        raise fail(f"The checkpoint {str(path)!r} has no model weights.",
                   "Use a checkpoint written by `fewshot pretrain`.")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
                  for key, value in expected.items()
                  if key in state_dict and getattr(state_dict[key], "shape", None) != value.shape]
    if missing or unexpected or mismatched:
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shapes {', '.join(mismatched[:3])}" if mismatched else ""]))
        raise fail(f"The weights in {str(path)!r} do not fit the architecture the checkpoint names "
                   f"({details}).", "The file was edited or comes from another architecture: use a "
                   "checkpoint written by `fewshot pretrain`, or pretrain again.")
    model.load_state_dict(state_dict)


def _refusal_detail(error: BaseException) -> str:
    """What torch's safe loader objected to, without its advice to load with `weights_only=False`
    (which would run the code it refused: never repeat it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))
            and "weights_only" not in line]
    return " ".join(kept) or "refused by the safe loader"


def _unreadable(path: Path, error: BaseException) -> UserError:
    return fail(f"The checkpoint {str(path)!r} cannot be read ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else 'no details'}); it is truncated, "
                "damaged or not a PyTorch file.",
                "Use another checkpoint, or resume/redo the pretraining that should have written it.")


def _to_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in state_dict.items()}
