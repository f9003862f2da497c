"""Fast-mode probe: learns a linearly separable set, schedules are right, resume is exact."""

import jax
import ml_collections
import numpy as np
import pytest

from rekd_jax.core import logging as logging_lib
from rekd_jax.core.checkpoint import Checkpointer
from rekd_jax.evaluation import feature_probe, linear, scoring


def separable(n, num_classes=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(num_classes, dim)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    feats = centres[labels] + 0.3 * rng.normal(size=(n, dim))
    return feats.astype(np.float32), labels


def block(**overrides):
    cfg = ml_collections.ConfigDict(
        dict(
            epochs=5,
            learning_rate=1.0,
            momentum=0.9,
            nesterov=False,
            weight_decay=0.0,
            schedule="cosine",
            milestones=(),
            decay_factor=0.1,
            warmup_epochs=0,
            init_std=0.01,
        )
    )
    cfg.update(overrides)
    return cfg


def evaluate(params, feats, labels):
    batches = scoring.padded_batches({"features": feats, "label": labels}, 8, 4)
    replicated = jax.tree_util.tree_map(lambda x: np.broadcast_to(x, (4,) + x.shape), params)
    return scoring.score(
        lambda p, x: linear.head_logits(p, {"features": x}),
        (replicated,),
        batches,
        input_key="features",
    )["features"]


def test_probe_reaches_full_accuracy_on_separable_features():
    train_x, train_y = separable(203)
    test_x, test_y = separable(101, seed=1)
    params = feature_probe.train_on_features(
        {"features": train_x}, train_y, num_classes=4, block=block(), batch_size=32, seed=0
    )
    result = evaluate(params, test_x, test_y)
    assert result["count"] == 101
    assert result["top1"] == 100.0
    # An untrained probe is near chance: the test has teeth.
    untrained = linear.init_heads(jax.random.PRNGKey(0), {"features": 8}, 4)
    assert evaluate(jax.device_get(untrained), test_x, test_y)["top1"] < 60


def test_step_schedule_divides_at_milestones():
    cfg = block(
        epochs=35, learning_rate=0.01, schedule="step", milestones=(5, 15, 25), decay_factor=0.2
    )
    schedule = linear.learning_rate_schedule(cfg, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(49)) == pytest.approx(0.01)
    assert float(schedule(50)) == pytest.approx(0.002)
    assert float(schedule(150)) == pytest.approx(0.0004)
    assert float(schedule(349)) == pytest.approx(0.00008)
    cosine = linear.learning_rate_schedule(block(epochs=10, learning_rate=30.0), 10)
    assert float(cosine(0)) == pytest.approx(30.0)
    assert float(cosine(50)) == pytest.approx(15.0)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-6)


def test_every_real_row_is_visited_once_per_epoch():
    mask = np.zeros((4, 6), bool)
    mask[:3] = True
    mask[3, :2] = True
    idx, valid = feature_probe.epoch_indices(mask, steps=3, per_device_batch=2, seed=0, epoch=1)
    for d in range(4):
        rows = idx[d][valid[d]]
        assert sorted(rows.tolist()) == np.flatnonzero(mask[d]).tolist()
    again, _ = feature_probe.epoch_indices(mask, steps=3, per_device_batch=2, seed=0, epoch=1)
    other, _ = feature_probe.epoch_indices(mask, steps=3, per_device_batch=2, seed=0, epoch=2)
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)


def test_resume_matches_uninterrupted_run(tmp_path):
    train_x, train_y = separable(97)
    kwargs = dict(num_classes=4, batch_size=16, seed=3)
    straight = feature_probe.train_on_features(
        {"features": train_x}, train_y, block=block(epochs=4), **kwargs
    )
    # First run stops after 2 epochs (its config says 2); the rerun with 4 resumes from there.
    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, async_save=False)
    with pytest.raises(_Stopped):
        feature_probe.train_on_features(
            {"features": train_x},
            train_y,
            block=block(epochs=4),
            checkpointer=_StopAfter(ckpt, 2),
            **kwargs,
        )
    assert ckpt.latest_step() == 2
    resumed = feature_probe.train_on_features(
        {"features": train_x}, train_y, block=block(epochs=4), checkpointer=ckpt, **kwargs
    )
    assert ckpt.latest_step() == 4
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class _StopAfter:
    """Checkpointer proxy that aborts training after `epoch` (simulates a killed job)."""

    def __init__(self, inner, epoch):
        self.inner, self.epoch = inner, epoch

    def latest_step(self):
        return self.inner.latest_step()

    def save(self, step, tree, extra=None):
        self.inner.save(step, tree, extra)
        if step >= self.epoch:
            self.inner.wait()
            raise _Stopped()

    def wait(self):
        self.inner.wait()


class _Stopped(Exception):
    pass


def test_a_large_lr_on_unnormalised_features_is_announced_before_its_large_first_losses(
    tmp_path, caplog
):
    """The MoCo protocol's lr 30 on unnormalised features starts with losses in the thousands:
    one log line says so before epoch 1, so they are not read as a divergence."""
    rng = np.random.default_rng(0)
    # pooled ReLU features of a backbone: non-negative, unnormalised (norm about 30 here)
    train_x = (3.0 * np.abs(rng.normal(size=(203, 64)))).astype(np.float32)
    train_y = rng.integers(0, 4, 203).astype(np.int32)
    metrics = tmp_path / "metrics.jsonl"
    writer = logging_lib.JsonlWriter(str(metrics))
    with caplog.at_level("INFO"):
        feature_probe.train_on_features(
            {"features": train_x},
            train_y,
            num_classes=4,
            block=block(epochs=4, learning_rate=30.0),
            batch_size=32,
            seed=0,
            writer=writer,
            name="linear",
        )
    writer.close()
    notes = [r.getMessage() for r in caplog.records if "unnormalised features" in r.getMessage()]
    assert notes == [
        "linear: the heads train on unnormalised features at lr 30 (the MoCo protocol), so "
        "first-epoch training losses in the hundreds or thousands are expected; they fall over "
        "the following epochs (a non-finite loss stops the probe)"
    ]
    losses = [r["linear/train_loss"] for r in logging_lib.read_jsonl(str(metrics))]
    assert losses[0] > 100 and losses[-1] < losses[0]  # what the note announces

    caplog.clear()
    with caplog.at_level("INFO"):
        for quiet in (block(epochs=1, learning_rate=30.0, head_bn=True), block(epochs=1)):
            feature_probe.train_on_features(
                {"features": train_x}, train_y, num_classes=4, block=quiet, batch_size=32, seed=0
            )
    assert "unnormalised" not in caplog.text  # normalised heads, or a small lr: no note
