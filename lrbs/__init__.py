"""lrbs: the learning-rate & batch-size lab. The engine; it never imports a UI.

The notebook API (`lrbs.find_lr`, `probe_batch`, `noise_scale`, `batch_sweep`,
`compare_schedules`, `recommend`, `lr_batch_map`: see lrbs/api.py) is imported on first use,
so `import lrbs` stays light."""

from lrbs.core.errors import ConfigError, DataUnavailable, LrbsError

__all__ = [
    "ConfigError",
    "DataUnavailable",
    "LrbsError",
    "batch_sweep",
    "compare_schedules",
    "find_lr",
    "lr_batch_map",
    "noise_scale",
    "probe_batch",
    "recommend",
]
__version__ = "0.1.0"
API = (
    "find_lr",
    "probe_batch",
    "noise_scale",
    "batch_sweep",
    "compare_schedules",
    "recommend",
    "lr_batch_map",
)


def __getattr__(name: str):
    if name in API:
        from lrbs import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrbs' has no attribute {name!r}")
