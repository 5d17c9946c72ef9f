"""The training core: data, models, device, the one training loop, errors."""
