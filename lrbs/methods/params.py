"""What the meters take a gradient of: a model's trainable parameters, checked once."""

from __future__ import annotations

from torch import nn

from lrbs.core.errors import ConfigError, require


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require a gradient, in `model.parameters()` order; a ConfigError
    for anything but a torch module with at least one."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the meter needs a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    require(bool(params), "the model has no trainable parameters: there is no gradient to measure")
    return params
