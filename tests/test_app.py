"""main.py / app: bad configs fail before anything is compiled, with a message naming the field."""

import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from rekd_jax import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unknown_mode_names_the_field(tmp_path):
    config = ml_collections.ConfigDict({"mode": "pretrian"})
    with pytest.raises(ValueError, match=r"config.mode='pretrian'.*pretrain"):
        app.run(config, str(tmp_path))


def test_empty_workdir_is_refused():
    with pytest.raises(ValueError, match="--workdir"):
        app.run(ml_collections.ConfigDict({"mode": "pretrain"}), "")


def _main(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_main_rejects_unknown_override_without_traceback(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        textwrap.dedent("""
      import ml_collections
      def get_config(arg=None):
        return ml_collections.ConfigDict({"mode": "knn", "optim": {"lr": 0.1}})
  """)
    )
    result = _main(f"--config={cfg}", "--config.optim.lrr=1", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "--config.optim.lrr=1: unknown config field 'lrr'; did you mean 'lr'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_main_rejects_ill_typed_override(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        textwrap.dedent("""
      import ml_collections
      def get_config(arg=None):
        return ml_collections.ConfigDict({"mode": "knn", "batch_size": 8})
  """)
    )
    result = _main(f"--config={cfg}", "--config.batch_size=abc", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "--config.batch_size=abc" in result.stderr


def test_main_reports_config_errors_without_traceback(tmp_path):
    result = _main("--config=configs/alexnet.py:offline,runlocal", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "FATAL: ConfigError: config.teacher.checkpoint" in result.stderr
    assert "import_torch" in result.stderr and "Traceback" not in result.stderr


def test_main_reports_a_missing_dataset_with_how_to_prepare_it(tmp_path):
    result = _main(
        "--config=configs/default.py:runlocal",
        "--config.data.dataset=cifar10",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        f"--workdir={tmp_path / 'w'}",
    )
    assert result.returncode != 0
    assert "FATAL: DatasetNotFoundError: dataset 'cifar10' is not prepared" in result.stderr
    assert "python -m rekd_jax.data.prepare" in result.stderr and "Traceback" not in result.stderr
