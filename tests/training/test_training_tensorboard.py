"""The clu branch of the metric writer (runs where TensorFlow is installed: requirements-tf.txt;
skipped where it is not, e.g. in CI, which tests the JSON-lines fallback elsewhere)."""

import glob
import os

import pytest

from rekd_jax.core import logging as logging_lib


def test_clu_writer_writes_tensorboard_events_and_json_lines(tmp_path):
    tf = pytest.importorskip("tensorflow")
    writer = logging_lib.create_writer(str(tmp_path), tensorboard="on")
    for step in (1, 2, 3):
        writer.write_scalars(step, {"train/loss": 1.0 / step})
    writer.flush()
    writer.close()

    events = glob.glob(os.path.join(str(tmp_path), "**", "events.out.tfevents.*"), recursive=True)
    assert events, "clu wrote no TensorBoard event file"
    losses = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    assert losses == pytest.approx({1: 1.0, 2: 0.5, 3: 1.0 / 3})
    records = logging_lib.read_jsonl(os.path.join(str(tmp_path), "metrics.jsonl"))
    assert [r["train/loss"] for r in records if "train/loss" in r] == pytest.approx(
        [1.0, 0.5, 1 / 3]
    )
