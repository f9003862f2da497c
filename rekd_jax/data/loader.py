"""A small index-based loader: sharding, seeded per-epoch shuffling, batching, exact resume.

Why not grain or tf.data: tf.data needs TensorFlow (kept off the training path) and grain is
neither installed here nor on the accelerator machines. What we need from them is small: a
random-access source (TFDS ArrayRecord ``data_source``), a permutation per epoch, a shard per
process, decoding in parallel and a bit of prefetching. Making the order a pure function of
``(seed, epoch, step)`` keeps the iterator state to a few ints, so checkpoints restore it
exactly and there is nothing to serialise but a dict.

Order: the epoch's permutation of all example positions is
``np.random.default_rng([seed, epoch]).permutation(N)`` (identity when not shuffling). Global
batch ``s`` is the slice ``[s * G, (s + 1) * G)`` of it and process ``p`` takes its contiguous
``G / P`` part, laid out as ``(local devices, per-device batch)``. So processes see disjoint
shards covering each example once per epoch, and the global batch does not depend on the
number of processes. Training drops the incomplete last batch; evaluation pads it (positions
past the end repeat earlier examples) and masks the padding out.

Threads: one producer thread plans batches ahead (``prefetch`` batches in flight) and splits
each batch into chunks decoded by a thread pool (``num_workers``; PIL and the ArrayRecord
reader release the GIL). Batches come out in order whatever the thread timing.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import numpy as np

_STATE_KEYS = ("epoch", "step", "seed", "num_examples", "global_batch_size")


def check_state(state) -> dict:
    """The iterator state `state` (a dict from ``Loader.get_state()``) as plain ints;
    ValueError when it is not one (missing keys, values that are not integers)."""
    if not isinstance(state, dict):
        raise ValueError(f"data iterator state {state!r} is not a dict from get_state()")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"data iterator state lacks {missing}; pass a dict from get_state()")
    values = {k: np.asarray(state[k]) for k in _STATE_KEYS}
    bad = [k for k, v in values.items() if v.shape or not np.issubdtype(v.dtype, np.integer)]
    if bad:
        raise ValueError(f"data iterator state has values that are not integers: {bad}")
    return {k: int(v) for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which example positions make up each batch: a pure function of (epoch, step)."""

    num_examples: int
    global_batch_size: int
    num_local_devices: int
    process_index: int
    process_count: int
    seed: int
    shuffle: bool
    repeat: bool
    drop_remainder: bool

    def __post_init__(self):
        if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index {self.process_index} is not in [0, process_count="
                f"{self.process_count})"
            )
        if self.global_batch_size % (self.process_count * self.num_local_devices):
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not divisible by process_count "
                f"{self.process_count} x local devices {self.num_local_devices}; choose a batch "
                "size that is a multiple of the total number of devices"
            )
        if self.num_examples < 1:
            raise ValueError("the dataset split (or the selected indices) has no examples")
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the batch size {self.global_batch_size} exceeds the {self.num_examples} examples "
                "of the split (training drops the incomplete last batch, so an epoch would have no "
                f"batch); lower the batch size (e.g. --config.global_batch_size) to at most "
                f"{self.num_examples} or use a larger split"
            )

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @property
    def per_device_batch_size(self) -> int:
        return self.local_batch_size // self.num_local_devices

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_remainder:
            return self.num_examples // self.global_batch_size
        return -(-self.num_examples // self.global_batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def positions(self, order: np.ndarray, step: int):
        """(positions int64 [local batch], valid bool [local batch]) of this process."""
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        slots = np.arange(start, start + self.local_batch_size)
        valid = slots < self.num_examples
        return order[slots % self.num_examples], valid

    def next_state(self, epoch: int, step: int):
        return (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()

# fetch(positions, epoch) -> (dict of numpy arrays, each [len(positions), ...], replaced bool
# [len]); the epoch seeds per-example host randomness (host crops), so resume stays exact.
FetchFn = Callable[[np.ndarray, int], "tuple[dict, np.ndarray]"]


class Loader:
    """Iterable over batches of numpy arrays laid out (local devices, per-device batch, ...).

    Iterating continues from ``get_state()``; a training loader repeats forever, an evaluation
    loader makes one pass (and the next ``for`` loop makes another). Only one iterator is active
    at a time: starting a new one stops the previous one's threads.
    """

    def __init__(
        self,
        plan: BatchPlan,
        fetch: FetchFn,
        *,
        num_workers: int,
        prefetch: int,
        include_mask: bool,
    ):
        self.plan = plan
        self._fetch = fetch
        self._num_workers = max(1, int(num_workers))
        self._prefetch = max(1, int(prefetch))
        self._include_mask = include_mask
        self._epoch, self._step = 0, 0
        self._pool = None
        self._active_stop = None

    # -- state ---------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Position of the next batch plus what it depends on (plain ints)."""
        return {
            "epoch": self._epoch,
            "step": self._step,
            "seed": self.plan.seed,
            "num_examples": self.plan.num_examples,
            "global_batch_size": self.plan.global_batch_size,
        }

    def set_state(self, state) -> None:
        """Resume so that the next batch is exactly the one ``state`` was saved before."""
        state = check_state(state)
        for key in ("seed", "num_examples", "global_batch_size"):
            mine = getattr(self.plan, key)
            if state[key] != mine:
                raise ValueError(
                    f"data iterator state was saved with {key}={state[key]} but this pipeline has "
                    f"{key}={mine}; resume with the same dataset, subset, seed and batch size (or "
                    "start the data stream afresh by not restoring its state)"
                )
        if not 0 <= state["step"] < self.plan.steps_per_epoch or state["epoch"] < 0:
            raise ValueError(
                f"data iterator state {state} is out of range for "
                f"{self.plan.steps_per_epoch} steps per epoch"
            )
        self._stop_active()
        self._epoch, self._step = state["epoch"], state["step"]

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        self._stop_active()
        stop = threading.Event()
        self._active_stop = stop
        out = queue.Queue(maxsize=self._prefetch)
        producer = threading.Thread(
            target=self._produce,
            args=(self._epoch, self._step, out, stop),
            daemon=True,
            name="rekd-data-producer",
        )
        producer.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                batch, (self._epoch, self._step) = item
                yield batch
        finally:
            stop.set()
            while producer.is_alive():
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            if self._active_stop is stop:
                self._active_stop = None

    def _stop_active(self):
        if self._active_stop is not None:
            self._active_stop.set()
            self._active_stop = None

    def close(self) -> None:
        """Stop the threads (the loader stays usable: iterating again restarts them)."""
        self._stop_active()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _schedule(self, epoch: int, step: int):
        while True:
            yield epoch, step
            epoch, step = self.plan.next_state(epoch, step)
            if step == 0 and not self.plan.repeat:
                return

    def _produce(self, epoch, step, out: queue.Queue, stop: threading.Event):
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            if self._pool is None:
                self._pool = futures.ThreadPoolExecutor(
                    self._num_workers, thread_name_prefix="rekd-data-worker"
                )
            inflight = collections.deque()
            order_epoch, order = None, None
            for batch_epoch, batch_step in self._schedule(epoch, step):
                if stop.is_set():
                    return
                if order_epoch != batch_epoch:
                    order_epoch, order = batch_epoch, self.plan.epoch_order(batch_epoch)
                positions, valid = self.plan.positions(order, batch_step)
                chunks = np.array_split(
                    np.arange(positions.size), min(self._num_workers, positions.size)
                )
                jobs = [
                    self._pool.submit(self._fetch, positions[c], batch_epoch)
                    for c in chunks
                    if c.size
                ]
                inflight.append((jobs, valid, self.plan.next_state(batch_epoch, batch_step)))
                if len(inflight) > self._prefetch:
                    if not put(self._assemble(*inflight.popleft())):
                        return
            while inflight:
                if not put(self._assemble(*inflight.popleft())):
                    return
            put(_END)
        except BaseException as error:  # Surface worker errors in the consumer thread.
            put(_Failure(error))

    def _assemble(self, jobs, valid, next_state):
        parts = [job.result() for job in jobs]
        arrays = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        replaced = np.concatenate([p[1] for p in parts])
        if self._include_mask:
            arrays["mask"] = valid & ~replaced
        shape = (self.plan.num_local_devices, self.plan.per_device_batch_size)
        batch = {k: v.reshape(shape + v.shape[1:]) for k, v in arrays.items()}
        return batch, next_state
