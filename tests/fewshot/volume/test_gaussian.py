"""The one Gaussian-conditioning helper against the precision-matrix formulas, and Matheron's draw."""
import torch

from fewshot.volume.gaussian import LogitPrior, conditional, draw_given_first


def _gram(points: int = 6, dim: int = 9, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, points, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x @ x.transpose(1, 2) + 0.5


def test_gain_and_covariance_match_the_precision_matrix():
    """Full rank: z_T | z_G has covariance (Q_TT)^-1 and gain -(Q_TT)^-1 Q_TG, Q = K^-1."""
    gram = _gram()
    target, given = torch.tensor([4, 1]), torch.tensor([0, 2, 3, 5])
    gain, covariance = conditional(gram, target, given)
    precision = torch.linalg.inv(gram)
    q_tt = precision[:, target][:, :, target]
    torch.testing.assert_close(covariance, torch.linalg.inv(q_tt))
    torch.testing.assert_close(gain, -torch.linalg.inv(q_tt) @ precision[:, target][:, :, given])


def test_a_duplicated_given_point_changes_nothing():
    """Singular K (a point twice among the given ones): the pseudo-inverse gives the same conditional."""
    gram = _gram()
    target, given = torch.tensor([5]), torch.tensor([0, 1, 2])
    gain, covariance = conditional(gram, target, given)
    dup = torch.tensor([0, 1, 2, 6])
    bigger = torch.cat([gram, gram[:, :, 2:3]], 2)
    bigger = torch.cat([bigger, bigger[:, 2:3]], 1)                 # point 6 = point 2
    gain_dup, covariance_dup = conditional(bigger, target, dup)
    torch.testing.assert_close(covariance_dup, covariance)
    torch.testing.assert_close(gain_dup[:, :, :2], gain[:, :, :2])
    torch.testing.assert_close(gain_dup[:, :, 2] + gain_dup[:, :, 3], gain[:, :, 2])


def test_matheron_draws_have_the_conditional_mean_and_covariance():
    x = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prior = LogitPrior.from_features(x, scale=1.0, bias_scale=0.5)
    gram = prior.factor @ prior.factor.transpose(1, 2)
    observed = torch.tensor([[0.3, -1.0]], dtype=torch.float64).view(1, 1, 2, 1).expand(1, 20000, 2, 1)
    noise = torch.randn(1, 20000, 4, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    draws = draw_given_first(prior, observed, noise)[0, :, :, 0]                  # [C, 2]
    gain, covariance = conditional(gram, torch.tensor([2, 3]), torch.tensor([0, 1]))
    mean = (gain[0] @ observed[0, 0, :, 0])
    torch.testing.assert_close(draws.mean(0), mean, atol=4 * covariance[0].diagonal().max().sqrt() / 140, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), covariance[0], atol=0.05 * float(covariance[0].abs().max()), rtol=0)
