"""Progress lines (rate, h:mm:ss ETA, rate-limited), the quiet console, --help, and the record
a run leaves in its workdir (config.json, teacher.json, train time over resumes)."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from absl import logging as absl_logging

from rekd_jax import recipes, run_summary
from rekd_jax.core import logging as logging_lib
from rekd_jax.core import progress, run_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_hms():
    assert progress.hms(0) == "0:00:00"
    assert progress.hms(3725.2) == "1:02:05"
    assert progress.hms(23114.5 * 60) == "385:14:30"


def test_progress_lines_are_rate_limited_with_rate_and_eta():
    clock, lines = FakeClock(), []
    p = progress.Progress(
        "probe", 100, unit="epoch", clock=clock, log=lambda fmt, *a: lines.append(fmt % a)
    )
    for _ in range(100):
        clock.now += 1.0  # 1 epoch/s: 100 s in all
        p.update(1, loss=0.5)
    p.close()
    assert len(lines) == 4  # t = 30, 60, 90 s, then the closing line
    assert lines[0].startswith("probe: epoch 30/100 (30%), 1 epoch/s, elapsed 0:00:30, ETA 0:01:10")
    assert "loss=0.5" in lines[0]
    assert lines[-1].startswith("probe: epoch 100/100 (100%)") and "ETA" not in lines[-1]


def test_the_first_eta_of_a_training_run_is_within_half_of_the_real_time_left():
    """Compilation (the first step, 2 minutes) and checkpoints (10 s every 500 steps) around
    2,000 steps of 0.3 s: the first ETA printed is within 50% of the time really left."""
    clock, lines = FakeClock(), []
    p = progress.Progress(
        "pre-training", 2000, clock=clock, log=lambda fmt, *a: lines.append((clock.now, fmt % a))
    )
    clock.now += 120.0
    p.set(1)
    for step in range(2, 2001):
        clock.now += 0.3 + (10.0 if step % 500 == 0 else 0.0)
        p.set(step)
    end = clock.now
    when, first = next((t, line) for t, line in lines if "ETA" in line)
    eta = sum(
        int(part) * 60**i
        for i, part in enumerate(reversed(first.split("ETA ")[1].split(",")[0].split(":")))
    )
    assert 0.5 * (end - when) <= eta <= 1.5 * (end - when), (first, end - when)


def test_short_single_unit_phase_is_silent_and_first_update_is_left_out_of_the_rate():
    clock, lines = FakeClock(), []
    p = progress.Progress("x", 1, clock=clock, log=lambda fmt, *a: lines.append(fmt % a))
    clock.now = 2.0
    p.update(1)
    p.close()
    assert lines == []
    p = progress.Progress("train", 11, clock=clock, log=lambda *a: None)
    clock.now += 60.0  # the first step compiles for a minute
    p.update(1)
    for _ in range(10):
        clock.now += 0.5
        p.update(1)
    assert p.rate() == pytest.approx(2.0)


def test_heartbeat_logs_while_a_block_runs():
    lines = []
    with progress.heartbeat(
        "compiling", every_secs=0.05, quiet_secs=0.0, log=lambda fmt, *a: lines.append(fmt % a)
    ):
        import time

        time.sleep(0.3)
    assert any(line.startswith("still compiling (elapsed 0:00:00)") for line in lines)
    assert lines[-1].startswith("compiling: done in 0:00:00")


def test_console_writer_logs_one_line_per_interval_and_the_last_at_close(monkeypatch):
    clock, lines = FakeClock(), []
    monkeypatch.setattr(logging_lib.absl_logging, "info", lambda fmt, *a: lines.append(fmt % a))
    writer = logging_lib.ConsoleWriter(every_secs=30.0, clock=clock)
    writer.write_hparams({"big": "x" * 2500})
    for epoch in range(1, 101):  # 100 epochs of 1 s
        clock.now += 1.0
        writer.write_scalars(epoch, {"loss": 1.0 / epoch})
    writer.close()
    assert [line.split("]")[0] for line in lines] == ["[1", "[31", "[61", "[91", "[100"]


def test_library_info_lines_are_dropped_unless_verbose():
    flt = logging_lib._LibraryInfoFilter()

    def record(path, level=logging.INFO):
        return logging.LogRecord("x", level, path, 1, "msg", None, None)

    jax_line = record("/site-packages/jax/_src/xla_bridge.py")
    assert not flt.filter(jax_line)
    assert flt.filter(record("/site-packages/jax/_src/xla_bridge.py", logging.WARNING))
    assert flt.filter(record(os.path.join(REPO, "rekd_jax", "training", "pretrain.py")))
    old = absl_logging.get_verbosity()
    try:
        absl_logging.set_verbosity(1)
        assert flt.filter(jax_line)
    finally:
        absl_logging.set_verbosity(old)


def test_help_lists_configs_variants_overrides_and_outputs():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = result.stdout
    for config in os.listdir(os.path.join(REPO, "configs")):
        if config.endswith(".py") and not config.startswith("_"):
            assert config in text
    assert "semi_supervised.py    Semi-supervised evaluation" in text
    assert re.search(r"\n    runlocal +Shrinks steps and sizes", text)  # variant docstring
    assert re.search(r"\n    seed_tau_paper +SEED with the paper", text)  # names and text apart
    assert result.returncode == 0
    assert "--config.global_batch_size=512" in text and "config.json" in text
    assert "--verbosity=1" in text and "--workdir" in text


def test_train_clock_adds_resumes_and_not_finished_reruns(tmp_path):
    clock = run_record.TrainClock(str(tmp_path))
    clock.before = 0.0
    clock._t0 -= 372.0  # a first run of 372 s
    assert clock.save() == pytest.approx(372.0, abs=0.5)
    again = run_record.TrainClock(str(tmp_path))  # a resume that trains 14.5 s more
    again._t0 -= 14.5
    assert again.save() == pytest.approx(386.5, abs=0.5)
    finished = run_record.TrainClock(str(tmp_path))  # a rerun that trains nothing never saves
    assert finished.before == pytest.approx(386.5, abs=0.5)


def test_pretraining_records_config_teacher_and_train_time(tmp_path):
    import jax
    import jax.numpy as jnp

    from configs import default
    from rekd_jax import app
    from rekd_jax.models import heads, io

    spec = {
        "arch": "resnet18",
        "overrides": {"cifar_stem": True, "width_multiplier": 0.125, "num_classes": 0},
        "projector": {"hidden": 32, "dim": 128, "bn": False},
        "source": "rekd_jax mocov2 step 7",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False
    )
    io.save_encoder(str(tmp_path / "teacher"), spec, variables)
    config = default.get_config("tiny,runlocal")
    config.data.data_dir = str(tmp_path / "data")
    config.num_train_steps = 2
    config.log_every_steps = config.checkpoint_every_steps = 2
    config.tensorboard = "off"
    config.method = "rekd"
    config.rekd.teacher = "offline"
    config.teacher.checkpoint = str(tmp_path / "teacher")
    workdir = tmp_path / "student"
    student = app.run(config, str(workdir))
    saved = json.load(open(workdir / "config.json"))
    assert saved["method"] == "rekd" and saved["data"]["dataset"] == "rekd_shapes/tiny"
    record = json.load(open(workdir / "teacher.json"))
    assert record["arch"] == "resnet18" and record["step"] == 7  # what was loaded, not
    assert record["overrides"]["width_multiplier"] == 0.125  # config.teacher.arch
    assert config.teacher.arch == "resnet50"
    first = student["train_seconds"]
    assert first > 0
    rerun = app.run(config, str(workdir))  # finished: adds nothing
    assert rerun["train_seconds"] == first
    assert json.load(open(workdir / "train_time.json"))["train_seconds"] == first


def test_evaluation_metrics_are_on_disk_after_every_epoch(tmp_path):
    """A killed evaluation keeps the metrics of its finished epochs (metrics.jsonl flushed)."""
    from rekd_jax.evaluation import epoch_loop

    writer = logging_lib.create_writer(str(tmp_path), tensorboard="off")
    path = str(tmp_path / "metrics.jsonl")
    on_disk = []

    def run_epoch(state, epoch):
        on_disk.append(len(logging_lib.read_jsonl(path)))
        return state, {"train_loss": 1.0 / (epoch + 1)}

    epoch_loop.EpochLoop(None, writer, num_epochs=3, name="probe").run(0, run_epoch)
    assert on_disk == [0, 1, 2]
    writer.close()


def test_the_pretraining_summary_gives_the_knn_monitor_in_percent(tmp_path):
    config = recipes.base_config()
    config.mode = "pretrain"
    result = {"step": 10, "knn": {"knn/top1": 0.14, "knn/top5": 0.5}, "train_seconds": 3.0}
    text = run_summary.closing_summary(config, str(tmp_path), result)
    assert "kNN top-1 14.0%" in text.splitlines()[0]
