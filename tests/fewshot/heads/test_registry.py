"""Every registered head is found by name, validates its config and rejects bad inputs."""
import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import Queries, available_heads, get_head, head_class

BUILT_IN = ["logistic_regression", "prototype", "sgd"]


def test_built_in_heads_are_registered():
    assert set(BUILT_IN) <= set(available_heads())


def test_config_fields_come_from_keyword_arguments():
    head = get_head("sgd", lr=0.1)
    assert head.config.lr == 0.1 and head.config.steps == 100
    assert get_head("logistic_regression", C=2).config.C == 2.0      # ints widen to floats


def test_unknown_head_error_lists_the_registered_heads():
    with pytest.raises(UserError, match="Unknown head optimizer 'sdg'") as error:
        get_head("sdg")
    for name in BUILT_IN:
        assert name in str(error.value)


def test_unknown_or_mistyped_config_keys_are_errors():
    with pytest.raises(UserError, match="Unknown config key heads.sgd.learning_rate"):
        get_head("sgd", learning_rate=0.1)
    with pytest.raises(UserError, match="heads.sgd.optimizer"):
        get_head("sgd", optimizer="rmsprop")


def good_inputs():
    support = torch.nn.functional.normalize(
        torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0)), dim=2)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    return support, labels


def fit_kwargs(name: str, support: torch.Tensor) -> dict:
    """The generator, and for oracle heads well-formed queries (so the support checks are what fails)."""
    kwargs = {"generator": torch.Generator().manual_seed(0)}
    if head_class(name).oracle:
        features = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
        kwargs["queries"] = Queries(features, torch.tensor([[0, 1, 2, 0]] * 2))
    return kwargs


BAD_INPUTS = {
    "nan feature": lambda s, l: (s.index_fill(2, torch.tensor([1]), float("nan")), l),
    "inf feature": lambda s, l: (s.index_fill(1, torch.tensor([0]), float("-inf")), l),
    "label out of range": lambda s, l: (s, l.masked_fill(l == 2, 3)),
    "class without support": lambda s, l: (s, l.masked_fill(l == 2, 1)),
    "mismatched shapes": lambda s, l: (s, l[:, :-1]),
    "integer features": lambda s, l: ((s * 10).long(), l),
}


@pytest.mark.parametrize("name", available_heads())
@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_inputs_are_user_errors_for_every_head(name, bad):
    support, labels = BAD_INPUTS[bad](*good_inputs())
    with pytest.raises(UserError):
        get_head(name).fit(support, labels, 3, **fit_kwargs(name, good_inputs()[0]))


@pytest.mark.parametrize("name", available_heads())
def test_every_head_returns_batched_float32_heads_of_the_right_shapes(name):
    support, labels = good_inputs()
    fit = get_head(name).fit(support, labels, 3, **fit_kwargs(name, support))
    assert fit.weight.shape == (2, 8, 3) and fit.weight.dtype == torch.float32
    assert fit.bias.shape == (2, 3) and fit.bias.dtype == torch.float32
    for name, stat in fit.stats.items():   # per episode: [E], or [E, T] for the runtimes to T targets
        assert stat.shape == ((2, 11) if name == "runtimes" else (2,))


@pytest.mark.parametrize("name", [name for name in available_heads() if head_class(name).oracle])
def test_an_oracle_head_without_queries_is_a_clear_error(name):
    support, labels = good_inputs()
    with pytest.raises(UserError, match="oracle.*no queries were given"):
        get_head(name).fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
