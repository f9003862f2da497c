"""The pre-training loop: data -> pmapped step -> logging, kNN monitor, checkpoints, encoders.

`train_and_evaluate(config, workdir)` is what `python main.py --config=... --workdir=...` runs
for mode 'pretrain'. Restarting the same command resumes from the newest complete checkpoint in
WORKDIR/checkpoints (TrainState + data-iterator state), so a killed run continues exactly where
its last checkpoint left it. Outputs in WORKDIR:

  checkpoints/<step>/      Orbax: the whole TrainState and the data-iterator state
  encoders/student/        the trained student (models.io format; evaluation reads it)
  encoders/teacher/        the online teacher (a method whose teacher_mode is 'online', e.g.
                           ReKD with config.rekd.teacher='online')
  metrics.jsonl            every logged scalar (plus TensorBoard files when TF is installed)

Preemption: on SIGTERM the run saves a checkpoint after a step that all processes agree on
and raises preemption.Preempted, which the command turns into one line and exit status 0;
rerunning it resumes (rekd_jax.training.preemption).

Non-finite guard: every loss and gradient norm is checked on the host before each log line and
before each checkpoint; a non-finite value stops training with FloatingPointError and nothing is
saved, so the last good checkpoint stays the newest one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging as absl_logging

from rekd_jax import methods
from rekd_jax.core import checkpoint as checkpoint_lib
from rekd_jax.core import distributed, fileio, parallel, run_record, workdir_lock
from rekd_jax.core import logging as logging_lib
from rekd_jax.core import progress as progress_lib
from rekd_jax.data import augment, host_crop, loader, pipeline, sources
from rekd_jax.models import heads
from rekd_jax.models import io as model_io
from rekd_jax.readout import features as features_lib
from rekd_jax.readout import knn as knn_lib
from rekd_jax.training import config as config_lib
from rekd_jax.training import optim, preemption, resume
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib


@dataclasses.dataclass
class Run:
    """Everything a run builds before its first step."""

    modules: state_lib.Modules
    teacher_variables: Any
    train_data: Any
    steps_per_epoch: int
    total_steps: int
    step_config: step_lib.StepConfig
    state: state_lib.TrainState


def build(config: ml_collections.ConfigDict) -> Run:
    """Modules, data, optimiser and a fresh (host, unreplicated) TrainState. The teacher plan
    is decided here, once (methods.teacher_plan), and carried by the Modules."""
    plan = methods.teacher_plan(config)
    teacher_spec, teacher_variables = state_lib.load_offline_teacher(config, plan)
    modules = state_lib.build_modules(config, teacher_spec, plan)
    batch = config.global_batch_size
    train_data = pipeline.create(
        config.data,
        split=config.data.train_split,
        training=True,
        global_batch_size=batch,
        seed=config.rng_seed,
        host_crop=host_crop.for_pretraining(config.data),
    )
    method = methods.get_method(config.method)
    if hasattr(method, "validate_dataset"):  # checks against the data, now that it is open
        try:
            method.validate_dataset(config[config.method], int(train_data.num_classes))
        except ValueError as e:
            raise ValueError(f"config.{config.method} ({config.data.dataset!r}): {e}") from None
    steps_per_epoch = int(train_data.steps_per_epoch)
    config_lib.check_total_steps(config, steps_per_epoch)
    total_steps = int(config.num_train_steps or config.num_epochs * steps_per_epoch)
    warmup = int(round(config.optimizer.warmup_epochs * steps_per_epoch))
    schedule = optim.learning_rate_schedule(
        config.optimizer, batch, total_steps, warmup, steps_per_epoch
    )
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    step_config = step_lib.make_step_config(
        config, modules, tx, schedule, batch, jax.device_count()
    )
    return Run(
        modules, teacher_variables, train_data, steps_per_epoch, total_steps, step_config, state
    )


def replicate(tree):
    return parallel.replicate(tree, parallel.AXIS_NAME)


def unreplicate(tree):
    """The first local replica of every leaf, as host numpy (works in multi-process runs)."""
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree
    )


def _batches(data) -> Iterator[dict]:
    """The pipeline's batches forever (a pipeline that ends per epoch is restarted)."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "the training pipeline produced no batch: is the split smaller "
                "than the global batch size?"
            )


def snapshot_name(step: int) -> str:
    """The encoders/ folder of the student snapshot at `step` (config.export_encoder_steps)."""
    return f"student_step{step}"


def export_encoders(
    workdir: str, config, modules: state_lib.Modules, state_host, snapshot: bool = False
) -> dict:
    """Writes WORKDIR/encoders/student (and /teacher for an online teacher); returns paths.
    `snapshot` writes the student to encoders/student_step<N> instead (kept for good)."""
    step = int(state_host.step)
    paths = {}
    parts = ["student"] + (["teacher"] if "teacher" in state_host.params else [])
    if snapshot:
        parts = [snapshot_name(step)]
    for part in parts:
        spec = dict(modules.teacher_spec if part == "teacher" else modules.student_spec)
        spec["source"] = f"{spec['source']} step {step}"
        path = os.path.join(workdir, "encoders", part)
        model_io.save_encoder(
            path,
            spec,
            state_lib.encoder_variables(state_host, "teacher" if part == "teacher" else "student"),
        )
        paths[part] = path
    return paths


def knn_monitor(config, modules: state_lib.Modules, encoder_vars) -> dict:
    """Weighted kNN (k, tau from config.knn_monitor) of student backbone features: the query
    split (knn_monitor.query_split, default data.eval_split) classified against the bank
    (knn_monitor.bank_split, default data.train_split), each limited to its configured size."""
    knn = config.knn_monitor
    dtype = state_lib.compute_dtype(config)
    module = heads.build_encoder(modules.student_spec, dtype=dtype, bn_axis_name=None)
    feature_fn = lambda v, x: {"features": module.apply(v, x, train=False)["features"]}
    preprocess = lambda im: augment.eval_view(
        im, config.data.augment, config.data.image_size, config.data.eval_resize, dtype
    )
    batch = max(jax.local_device_count(), knn.batch_size // jax.device_count() * jax.device_count())
    out = {}
    for name, split, limit in (
        ("train", knn.bank_split or config.data.train_split, knn.train_examples),
        ("test", knn.query_split or config.data.eval_split, knn.test_examples),
    ):
        data = pipeline.create(
            config.data, split=split, training=False, global_batch_size=batch, seed=0
        )
        if limit and limit < data.num_examples:  # the first `limit` examples of the split
            data = pipeline.create(
                config.data,
                split=split,
                training=False,
                global_batch_size=batch,
                seed=0,
                indices=np.arange(limit),
            )
        feats, labels = features_lib.extract_features(
            feature_fn,
            encoder_vars,
            data,
            preprocess=preprocess,
            resident=pipeline.replicate_resident(data),
        )
        out[name] = (feats["features"], labels)
        num_classes = int(data.num_classes)
    result = knn_lib.knn_classify(
        out["train"][0],
        out["train"][1],
        out["test"][0],
        num_classes=num_classes,
        k=knn.k,
        temperature=knn.temperature,
    )
    acc = knn_lib.knn_accuracy(result, jnp.asarray(out["test"][1]))
    return {"knn/top1": float(acc["top1"]), "knn/top5": float(acc["top5"])}


class NonFiniteError(FloatingPointError):
    """Training produced NaN/Inf; nothing was saved after the last good checkpoint."""


def _check_finite(history: list[tuple[int, dict]], ckpt: checkpoint_lib.Checkpointer):
    for step, metrics in history:
        bad = {
            k: float(v)
            for k, v in metrics.items()
            if k in ("loss", "grad_norm") and not np.isfinite(v)
        }
        if bad:
            ckpt.wait()  # name only a checkpoint whose (async) save has finished
            last_good, ckpt_dir = ckpt.latest_step(), ckpt.directory
            where = (
                f"the last good checkpoint is step {last_good} in {ckpt_dir}"
                if last_good is not None
                else "no checkpoint was written yet"
            )
            raise NonFiniteError(
                f"non-finite training values at step {step}: {bad}. Training stopped without "
                f"saving; {where}. Rerun the same command to resume from it, after lowering the "
                "learning rate (--config.optimizer.base_learning_rate=...), adding warmup "
                "(--config.optimizer.warmup_epochs=...) or using --config.dtype=float32, with "
                "--config.allow_config_change=True (a changed value changes the run), or start "
                "afresh with a new --workdir."
            )


def check_side_item(extra: dict) -> None:
    """A checkpoint whose side item lacks a whole data-iterator state cannot resume exactly:
    CheckpointCorruptError, so that resuming falls back to the previous checkpoint."""
    if "data" not in extra:
        raise checkpoint_lib.CheckpointCorruptError(
            "its side item holds no data-iterator state ('data'): its metadata is missing"
        )
    try:
        loader.check_state(extra["data"])
    except ValueError as e:
        raise checkpoint_lib.CheckpointCorruptError(
            f"its side item's data-iterator state is incomplete ({e})"
        ) from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Pre-trains (resuming if WORKDIR/checkpoints has a checkpoint); returns a summary dict
    {'step', 'metrics' (last logged), 'knn' (last monitor, if any), 'encoders' (paths)}.
    Holds WORKDIR's lock (rekd_jax.core.workdir_lock.WorkdirLock) while it runs. Raises
    preemption.Preempted after saving a checkpoint when SIGTERM arrives (see the docstring)."""
    distributed.initialize(config.distributed)  # first: it starts JAX's preemption service
    with (
        preemption.StopOnSignal() as stop,
        workdir_lock.WorkdirLock(workdir, "pre-training", primary=jax.process_index() == 0),
    ):
        return _train_and_evaluate(config, workdir, stop)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop: preemption.StopOnSignal
) -> dict:
    config_lib.check_devices(config, jax.device_count())
    primary = jax.process_index() == 0
    fileio.makedirs(workdir)
    run_record.check_mode(workdir, config)  # before anything is created in another mode's workdir
    ckpt = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        async_save=config.async_checkpointing,
    )
    signature = resume.check_signature(
        config, workdir, resuming=ckpt.latest_step() is not None, primary=primary
    )
    if primary:  # only once the checks passed: a refused run leaves the record as it was
        run_record.write_config(workdir, config)
    writer = logging_lib.create_writer(workdir, is_primary=primary, tensorboard=config.tensorboard)
    with progress_lib.heartbeat("building the models, the data pipeline and the train state"):
        run = build(config)
    if primary and run.modules.teacher_plan.mode == "offline":
        run_record.record_teacher(
            workdir, config.teacher.checkpoint, run.modules.teacher_spec, config.teacher.arch
        )
    state = _restore_or_start(config, workdir, ckpt, writer, run, primary)
    loop = _TrainLoop(config, workdir, run, ckpt, writer, signature, start=int(state.step))
    p_state = loop.train(state, stop)
    return _closing_summary(config, workdir, run, loop, p_state)


def _restore_or_start(config, workdir: str, ckpt, writer, run: Run, primary: bool):
    """The newest complete checkpoint's TrainState (with the data-iterator state set and
    metrics.jsonl trimmed to its step), or the fresh state of a new run (hparams written)."""
    state = run.state
    found = ckpt.restore_newest(state_lib.to_host(state), check_extra=check_side_item)
    if found is not None:
        restored, extra, restored_step = found
        state = state_lib.from_host(state, restored)
        run.train_data.set_state(extra["data"])
        if primary:
            logging_lib.trim_metrics(os.path.join(workdir, "metrics.jsonl"), restored_step)
        absl_logging.info("resumed from %s step %d", ckpt.directory, restored_step)
        return state
    if primary:  # records of an earlier attempt that never reached a checkpoint
        logging_lib.trim_metrics(os.path.join(workdir, "metrics.jsonl"), 0, keep_hparams=False)
    writer.write_hparams(
        {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in resume.flatten_config(config).items()
        }
    )
    return state


class _TrainLoop:
    """The steps of one run from its start step to run.total_steps, and what they leave: metric
    rows (means of the steps since the last row), checkpoints, encoder exports and snapshots,
    kNN monitor results."""

    def __init__(self, config, workdir: str, run: Run, ckpt, writer, signature: dict, start: int):
        self.config, self.workdir, self.run = config, workdir, run
        self.ckpt, self.writer, self.signature = ckpt, writer, signature
        self.start = self.step = start
        self.primary = jax.process_index() == 0
        self.history: list[tuple[int, Any]] = []  # step metrics not logged yet
        self.metrics: dict = {}  # the last row written
        self.knn: dict | None = None  # the last kNN monitor result
        self.clock: run_record.TrainClock | None = None
        self.tick, self.tick_step = time.time(), start
        self.skipped_logged = 0  # records the data pipeline skipped, as far as logged

    def flush_history(self, step: int) -> None:
        """Writes the means of the waiting step metrics as the row of `step`; NonFiniteError
        (nothing saved) when a loss or gradient norm is not finite."""
        host = [(s, {k: float(v) for k, v in unreplicate(m).items()}) for s, m in self.history]
        self.history.clear()
        _check_finite(host, self.ckpt)
        if not host:
            return
        means = {f"train/{k}": float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
        now = time.time()
        means["train/images_per_sec"] = (
            (step - self.tick_step) * self.config.global_batch_size / max(now - self.tick, 1e-9)
        )
        means["train/epoch"] = step / self.run.steps_per_epoch
        skipped = self.run.train_data.num_skipped
        means["train/skipped_records"] = float(skipped - self.skipped_logged)  # since the last row
        self.skipped_logged = skipped
        self.tick, self.tick_step = now, step
        self.writer.write_scalars(step, means)
        self.metrics = means

    def save(self, step: int, host_state) -> None:
        """A checkpoint of `host_state` (with the data-iterator state and the run signature),
        the encoders exported from it, and the training time so far."""
        self.ckpt.save(
            step,
            state_lib.to_host(host_state),
            {"data": self.run.train_data.get_state(), resume.SIGNATURE_KEY: self.signature},
        )
        export_encoders(self.workdir, self.config, self.run.modules, host_state)
        if self.primary:
            self.clock.save()

    def train(self, state, stop: preemption.StopOnSignal):
        """Runs the steps; returns the replicated final state. Raises preemption.Preempted
        after saving a checkpoint when a stop was agreed."""
        config, run = self.config, self.run
        p_step = progress_lib.heartbeat_first_call(
            step_lib.make_pmapped_step(run.step_config), "compiling the training step"
        )
        p_state = replicate(state)
        teacher_vars = replicate(run.teacher_variables)
        resident = pipeline.replicate_resident(run.train_data)
        knn_every = config.knn_monitor.every_epochs * run.steps_per_epoch
        progress = progress_lib.Progress("pre-training", run.total_steps, start=self.start)
        self.clock = run_record.TrainClock(self.workdir)
        batches = _batches(run.train_data)
        self.tick, self.tick_step = time.time(), self.start
        snapshots = set(int(s) for s in config.get("export_encoder_steps", ()))
        for step in range(self.start + 1, run.total_steps + 1):
            self.step = step
            try:
                batch = next(batches)
            except sources.DatasetCorruptError:
                self.ckpt.close()  # the checkpoints saved so far stay complete: resume from them
                raise
            p_state, metrics = p_step(p_state, batch, teacher_vars, resident)
            self.history.append((step, metrics))
            skipped = run.train_data.num_skipped
            progress.set(step, **({"skipped_records": skipped} if skipped else {}))
            is_last = step == run.total_steps
            preempted = stop.agreed(step - self.start) and not is_last
            if step % config.log_every_steps == 0 or is_last:
                self.flush_history(step)
            if step in snapshots:  # before the checkpoint: a resume never skips it (every
                # process takes part in the Orbax save, as in save())
                host = unreplicate(p_state)
                export_encoders(self.workdir, config, run.modules, host, snapshot=True)
            if step % config.checkpoint_every_steps == 0 or is_last or preempted:
                self.flush_history(step)
                self.save(step, unreplicate(p_state))
            if preempted:
                for closable in (progress, self.ckpt, self.writer):  # ckpt.close waits for the save
                    closable.close()
                raise preemption.Preempted(step)
            if (knn_every and step % knn_every == 0) or (
                is_last and config.knn_monitor.every_epochs
            ):
                host = unreplicate(p_state)
                encoder = state_lib.encoder_variables(host, "student")
                self.knn = knn_monitor(config, run.modules, encoder)
                self.writer.write_scalars(step, self.knn)
            self.writer.flush()
        progress.close()
        self.ckpt.close()
        self.writer.close()
        return p_state


def _closing_summary(config, workdir: str, run: Run, loop: _TrainLoop, p_state) -> dict:
    """{'metrics' (last logged), 'knn' (last monitor, if any), 'train_seconds', 'step',
    'encoders' (paths)}; exports the encoders when no checkpoint step wrote them."""
    clock = loop.clock
    trained = loop.primary and loop.step > loop.start
    summary = {
        "metrics": loop.metrics,
        "knn": loop.knn,
        "train_seconds": clock.save() if trained else round(clock.before, 1),
    }
    final = unreplicate(p_state)
    if not fileio.exists(os.path.join(workdir, "encoders", "student", model_io.SPEC_FILE)):
        export_encoders(workdir, config, run.modules, final)
    summary.update(
        step=int(final.step),
        encoders={
            part: os.path.join(workdir, "encoders", part)
            for part in final.params
            if part in ("student", "teacher")
        },
    )
    return summary
