"""lrbs: the learning-rate & batch-size lab. The engine; it never imports a UI.

The notebook API (`lrbs.find_lr`, `probe_batch`, `noise_scale`, `batch_sweep`,
`compare_schedules`, `recommend`, `lr_batch_map`: see lrbs/api.py) and the monitor for one's
own loop (`lrbs.monitor(model, optimizer)`, `Monitor`, `GrowingBatchSampler`: see
lrbs/monitor/) are imported on first use, so `import lrbs` stays light."""

from lrbs.core.errors import ConfigError, DataUnavailable, LrbsError

__all__ = [
    "ConfigError",
    "DataUnavailable",
    "GrowingBatchSampler",
    "LrbsError",
    "Monitor",
    "batch_sweep",
    "compare_schedules",
    "find_lr",
    "lr_batch_map",
    "monitor",
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
MONITOR = ("monitor", "Monitor", "GrowingBatchSampler")


def __getattr__(name: str):
    if name in API:
        from lrbs import api

        return getattr(api, name)
    if name in MONITOR:
        import lrbs.monitor as package  # a callable package: lrbs.monitor(model, optimizer)

        return package if name == "monitor" else getattr(package, name)
    raise AttributeError(f"module 'lrbs' has no attribute {name!r}")
