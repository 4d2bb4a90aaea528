"""Finite-width volumes: multilevel splitting with elliptical slice moves over a network head's weights.

A one-hidden-layer ReLU head of width H, logits f(x) = W2^T relu(W1^T x + b1) + b2, under the
Gaussian prior of the NNGP (`fewshot.volume.nngp`, the same four variances): W1 ~ N(0, s1^2),
b1 ~ N(0, b1^2), W2 ~ N(0, s2^2 / H), b2 ~ N(0, b2^2). Everything the volume lab asks (does the
head fit the support set, what does it predict on the queries) depends on the first layer only
through its pre-activations U = X W1 + b1 [P, H] over the episode's P points, whose H columns are
independent N(0, K0), K0 = s1^2 X X^T + b1^2: the sampler works on U (whitened like the logits
of the linear lab, `LogitPrior` with H "classes") and on the read-out (W2, b2), drawn exactly.
This is sampling over all weights: the part of W1 no point sees is independent of the rest and
never matters. With `hidden=False` the features are the inputs themselves and there is no first
layer: a linear head z = X W + b, W ~ N(0, s^2), sampled in weight space (the cross-check
against the logit-space `split_volume`).

The score is the linear lab's: the minimum over support points of the normalized margin
(z_y - max_{n != y} z_n) / sigma_i, sigma_i^2 = 2 Var z_i (exact at any width for depth 1:
Var z_i = s2^2 K0_ii / 2 + b2^2). Splitting is `split_volume`'s (Brehier et al. 2016: the k-th
smallest score is the level, the killed chains restart from uniformly chosen survivors); each
sweep moves
- the read-out given the hidden features: the constraints are linear in (W2, b2), so the
  feasible set on the ellipse is exact arcs (`feasible_arc_sample`, as LIN-ESS);
- the pre-activations U given the read-out: relu makes the score non-linear in U, so the
  ellipse takes elliptical slice sampling's shrinking bracket on "score >= level"
  (`fewshot.volume.loss_level.bracket_angles`, the generic move).
Depth 1 only: a second hidden layer has no whitened form (its H x H weights would be the state).

Example:
    >>> net = NetworkPrior.relu(points, width=64, nngp=NNGPSettings())     # points [E, P, D]
    >>> result = split_network(net, net.constraints(labels, n_way), n_way, streams, settings)
    >>> result.log10, result.se
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from episodes.errors import fail
from fewshot.volume.gaussian import LogitPrior, check_features, draw_given_first
from fewshot.volume.lin_ess import Constraints, feasible_arc_sample
from fewshot.volume.loss_level import bracket_angles
from fewshot.volume.nngp import NNGPSettings
from fewshot.volume.splitting import MIN_SHIFT, SAMPLER_DTYPE, SplittingSettings, restart_sources, combine_runs
from fewshot.volume.streams import Streams

__all__ = ["NetworkPrior", "NetworkSplit", "split_network", "network_query_accuracy"]
TWO_PI = 2 * math.pi
QUERY_CHUNK = 1 << 23      # pre-activations drawn at once for the queries (64 MB of float64)


@dataclass
class NetworkPrior:
    """The weight prior of a head over the P points of each episode, in the sampler's coordinates.

    Args:
        pre: the prior of the first layer's pre-activations U [P, H] (columns iid N(0, K0)); None for a
            linear head (no first layer).
        inputs: [E, P, D] the fixed features of a linear head (None with a first layer).
        width: H (hidden units), or D for a linear head.
        readout_scale: std of each read-out weight (s2 / sqrt(H); s for a linear head).
        bias_scale: std of the read-out bias.
    """

    pre: LogitPrior | None
    inputs: torch.Tensor | None
    width: int
    readout_scale: float
    bias_scale: float

    @classmethod
    def relu(cls, points: torch.Tensor, *, width: int, nngp: NNGPSettings) -> "NetworkPrior":
        """The one-hidden-layer ReLU head of width `width` over points [E, P, D], variances of `nngp`."""
        if width < 1:
            raise fail(f"The network head's width is {width!r}, but must be >= 1.", "Set volume.width to 1 or more.")
        if nngp.depth != 1:
            raise fail(f"Weight-space volumes support depth 1 only, but volume.nngp.depth is {nngp.depth!r}.",
                       "Set volume.nngp.depth to 1 for volume.model: mlp (depth 2 runs at infinite width: model: linear, "
                       "prior: nngp).")
        check_features(points)
        x = points.double()
        gram = nngp.s1 ** 2 * (x @ x.transpose(1, 2)) + nngp.b1 ** 2
        return cls(LogitPrior.from_kernel(gram), None, width, nngp.s2 / math.sqrt(width), nngp.b2)

    @classmethod
    def linear(cls, points: torch.Tensor, *, scale: float, bias_scale: float) -> "NetworkPrior":
        """A linear head z = X W + b, W ~ N(0, scale^2), b ~ N(0, bias_scale^2), over points [E, P, D]."""
        check_features(points)
        return cls(None, points.double(), points.shape[2], scale, bias_scale)

    @property
    def points(self) -> int:
        """P, the points of each episode."""
        return (self.inputs if self.pre is None else self.pre.factor).shape[1]

    def take(self, index: torch.Tensor) -> "NetworkPrior":
        """The priors of episodes `index`."""
        return NetworkPrior(None if self.pre is None else self.pre.take(index),
                            None if self.inputs is None else self.inputs[index], self.width, self.readout_scale,
                            self.bias_scale)

    def first(self, count: int) -> "NetworkPrior":
        """The prior over each episode's first `count` points (e.g. the support of a support + query prior)."""
        if self.pre is None:
            return NetworkPrior(None, self.inputs[:, :count], self.width, self.readout_scale, self.bias_scale)
        factor = self.pre.factor[:, :count]
        return NetworkPrior(LogitPrior.from_kernel(factor @ factor.transpose(1, 2)), None, self.width,
                            self.readout_scale, self.bias_scale)

    def variance(self) -> torch.Tensor:
        """Var z_i [E, P] of each point's logit of a class under the prior (exact at any width)."""
        if self.pre is None:
            square = (self.inputs ** 2).sum(2)
        else:
            square = self.width * self.pre.variance / 2             # E relu(u)^2 = Var u / 2, H units
        return self.readout_scale ** 2 * square + self.bias_scale ** 2

    def constraints(self, labels: torch.Tensor, n_way: int) -> Constraints:
        """Point i must be classified as labels [E, P]; margins normalized as in the linear lab."""
        variance = self.variance()
        if labels.shape != variance.shape or bool(((labels < 0) | (labels >= n_way)).any()):
            raise ValueError(f"labels {tuple(labels.shape)} must be one class in [0, {n_way}) per point "
                             f"{tuple(variance.shape)}")
        if bool((variance <= 0).any()):
            raise fail("A point has all-zero features and the network prior has no biases, so its logits are all 0 "
                       "and no head classifies it: the volume is undefined.",
                       "Drop all-zero feature vectors, or give the prior a bias (volume.nngp.b1 or b2 > 0).")
        return Constraints(labels.long(), (2 * variance).sqrt())

    def draw_hidden(self, chains: int, streams: Streams, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """Prior draws of the pre-activations U [E', C, P, H] of problems `index` (None: no first layer)."""
        if self.pre is None:
            return None
        return self.pre.sample(streams.randn((chains, self.points, self.width), index, dtype))

    def features(self, hidden: torch.Tensor | None) -> torch.Tensor:
        """The read-out's inputs [E', C or 1, P, H]: relu(U), or the fixed inputs of a linear head."""
        return self.inputs.unsqueeze(1) if hidden is None else hidden.relu()

    def logits(self, features: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
        """Logits [E', C, P, N] of features [E', C, P, H] and standardized read-out [E', C, H + 1, N]."""
        return self.readout_scale * (features @ readout[:, :, :-1]) + self.bias_scale * readout[:, :, -1:]


@dataclass
class NetworkSplit:
    """As `SplitResult`, with the final chains' weights: `hidden` U [E, R, C, P, H] (None for a linear
    head) and `readout` [E, R, C, H + 1, N] (standardized: times readout_scale, bias row times bias_scale)."""

    log10: torch.Tensor
    se: torch.Tensor
    run_log10: torch.Tensor
    levels: torch.Tensor
    stalled: torch.Tensor
    inside: torch.Tensor
    tied: torch.Tensor
    hidden: torch.Tensor | None
    readout: torch.Tensor


def _sweep(net: NetworkPrior, hidden: torch.Tensor | None, readout: torch.Tensor, shift: torch.Tensor,
           constraints: Constraints, streams: Streams, index: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One move of the read-out (exact arcs) and one of the pre-activations (shrinking bracket), keeping
    score >= -shift [E'] per problem."""
    chains = readout.shape[1]
    features = net.features(hidden)
    proposal = streams.randn(tuple(readout.shape[1:]), index, readout.dtype)
    t = feasible_arc_sample(constraints.values(net.logits(features, readout)),
                            constraints.values(net.logits(features, proposal)), shift[:, None].expand(-1, chains),
                            streams.rand((chains,), index, readout.dtype))[..., None, None]
    readout = readout * t.cos() + proposal * t.sin()
    if hidden is None:
        return hidden, readout
    fresh = net.draw_hidden(chains, streams, index, hidden.dtype)

    def accept(t: torch.Tensor, problem: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        t = t[:, None, None]
        moved = hidden[problem, chain] * t.cos() + fresh[problem, chain] * t.sin()               # [k, P, H]
        logits = net.logits(moved.relu().unsqueeze(1), readout[problem, chain].unsqueeze(1))     # one chain each
        some = Constraints(constraints.target[problem], constraints.sigma[problem])
        return some.score(logits).squeeze(1) >= -shift[problem]
    whole = torch.zeros(*readout.shape[:2], 1, dtype=readout.dtype)
    t = bracket_angles(whole, whole + TWO_PI, accept, streams, index)[..., None, None]
    return hidden * t.cos() + fresh * t.sin(), readout


def split_network(net: NetworkPrior, constraints: Constraints, n_way: int, streams: Streams,
                  settings: SplittingSettings, dtype: torch.dtype = SAMPLER_DTYPE) -> NetworkSplit:
    """Estimate log10 P(the head classifies every constrained point as its target) per episode, in weight space.

    Args:
        net: the weight prior over E episodes' points (`NetworkPrior`).
        constraints: the targets of those points (`NetworkPrior.constraints`).
        n_way: classes.
        streams: E * settings.repeats streams, episode-major (as `split_volume`).
        settings: chains, repeats, levels, sweeps (`block_size` is unused: the moves are whole layers).
        dtype: of the chains.
    """
    settings.check("volume")
    repeats, chains = settings.repeats, settings.chains
    episodes = constraints.target.shape[0]
    problems = episodes * repeats
    log_p = torch.zeros(problems, dtype=torch.float64)
    levels = torch.zeros(problems, dtype=torch.long)
    stalled, tied = torch.zeros(problems, dtype=torch.bool), torch.zeros(problems, dtype=torch.bool)
    inside = torch.zeros(problems, chains, dtype=torch.bool)
    kill = chains - min(chains - 1, max(1, math.ceil(settings.level_fraction * chains)))
    index = torch.arange(problems)
    rows = index // repeats
    net, constraints = net.take(rows), constraints.take(rows)
    if net.pre is not None:
        net.pre.factor = net.pre.factor.to(dtype)
    else:
        net.inputs = net.inputs.to(dtype)
    constraints.sigma = constraints.sigma.to(dtype)
    hidden = net.draw_hidden(chains, streams, index, dtype)
    readout = streams.randn((chains, net.width + 1, n_way), index, dtype)
    kept_hidden = None if hidden is None else torch.zeros(problems, *hidden.shape[1:], dtype=torch.float64)
    kept_readout = torch.zeros(problems, *readout.shape[1:], dtype=torch.float64)
    score = constraints.score(net.logits(net.features(hidden), readout)).double()
    while index.numel():
        value = score.kthvalue(kill, dim=1).values                 # Z_q: the k-th smallest score
        final = value >= -MIN_SHIFT                                 # this close to the cone is the cone
        alive = torch.where(final.unsqueeze(1), score >= 0, score > value.unsqueeze(1))
        shift = torch.where(final, 0.0, -value).to(dtype)
        log_p[index] += alive.double().mean(1).log()
        levels[index] += 1
        dead = ~alive.any(1) & ~final                               # every chain tied: P = 0, flagged
        tied[index[dead]] = True
        out = (levels[index] >= settings.max_levels) & ~final & ~dead
        stalled[index[out]] = True
        done = final | out | dead
        source = restart_sources(alive, streams.rand((chains,), index, dtype))
        readout = readout.gather(1, source[..., None, None].expand_as(readout))
        hidden = None if hidden is None else hidden.gather(1, source[..., None, None].expand_as(hidden))
        moves = torch.where(final, settings.burn_in, settings.sweeps).masked_fill(~alive.any(1), 0)
        for step in range(int(moves.max())):
            sub = (moves > step).nonzero().squeeze(1)
            moved_hidden, readout[sub] = _sweep(net.take(sub), None if hidden is None else hidden[sub], readout[sub],
                                                shift[sub], constraints.take(sub), streams, index[sub])
            if hidden is not None:
                hidden[sub] = moved_hidden
        score = constraints.score(net.logits(net.features(hidden), readout)).double()
        if bool(done.any()):
            finished = index[done]
            kept_readout[finished] = readout[done].double()
            if hidden is not None:
                kept_hidden[finished] = hidden[done].double()
            inside[finished] = (score[done] >= 0) & alive[done].any(1, keepdim=True)
            going = (~done).nonzero().squeeze(1)
            index, score, readout = index[going], score[going], readout[going]
            hidden = None if hidden is None else hidden[going]
            net, constraints = net.take(going), constraints.take(going)
    run_log10 = (log_p / math.log(10)).view(episodes, repeats)
    log10, se = combine_runs(run_log10)
    shape = (episodes, repeats)
    return NetworkSplit(log10, se, run_log10, levels.view(shape), stalled.view(shape).any(1), inside.view(*shape, chains),
                        tied.view(shape).any(1), None if kept_hidden is None else kept_hidden.view(*shape, *hidden.shape[1:]),
                        kept_readout.view(*shape, *readout.shape[1:]))


def network_query_accuracy(net: NetworkPrior, fit: NetworkSplit, shots: int, query_labels: torch.Tensor,
                           streams: Streams) -> torch.Tensor:
    """Query accuracy [E, R, C] of each final chain of `fit` (NaN outside the fitting region).

    Args:
        net: the prior over support + query points (the first `shots` are the support `fit` ran on).
        fit: `split_network` on the support prior (`net.first(shots)`).
        query_labels: [E, Q].
        streams: one stream per episode: the queries' pre-activations are drawn given the support's
            (Matheron's rule, `draw_given_first`), exact in distribution.
    """
    episodes, repeats, chains = fit.inside.shape
    readout = fit.readout.flatten(1, 2)                                           # [E, R * C, H + 1, N]
    # Chains in chunks of about QUERY_CHUNK numbers of pre-activations (H = 1024 and 80 points would
    # otherwise hold gigabytes); a stream's draws in consecutive chunks are its draws in one piece.
    step = max(1, QUERY_CHUNK // (episodes * net.points * net.width))
    correct = []
    for start in range(0, repeats * chains, step):
        part = slice(start, min(repeats * chains, start + step))
        if net.pre is None:
            features = net.inputs[:, shots:].unsqueeze(1)
        else:
            noise = streams.randn((part.stop - part.start, net.points, net.width))
            features = draw_given_first(net.pre, fit.hidden.flatten(1, 2)[:, part], noise).relu()
        predicted = net.logits(features, readout[:, part]).argmax(-1)
        correct.append((predicted == query_labels[:, None]).double().mean(-1))
    correct = torch.cat(correct, 1).view(episodes, repeats, chains)
    return correct.masked_fill(~fit.inside, math.nan)
