"""Which device trains: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lrbs.core.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA GPU is visible to torch")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("Apple MPS was asked for but is not available here")
    return torch.device(name)


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    name: str
    memory_bytes: int | None  # total device memory; None on the CPU

    def label(self) -> str:
        if self.memory_bytes:
            return f"{self.name} ({self.memory_bytes / 2**30:.0f} GiB)"
        return self.name


def describe(device: torch.device) -> DeviceInfo:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo("cuda", props.name, props.total_memory)
    if device.type == "mps":
        return DeviceInfo("mps", "Apple GPU (MPS)", None)
    from lrbs.core import threads as cpu_threads

    if cpu_threads.policy() == "auto":  # each run picks its count (lrbs.core.threads)
        return DeviceInfo("cpu", f"CPU, {os.cpu_count()} cores, threads chosen per run", None)
    threads = torch.get_num_threads()
    return DeviceInfo(
        "cpu", f"CPU, {threads} thread{'s' * (threads != 1)} of {os.cpu_count()}", None
    )


OOM_MESSAGES = (
    "out of memory",  # CUDA caching allocator, and most others
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "MPS backend out of memory",
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocator failure on any device, whatever type it was raised as."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


def release_memory(device: torch.device | None = None) -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if device is not None and device.type == "mps":
        torch.mps.empty_cache()


def peak_memory_bytes(device: torch.device) -> int | None:
    """The peak allocated memory of the current run, where the device can tell."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
