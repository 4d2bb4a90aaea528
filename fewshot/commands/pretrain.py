"""`fewshot pretrain`: supervised pretraining of the backbone on the base classes.

Runs as one process, or under `torchrun --nproc_per_node=N` with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from backbones import distributed
from backbones.features import extract_features
from backbones.pretrain import pretrain
from episodes import EpisodeSampler, FewShotDataset, Split, load_dataset
from episodes.errors import fail
from fewshot.commands.options import (add_run_options, command, console_for, load_run_config, resolve_device,
                                      resolve_output_dir)
from fewshot.config import Config, config_to_dict
from fewshot.heads import get_head

VAL_N_WAY, VAL_K_SHOT, VAL_N_QUERY = 5, 5, 15


def prototype_validation(split: Split, *, episodes: int, seed: int, batch_size: int,
                         device: str) -> Callable[[nn.Module], float]:
    """A cheap few-shot check of a backbone: prototype-head accuracy on `split`'s episodes.

    The episodes are 5-way 5-shot with 15 queries per class, fewer where the split is too small;
    they are sampled once, so every epoch is scored on the same episodes.

    Args:
        split: the validation classes.
        episodes: how many episodes.
        seed: seed of the episodes.
        batch_size: images per forward pass when extracting features.
        device: where features are extracted.

    Returns:
        A function from a backbone to its mean query accuracy in [0, 1].
    """
    smallest = int(split.class_counts().min()) if split.num_classes else 0
    n_way, n_query = min(VAL_N_WAY, split.num_classes), min(VAL_N_QUERY, smallest - VAL_K_SHOT)
    if n_way < 2 or n_query < 1:
        raise fail(f"The validation split ({split.num_classes} classes, {smallest} images in the smallest) "
                   f"is too small for {VAL_K_SHOT}-shot validation episodes.",
                   "Set pretrain.val_episodes=0 to pretrain without validation (the last epoch is kept).")
    sampled = EpisodeSampler(split.labels, n_way, VAL_K_SHOT, n_query, seed).sample(episodes)
    head = get_head("prototype")

    def validate(model: nn.Module) -> float:
        features = F.normalize(extract_features(model, split.images, batch_size=batch_size, device=device), dim=-1)
        fit = head.fit(features[sampled.support], sampled.support_labels, n_way,
                       generator=torch.Generator().manual_seed(seed))
        logits = head.predict(fit, features[sampled.query])
        return (logits.argmax(-1) == sampled.query_labels).float().mean().item()

    return validate


def run_pretraining(config: Config, dataset: FewShotDataset, output_dir: Path, device: str,
                    resume: bool = False, quiet: bool = False) -> Path:
    """Pretrain `config.backbone` on `dataset.base`, validating on `dataset.val`; the best checkpoint.

    Args:
        config: the run config (backbone, pretrain, features); pretrain.seed also seeds the validation
            episodes, so the pretraining config alone decides the checkpoint.
        dataset: the loaded dataset.
        output_dir: the run directory (checkpoint-last.pt, checkpoint-best.pt).
        device: torch device.
        resume: continue from `output_dir/checkpoint-last.pt`.
        quiet: no progress bar.
    """
    settings = config.pretrain
    validate = None
    if settings.val_episodes > 0:
        validate = prototype_validation(dataset.val, episodes=settings.val_episodes, seed=settings.seed,
                                        batch_size=config.features.batch_size, device=device)
    return pretrain(config.backbone, settings, dataset.base, dataset.val, output_dir=output_dir,
                    device=device, resume=resume, seed=settings.seed, run_config=config_to_dict(config),
                    validate=validate, progress=not quiet)


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its checkpoint-last.pt")


@command("pretrain", "pretrain the backbone on the base classes (writes checkpoint-best.pt)", _arguments)
def run_pretrain(args: argparse.Namespace) -> int:
    config = load_run_config(args)
    if args.seed is not None:  # for this command --seed also seeds the weights and data order
        config.pretrain.seed = args.seed
    if args.resume and not args.output_dir:
        raise fail("--resume continues an earlier run, but no run directory was given.",
                   "Pass --output-dir with the folder of the run to continue.")
    from fewshot.run.validate import check_config, check_dataset
    warnings = check_config(config, pretraining=True, evaluating=False)
    device = resolve_device(args)
    dataset = load_dataset(config.dataset.name, args.data_root, config.dataset.path, config.dataset.image_size)
    warnings += check_dataset(config, dataset)
    ranks, _ = distributed.join(device)
    for warning in warnings if ranks.is_main else []:
        console_for(args).print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    try:
        output_dir = resolve_output_dir(args, config.name, ranks)
        best = run_pretraining(config, dataset, output_dir, device, resume=args.resume, quiet=args.quiet)
    finally:
        distributed.leave(ranks)
    if ranks.is_main:
        console_for(args).print(f"best checkpoint: {best}")
    return 0
