"""Regression with a mean-squared-error loss: an MLP on scikit-learn's diabetes set.

The diabetes set (442 patients, 10 features, a disease-progression score) ships inside
scikit-learn, so this runs offline. Features and target are standardised with the training
split's mean and spread, so an MSE of 1.0 is "no better than predicting the mean" and the
metric, R², is 1 - MSE / variance on each batch. No accuracy: this is not a classification.

Defaults: 80/20 split with seed 0, MLP 10-64-64-1 with ReLU, `loss()` = MSE, the
experiment's optimizer. `data()` returns `(x, y)` tensor pairs (the in-memory fast path).

    python -m lrbs lr-find --workload examples/regression_mse.py --json
"""

import torch
from sklearn.datasets import load_diabetes
from torch import nn

SEED = 0


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )


def data():
    x, y = load_diabetes(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32).unsqueeze(1)  # [N, 1], as the model's output
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    n_train = int(0.8 * len(x))
    tr, va = order[:n_train], order[n_train:]
    x_mean, x_std = x[tr].mean(0), x[tr].std(0)
    y_mean, y_std = y[tr].mean(), y[tr].std()
    x, y = (x - x_mean) / x_std, (y - y_mean) / y_std
    return (x[tr], y[tr]), (x[va], y[va])


def loss():
    return nn.MSELoss()


def metric(output: torch.Tensor, target: torch.Tensor) -> float:
    """R² on the batch: the share of the target's variance the model explains."""
    residual = ((output - target) ** 2).sum()
    total = ((target - target.mean()) ** 2).sum()
    return float(1 - residual / total)
