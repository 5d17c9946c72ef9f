import pytest
import torch

from lrbs.core.errors import ConfigError
from lrbs.core.models import BOTTLENECK, ModelSpec, build_model, count_parameters


@pytest.mark.parametrize(
    "name, shape",
    [
        ("logreg", (54,)),
        ("mlp", (1, 28, 28)),
        ("cnn", (1, 28, 28)),
        ("cnn", (3, 32, 32)),
        ("cnn", (1, 40)),
        ("bottleneck", (54,)),
    ],
)
def test_models_map_inputs_to_class_scores(name, shape):
    m = build_model(ModelSpec(name), shape, 7)
    assert m(torch.randn(5, *shape)).shape == (5, 7)


def test_parameter_counts_match_the_architectures():
    assert count_parameters(build_model(ModelSpec("logreg"), (40,), 10)) == 40 * 10 + 10
    mlp = build_model(ModelSpec("mlp", hidden=(256,)), (1, 28, 28), 10)
    assert count_parameters(mlp) == 784 * 256 + 256 + 256 * 10 + 10
    sizes = [54, *BOTTLENECK, 7]
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert count_parameters(build_model(ModelSpec("bottleneck"), (54,), 7)) == expected


def test_init_follows_torchs_default_bounds():
    m = build_model(ModelSpec("logreg"), (100,), 3, seed=5)
    w = m[1].weight
    bound = 1 / 100**0.5  # kaiming_uniform with a=sqrt(5) gives 1/sqrt(fan_in)
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_cnn_refuses_tabular_data():
    with pytest.raises(ConfigError, match="use an MLP"):
        build_model(ModelSpec("cnn"), (54,), 7)


@pytest.mark.parametrize(
    "kwargs", [dict(name="resnet"), dict(hidden=(0,)), dict(dropout=1.0), dict(hidden=(-3, 4))]
)
def test_bad_model_specs(kwargs):
    with pytest.raises(ConfigError):
        ModelSpec(**kwargs)
