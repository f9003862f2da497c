"""From a split's records to uint8 images: the fetch that decodes a batch (replacing a record
that cannot be used by the next usable one), the guard that counts skipped records and stops a
run reading a damaged file, the probe of the images' shape, and the load of a whole split that
resident mode keeps on the accelerators."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import numpy as np

from rekd_jax.data import sources

# config.data.max_skipped_fraction is judged over the last this many records read.
SKIP_WINDOW = 10_000


class SkipGuard:
    """Counts the records a pipeline reads and those it skips, thread-safe. The first skip is
    logged; once more than ``max_fraction`` of the last ``window`` records read were skipped
    (a damaged file rather than a few bad images), every further skip raises
    DatasetCorruptError naming the record's file and the fix."""

    def __init__(self, source, max_fraction: float, window: int = SKIP_WINDOW):
        self._source, self._max_fraction, self._window = source, max_fraction, window
        self._lock = threading.Lock()
        self._skipped_in_window = np.zeros(window, bool)  # a ring over the last reads
        self._reads = 0
        self._skips = 0  # in the window
        self.value = 0  # in all

    def record(self, example_id: int, problem: str | None) -> None:
        """One record read; `problem` says why it cannot be used (None: it can)."""
        skipped = problem is not None
        with self._lock:
            slot = self._reads % self._window
            self._skips += int(skipped) - int(self._skipped_in_window[slot])
            self._skipped_in_window[slot] = skipped
            self._reads += 1
            if not skipped:
                return
            self.value += 1
            first = self.value == 1
            over = self._skips > self._max_fraction * self._window
            skips, reads = self._skips, min(self._reads, self._window)
        where = (
            f"dataset {self._source.name!r} split {self._source.split!r}: record {example_id} "
            f"in {self._source.file_of(int(example_id))} {problem}"
        )
        if over:
            raise sources.DatasetCorruptError(
                f"{where}, and {skips} of the last {reads} records read could not be used "
                f"(more than config.data.max_skipped_fraction={self._max_fraction:g} of "
                f"{self._window}); {self._source.repair_advice}, then rerun the same command "
                "(training resumes from its last checkpoint); or, to go on with such records "
                "replaced, raise config.data.max_skipped_fraction"
            )
        if first:
            logging.warning(
                "%s: skipped, replaced by another example (skipped records are counted in the "
                "progress and metrics; more than config.data.max_skipped_fraction=%g of the "
                "last %d records read stops the run)",
                where,
                self._max_fraction,
                self._window,
            )


def record_problem(record: dict, decode, example_id, epoch):
    """(image, None), or (None, why the record cannot be used)."""
    data = record.get("image")
    if data is None or not len(data):
        return None, "is empty (its file is truncated or damaged)"
    try:
        return decode(data, example_id, epoch), None
    except MemoryError:  # the host, not the file
        raise
    except Exception as error:  # pylint: disable=broad-except  (PIL raises many types)
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        return None, f"is not a decodable image ({type(error).__name__}: {detail})"


def decoder(source, example_ids, decode, image_shape, guard: SkipGuard):
    """fetch(positions, epoch) for host mode, and the decoder used to fill resident images.

    ``decode(image bytes, example id, epoch)`` -> uint8 array of ``image_shape``.
    """

    def decode_or_replace(position, epoch):
        """The example at ``position``, or past a record that cannot be used, the next one."""
        for attempt in range(len(example_ids)):
            example_id = example_ids[(position + attempt) % len(example_ids)]
            record = source.read([example_id])[0]
            image, problem = record_problem(record, decode, example_id, epoch)
            guard.record(example_id, problem)
            if problem is None:
                return image, record["label"], attempt > 0
        raise ValueError(f"no decodable image in {source.name}:{source.split}")

    def check(image, example_id):
        if image.shape != image_shape:
            raise ValueError(
                f"image {example_id} of {source.name}:{source.split} has shape {image.shape}, "
                f"expected {image_shape}: the images vary in size; set config.data.host_size "
                "(e.g. 256) so the host resizes and centre-crops them to a fixed size"
            )

    def fetch(positions, epoch):
        ids = example_ids[positions]
        records = source.read(ids)
        images = np.empty((len(ids),) + image_shape, np.uint8)
        labels = np.empty(len(ids), np.int32)
        replaced = np.zeros(len(ids), bool)
        for k, (record, position) in enumerate(zip(records, positions)):
            image, problem = record_problem(record, decode, ids[k], epoch)
            guard.record(ids[k], problem)
            label = record["label"]
            if problem is not None:
                image, label, _ = decode_or_replace(int(position) + 1, epoch)
                replaced[k] = True
            check(image, ids[k])
            images[k], labels[k] = image, label
        return {"image": images, "label": labels}, replaced

    return fetch


def probe_shape(source, example_ids, host_size):
    """The (H, W, 3) shape every decoded image of the split has: host_size squared, the stored
    shape, or that of the first decodable of its first 100 images."""
    if host_size > 0:
        return (host_size, host_size, 3)
    if source.stored_shape is not None:
        return source.stored_shape
    for example_id in example_ids[:100]:
        try:
            return sources.decode_image(source.read([example_id])[0]["image"]).shape
        except Exception:  # pylint: disable=broad-except
            continue
    raise ValueError(f"could not decode any of the first images of {source.name}:{source.split}")


def load_resident(fetch, num_examples, image_shape, num_workers):
    """Decode the whole (selected) split once, in parallel."""
    images = np.empty((num_examples,) + image_shape, np.uint8)
    labels = np.empty(num_examples, np.int32)
    replaced = np.empty(num_examples, bool)
    num_chunks = max(1, min(num_examples // 256, 4 * num_workers))
    chunks = np.array_split(np.arange(num_examples), num_chunks)
    with futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        for chunk, (arrays, chunk_replaced) in zip(
            chunks, pool.map(fetch, chunks, [0] * len(chunks))
        ):
            images[chunk], labels[chunk] = arrays["image"], arrays["label"]
            replaced[chunk] = chunk_replaced
    return images, labels, replaced
