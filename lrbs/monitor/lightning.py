"""The monitor in a Lightning `Trainer`: `LrbsCallback` does what `lrbs.monitor` does in a
hand-written loop (the noise scale, the sharpness every k steps, the advice, the run history).

    from lrbs.monitor.lightning import LrbsCallback
    callback = LrbsCallback(name="my run")
    trainer = lightning.pytorch.Trainer(callbacks=[callback], ...)
    trainer.fit(module, loader)
    callback.summary            # the monitor's summary() at the end of fit

At the start of training it builds a monitor on the trainer's model and first optimizer; after
each optimizer step (`on_train_batch_end` once `trainer.global_step` moved) it hands the
monitor the step's loss (`training_step`'s, a tensor or the "loss" of a dict; under
`accumulate_grad_batches` the mean over the micro-batches) and its batch (the micro-batches'
samples together, each one a micro-batch of B_simple's two-batch estimator on one process).
Under the "ddp" strategy the model is DDP's and the monitor reads B_simple from DDP's
all-reduce (lrbs/monitor/ddp.py); rank 0 records, every rank has the same summary. Lightning
is imported here only: `import lrbs` does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lrbs.core.errors import ConfigError

try:
    from lightning.pytorch import Callback
except ModuleNotFoundError:  # the older package name
    try:
        from pytorch_lightning import Callback
    except ModuleNotFoundError:
        raise ConfigError("lrbs.monitor.lightning needs Lightning: pip install lightning") from None


class LrbsCallback(Callback):
    """`lrbs.monitor(model, optimizer, name, db, **options)` driven by a Trainer; `options`
    are lrbs.monitor's (noise, sharpness_every with loss_fn, advise, max_batch, n_train,
    beta, every). The monitor is `self.monitor` while fitting, its summary `self.summary`
    after."""

    def __init__(self, name: str = "", db: Any = None, **options: Any) -> None:
        if "sampler" in options:
            raise ConfigError(
                "LrbsCallback does not drive a sampler: Lightning builds the loaders (use "
                "lrbs.monitor in a loop of your own to grow the batch)"
            )
        self.name, self.db, self.options = name, db, options
        self.monitor: Any = None
        self.summary: dict | None = None
        self._step = 0
        self._samples = 0
        self._loss: Any = None
        self._micro = False
        self._pick: Any = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        import lrbs

        if not trainer.optimizers:
            raise ConfigError("LrbsCallback needs the module's optimizer (configure_optimizers)")
        wrapped = trainer.strategy.model
        model = wrapped if isinstance(wrapped, DistributedDataParallel) else pl_module
        world = trainer.world_size
        self.monitor = lrbs.monitor(
            model,
            trainer.optimizers[0],
            self.name or type(pl_module).__name__,
            self.db,
            rank=trainer.global_rank,
            world=world,
            **self.options,
        )
        self.summary = None
        self._step, self._samples, self._loss = trainer.global_step, 0, None
        # one process: the accumulated micro-batches are the small batch; under DDP its
        # all-reduce is (no_sync leaves the accumulated gradient to the last backward)
        self._micro = trainer.accumulate_grad_batches > 1 and world == 1

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None and self._micro:
            self.monitor.micro()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is None or self.monitor.status != "running":
            return
        self._samples += self._batch_len(batch)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        if loss is not None:
            # Lightning divides each micro-batch's loss by accumulate_grad_batches: their sum
            # is the step's mean loss
            self._loss = loss if self._loss is None else self._loss + loss
        if trainer.global_step == self._step:
            return  # accumulating: no optimizer step yet
        self._step = trainer.global_step
        (samples, self._samples), (loss, self._loss) = (self._samples, 0), (self._loss, None)
        if loss is not None:
            self.monitor.step(loss, batch_size=samples)

    def _batch_len(self, batch: Any) -> int:
        from lrbs.core.stream import pick_of

        if self._pick is None:
            self._pick = pick_of(batch, "the training batch")
        return len(self._pick(batch)[0])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.summary = self.monitor.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.monitor is None or self.monitor.status != "running":
            return
        if isinstance(exception, KeyboardInterrupt):
            self.summary = self.monitor.close("stopped")
        else:
            self.summary = self.monitor.close("error", f"{type(exception).__name__}: {exception}")
