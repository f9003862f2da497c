"""The resumable epoch loop of the probes and of fine-tuning, and the check that a checkpoint
belongs to the run that resumes it.

`EpochLoop` restores the newest checkpoint, runs the remaining epochs, logs each epoch's
metrics (metrics.jsonl is complete after every epoch) and checkpoints the unreplicated state
with the epoch, the data-iterator state and the run's signature. `check_signature` refuses a
checkpoint written under other settings with one line naming each difference and the flags
that resume it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import numpy as np
from absl import logging

from rekd_jax.core import fileio, parallel
from rekd_jax.core import progress as progress_lib
from rekd_jax.core.parallel import AXIS_NAME as AXIS


class EpochLoop:
    """Resumable epoch loop over a device-replicated state: restore, run, checkpoint, log.

    `run_epoch(state, epoch) -> (state, metrics)` receives and returns the replicated state.
    Checkpoints hold the unreplicated state plus {'epoch', 'data', 'signature'}: 'data' is the
    data-iterator state from `data_state()` (None when the data order derives from the epoch),
    'signature' a JSON-able description of the run (protocol block, checkpoint, dataset...); a
    checkpoint written under another signature is refused rather than silently continued.
    """

    def __init__(
        self,
        checkpointer,
        writer,
        *,
        num_epochs: int,
        every_epochs: int = 1,
        name: str = "probe",
        signature: Mapping[str, Any] | None = None,
    ):
        self.checkpointer = checkpointer
        self.writer = writer
        self.num_epochs = int(num_epochs)
        self.every_epochs = max(1, int(every_epochs))
        self.name = name
        self.signature = json.loads(json.dumps(dict(signature or {}), default=str))

    def run(
        self,
        state: Any,
        run_epoch: Callable[[Any, int], tuple[Any, dict]],
        *,
        data_state: Callable[[], dict] | None = None,
        set_data_state: Callable[[dict], None] | None = None,
    ) -> Any:
        """Run from the latest checkpoint (or epoch 0) to num_epochs; returns the final state."""
        start = 0
        if self.checkpointer is not None and self.checkpointer.latest_step() is not None:
            target = jax.device_get(flax.jax_utils.unreplicate(state))
            # the newest checkpoint that restores (damaged newer ones are moved aside)
            restored, extra, _ = self.checkpointer.restore_newest(target)
            self._check_signature(extra.get("signature") or {})
            state = parallel.replicate(restored, AXIS)
            start = int(extra["epoch"])
            if set_data_state is not None and extra.get("data") is not None:
                set_data_state(extra["data"])
            logging.info("%s: resumed after epoch %d of %d", self.name, start, self.num_epochs)
        progress = progress_lib.Progress(self.name, self.num_epochs, unit="epoch", start=start)
        for epoch in range(start, self.num_epochs):
            t0 = time.time()
            if epoch == start:  # includes compilation
                with progress_lib.heartbeat(f"{self.name}: epoch {epoch + 1} (includes compiling)"):
                    state, metrics = run_epoch(state, epoch)
            else:
                state, metrics = run_epoch(state, epoch)
            loss = metrics.get("train_loss")
            if loss is not None and not np.isfinite(loss):
                raise FloatingPointError(
                    f"{self.name}: the training loss is {loss} after epoch {epoch + 1}; lower "
                    f"{self.name}.learning_rate (lr 30 suits MoCo-scale features; features "
                    "with a larger norm need less)"
                )
            metrics = {f"{self.name}/{k}": float(v) for k, v in metrics.items()}
            metrics[f"{self.name}/epoch_seconds"] = time.time() - t0
            if self.writer is not None:
                self.writer.write_scalars(epoch + 1, metrics)
                self.writer.flush()  # metrics.jsonl is complete after every epoch
            progress.update(1, **({"loss": float(loss)} if loss is not None else {}))
            done = epoch + 1
            if self.checkpointer is not None and (
                done % self.every_epochs == 0 or done == self.num_epochs
            ):
                host = jax.device_get(flax.jax_utils.unreplicate(state))
                self.checkpointer.save(
                    done,
                    host,
                    {
                        "epoch": done,
                        "data": data_state() if data_state else None,
                        "signature": self.signature,
                    },
                )
        progress.close()
        if self.checkpointer is not None:
            self.checkpointer.wait()
        return state

    def _check_signature(self, saved: Mapping[str, Any]) -> None:
        check_signature(self.name, self.checkpointer.directory, saved, self.signature)


# Signature keys that are not config fields of the same name (see common.signature).
_SIGNATURE_FIELDS = {
    "seed": "rng_seed",
    "dataset": "data.dataset",
    "train_split": "data.train_split",
    "image_size": "data.image_size",
}


class SettingsChangedError(ValueError):
    """A probe checkpoint was written under other settings than the run's."""


def check_signature(
    name: str, directory: str, saved: Mapping[str, Any], now: Mapping[str, Any]
) -> None:
    """SettingsChangedError naming every setting of `now` that differs from the `saved`
    signature of the checkpoints in `directory`, the flags that resume them, and the way to a
    new run (another --workdir)."""
    now = json.loads(json.dumps(dict(now), default=str))
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if not differ:
        return
    details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)
    flags = [
        f"--config.{_SIGNATURE_FIELDS.get(k, k)}={saved[k]}"
        for k in differ
        if k in saved and k not in ("mode", "spec_mtime") and not isinstance(saved[k], dict)
    ]
    workdir = os.path.dirname(fileio.absolute(directory))
    raise SettingsChangedError(
        f"{name}: the checkpoint in {directory} was written by a different run ({details}); "
        f"give this evaluation its own --workdir (e.g. --workdir={workdir}_2)"
        + (f", or resume that run with its settings ({' '.join(flags)})" if flags else "")
    )
