"""Should the built-in gradient-free heads evaluate their candidates through `EpisodeLoss`?
(issue 18: "use the same object wherever that keeps their tested trajectories and speed").

Side by side in one run, on the same synthetic episodes (bench/heads.py):

1. `guess_check` (`method: rejection`): its former in-head loss (one bmm with the draws on
   the right, float32, on torch's threads; the head before it moved onto `EpisodeLoss`)
   against `EpisodeLoss.losses` (one thread) on the same draws: seconds per guess, evaluation
   only. Then the head as it is against the same draws (same batches, same generator, the
   head's own `_draw`) through `EpisodeLoss.__call__`: whether the two give the same heads, on
   5-way 5-shot (no guess fits: both keep the lowest-loss guess) and on 2-way 1-shot (guesses
   fit: both take the first).
2. `pattern_search` (`variant: parallel`, blocks of `chunk_size` moves, raw loss) as it is, with
   its incremental O(S) candidate loss, against evaluating the same number of coordinate
   moves through `EpisodeLoss` (one full forward pass per candidate): seconds per evaluated
   candidate. The `EpisodeLoss` side counts only building the candidates and the loss call
   (no poll order, no acceptance), so it is the most favourable case for the public loss.

    python bench/episode_loss_reuse.py                     # 600 episodes, 5-way 5-shot, 640-d
    python bench/episode_loss_reuse.py --episodes 100      # a quicker run
    python bench/episode_loss_reuse.py --only pattern      # one comparison
"""
from __future__ import annotations

import time

import torch

from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_loss, with_bias_column
from fewshot.heads.episode_loss import EpisodeLoss, intra_op_threads
from fewshot.heads.protocol import FitProtocol
from heads import Episodes, bench_data, bench_parser, synthetic_episodes  # bench/heads.py, run as a script


def guess_check_via_episode_loss(head, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """guess_check's rejection loop (batches of `batch` guesses per active episode, budget
    `max_guesses`, stop at the first fitting guess) on `EpisodeLoss`: the best heads [E, P] and
    the evaluations [E]. Draws exactly what the head draws while the active sets agree."""
    c = head.config
    loss = EpisodeLoss(support, labels, n_way, protocol=FitProtocol(loss=c.loss), budget=c.max_guesses,
                       threshold=c.loss_threshold)
    rows = support.shape[2] + 1
    while True:
        ids = loss.active().nonzero().squeeze(1)
        if ids.numel() == 0:
            return loss.best, loss.evaluations
        draws = head._draw((len(ids), c.batch, rows, n_way), generator, support.device)
        loss(draws.view(len(ids), c.batch, -1), ids)


def timed_draws(head) -> list[float]:
    """Time the head's `_draw` calls into the returned one-element list (the draws are shared
    by both ways; their time is reported apart)."""
    spent, draw = [0.0], head._draw

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return draw(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
    head._draw = timed
    return spent


def former_losses(support: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """guess_check's own raw loss before it moved onto `EpisodeLoss` (draws [A, B, D + 1, N]): one
    bmm with the draws on the right, float32 cross-entropy (the head ran it on torch's threads)."""
    episodes, batch, rows, n_way = draws.shape
    logits = torch.bmm(with_bias_column(support), draws.permute(0, 2, 1, 3).reshape(episodes, rows, -1))
    logits = logits.view(episodes, support.shape[1], batch, n_way).transpose(1, 2)
    return linear_loss(logits, labels.unsqueeze(1)), linear_accuracy(logits, labels.unsqueeze(1)) == 1.0


def compare_guess_check(data: Episodes, args) -> None:
    """1. guess_check's former in-head loss against EpisodeLoss on the same draws; the head against
    the same draws through `EpisodeLoss.__call__` (its counting)."""
    support, labels, n_way = data.support, data.support_labels, data.n_way
    episodes, _, dim = support.shape
    print(f"\n1. guess_check (rejection, uniform, raw loss), batches of {args.batch} guesses per episode")
    generator, former, former_one, public, difference = torch.Generator().manual_seed(0), [], [], [], 0.0
    loss = EpisodeLoss(support, labels, n_way, protocol=FitProtocol(), budget=10 ** 9)
    every = torch.arange(episodes)
    for _ in range(args.repeats + 1):          # the first round warms up and is not counted
        draws = torch.rand(episodes, args.batch, dim + 1, n_way, generator=generator) * 2 - 1
        start = time.perf_counter()
        old, _ = former_losses(support, labels, draws)
        former.append(time.perf_counter() - start)
        start = time.perf_counter()
        with intra_op_threads(1):
            former_losses(support, labels, draws)
        former_one.append(time.perf_counter() - start)
        start = time.perf_counter()
        with intra_op_threads(loss.threads):
            new, _ = loss.losses(draws.view(episodes, args.batch, -1), every)
        public.append(time.perf_counter() - start)
        difference = max(difference, float((new - old.double()).abs().max()))
    guesses = episodes * args.batch
    best = {name: 1e6 * min(times[1:]) / guesses for name, times in
            (("former", former), ("former_one", former_one), ("public", public))}
    print(f"   evaluation only, best of {args.repeats}: former in-head loss {best['former']:.2f} us / guess (torch "
          f"threads: {torch.get_num_threads()}), {best['former_one']:.2f} on one thread; EpisodeLoss.losses "
          f"{best['public']:.2f} us / guess (one thread): EpisodeLoss / former = {best['public'] / best['former']:.2f} "
          f"(one thread both: {best['public'] / best['former_one']:.2f}); max diff {difference:.1e}")
    two_way = synthetic_episodes(episodes, n_way=2, k_shot=1, dim=dim, noise=1.0, seed=1)
    for what, part in ((f"{n_way}-way 5-shot, no guess fits", data), ("2-way 1-shot, guesses fit", two_way)):
        head = get_head("guess_check", max_guesses=args.guesses, batch=args.batch)
        start = time.perf_counter()
        fit = head.fit(part.support, part.support_labels, part.n_way, generator=torch.Generator().manual_seed(0))
        as_is = time.perf_counter() - start
        start = time.perf_counter()
        best, _ = guess_check_via_episode_loss(head, part.support, part.support_labels, part.n_way,
                                               torch.Generator().manual_seed(0))
        via = time.perf_counter() - start
        heads = torch.cat([fit.weight, fit.bias[:, None]], dim=1).flatten(1)
        same = int((heads == best).all(dim=1).sum())
        print(f"   the head, {what}: {as_is:.2f} s; the same draws through EpisodeLoss.__call__ {via:.2f} s; "
              f"same heads in {same} of {episodes} episodes; fitted {int((fit.stats['failed'] == 0).sum())}")


def compare_pattern(data: Episodes, args) -> None:
    """2. pattern search's incremental candidate loss against full forward passes through EpisodeLoss."""
    support, labels, n_way = data.support, data.support_labels, data.n_way
    head = get_head("pattern_search", variant="parallel", chunk_size=args.chunk, max_evaluations=args.evaluations,
                    loss_threshold=1e-9)
    start = time.perf_counter()
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(0))
    as_is = time.perf_counter() - start
    per_incremental = as_is / float(fit.stats["evaluations"].sum())
    # The same number of calls, each a block of `chunk` coordinate moves from the fitted heads.
    episodes, _, dim = support.shape
    size = (dim + 1) * n_way
    params = torch.cat([fit.weight, fit.bias[:, None]], dim=1).flatten(1)
    loss = EpisodeLoss(support, labels, n_way, protocol=FitProtocol(), budget=10 ** 9, threshold=1e-9)
    generator = torch.Generator().manual_seed(1)
    calls = max(1, args.evaluations // args.chunk)
    rows = torch.arange(episodes)[:, None]
    start = time.perf_counter()
    for _ in range(calls):
        moves = torch.randint(0, 2 * size, (episodes, args.chunk), generator=generator)
        candidates = params[:, None].repeat(1, args.chunk, 1)
        candidates[rows, torch.arange(args.chunk), moves >> 1] += torch.where(moves & 1 == 1, -0.5, 0.5)
        loss(candidates)
    via = time.perf_counter() - start
    per_full = via / (calls * episodes * args.chunk)
    print(f"\n2. pattern_search (parallel, blocks of {args.chunk}, {args.evaluations} evaluations per episode): "
          f"as it is {as_is:.2f} s ({1e6 * per_incremental:.2f} us / candidate, all of the search counted); "
          f"candidates through EpisodeLoss {via:.2f} s ({1e6 * per_full:.2f} us / candidate: building them and the loss calls): "
          f"EpisodeLoss / incremental = {per_full / per_incremental:.1f}")


COMPARISONS = {"guess_check": compare_guess_check, "pattern": compare_pattern}


def main() -> None:
    parser = bench_parser(__doc__, COMPARISONS)
    parser.add_argument("--guesses", type=int, default=2000, help="guess_check's max_guesses")
    parser.add_argument("--batch", type=int, default=100, help="guess_check's guesses per batch")
    parser.add_argument("--evaluations", type=int, default=4096, help="pattern search's budget per episode")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each way; the fastest counts")
    parser.add_argument("--chunk", type=int, default=256, help="pattern search's block (chunk_size)")
    args = parser.parse_args()
    data = bench_data(args)
    for name in args.only or list(COMPARISONS):
        COMPARISONS[name](data, args)


if __name__ == "__main__":
    main()
