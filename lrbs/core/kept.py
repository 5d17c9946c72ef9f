"""Datasets kept loaded in this process: a page hands over the arrays it has loaded, so a run
on them does not load them again (MNIST-1D takes seconds to generate)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from lrbs.core.data import Arrays, DataSpec, TensorData, load
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.stream import StreamData

_ARRAYS: OrderedDict[DataSpec, Arrays] = OrderedDict()  # the last datasets used, newest last
_ARRAYS_LOCK = threading.Lock()
KEEP_DATASETS = 2


def keep_arrays(spec: DataSpec, arrays: Arrays) -> None:
    """Hand over data already loaded (a page's cached arrays), so that a run on it does not
    load it again. (A workload's facts are not arrays, and are not kept.)"""
    if not isinstance(arrays, Arrays):
        return
    with _ARRAYS_LOCK:
        _ARRAYS[spec] = arrays
        _ARRAYS.move_to_end(spec)
        while len(_ARRAYS) > KEEP_DATASETS:
            _ARRAYS.popitem(last=False)


def load_data(setup: Setup) -> TensorData | StreamData:
    """The setup's data on its device, from the arrays kept (see `keep_arrays`) or loaded; a
    workload's, as it gives them."""
    if setup.workload is not None:
        return load_tensors(setup)
    with _ARRAYS_LOCK:
        arrays = _ARRAYS.get(setup.data)
    if arrays is None:
        arrays = load(setup.data)
        keep_arrays(setup.data, arrays)
    return load_tensors(setup, arrays)
