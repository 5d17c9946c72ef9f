"""lrbs inside the user's own training loop: `monitor(model, optimizer, ...)` returns a
`Monitor` (lrbs/monitor/core.py) that measures the noise scale and the sharpness as the loop
trains, records into the run history, advises on the batch and, with a `GrowingBatchSampler`,
grows it. Noise taps: lrbs/monitor/taps.py.

This package is itself callable, `lrbs.monitor(model, optimizer, ...)`, so the function and
the package can share the name `lrbs.monitor` (importing the package would otherwise put the
module in the function's place)."""

import sys
import types

from lrbs.monitor.core import KIND, Advice, Monitor, monitor
from lrbs.monitor.sampler import GrowingBatchSampler
from lrbs.monitor.taps import MicroBatchTap, SuccessiveTap

__all__ = [
    "KIND",
    "Advice",
    "GrowingBatchSampler",
    "MicroBatchTap",
    "Monitor",
    "SuccessiveTap",
    "monitor",
]


class CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Monitor:
        return monitor(*args, **kwargs)


sys.modules[__name__].__class__ = CallablePackage
