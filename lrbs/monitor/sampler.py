"""A batch sampler whose batch size can change between epochs or at a step boundary.

    sampler = lrbs.GrowingBatchSampler(len(train_set), 32, seed=0)
    loader = DataLoader(train_set, batch_sampler=sampler)
    sampler.grow(128)            # from the next epoch on (now=True: from the next batch)

Each epoch is one permutation of the indices (seeded by seed and the epoch), cut into
consecutive batches, so every index is drawn once per epoch whatever the sizes. Listeners
(`on_change(fn)`, fn(old, new)) are called when a new size takes effect, before the first
batch at that size is handed out: the monitor rescales the learning rate there. A DataLoader
with worker processes draws a few batches ahead, so a growth at a step boundary
(`now=True`) reaches the listeners that many steps early; at an epoch boundary it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import Sampler

from lrbs.core.errors import ConfigError, positive_int


class GrowingBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        data: Sized | int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(data, int) and not isinstance(data, bool):
            n = data
        elif isinstance(data, Sized):
            n = len(data)
        else:
            raise ConfigError(
                f"GrowingBatchSampler takes a dataset or its length, got {type(data).__name__}"
            )
        self.n = positive_int("the dataset's length", n)
        self.batch_size = self._checked(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        self._pending: int | None = None
        self._now = False
        self._listeners: list[Callable[[int, int], None]] = []

    def _checked(self, batch: int) -> int:
        b = positive_int("the batch size", batch)
        if b > self.n:
            raise ConfigError(f"the batch size ({b}) is larger than the dataset ({self.n})")
        return b

    def on_change(self, fn: Callable[[int, int], None]) -> None:
        """Call fn(old, new) whenever a new batch size takes effect."""
        self._listeners.append(fn)

    def grow(self, new_batch: int, *, now: bool = False) -> None:
        """Use `new_batch` from the next epoch on, or with now=True from the next batch of this
        epoch (the indices left in this epoch's permutation are cut at the new size)."""
        self._pending, self._now = self._checked(new_batch), now

    @property
    def pending(self) -> int | None:
        """The size asked for that has not taken effect yet, or None."""
        return self._pending

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (the shuffle's seed), as with DistributedSampler."""
        self.epoch = int(epoch)

    def _apply(self) -> None:
        old, new = self.batch_size, self._pending
        self._pending, self._now = None, False
        if new is None or new == old:
            return
        self.batch_size = new
        for fn in self._listeners:
            fn(old, new)

    def __iter__(self) -> Iterator[list[int]]:
        self._apply()
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        self.epoch += 1
        pos = 0
        while pos < self.n:
            if self._now:
                self._apply()
            end = pos + self.batch_size
            if end > self.n and self.drop_last:
                return
            yield order[pos:end]
            pos = end

    def __len__(self) -> int:
        """Batches in an epoch at the size now in use (or the one pending for the next)."""
        b = self._pending or self.batch_size
        return self.n // b if self.drop_last else -(-self.n // b)
