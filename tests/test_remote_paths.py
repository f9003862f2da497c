"""workdir and data_dir on gs://: the workdir lock, folders, JSON files, the metrics writer, the
dataset lookup, and a tiny pre-training killed and resumed with a gs:// workdir, all against
tests/fake_gcs.py (gs://BUCKET/PATH served from a local folder through the same fsspec and
TensorStore entry points the real GCS uses); and every entry point given a gs:// path where
gcsfs cannot be imported."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import fake_gcs
import pytest
from commands import fatal_line, run
from PIL import Image

from rekd_jax.core import fileio, workdir_lock
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "training", "fake_gcs_driver.py")


@pytest.fixture
def gcs(tmp_path):
    local = tmp_path / "gcs"
    local.mkdir()
    fake_gcs.install(str(local))
    fileio._warned.clear()
    return local


def test_paths_helpers_keep_urls(gcs):
    assert fileio.is_remote("gs://b/run") and not fileio.is_remote("run")
    assert fileio.absolute("gs://b/run") == "gs://b/run"
    assert fileio.absolute("run") == os.path.abspath("run")
    fileio.write_json("gs://b/run/x.json", {"a": 1})
    assert json.loads((gcs / "b" / "run" / "x.json").read_text()) == {"a": 1}
    assert fileio.exists("gs://b/run/x.json") and fileio.isdir("gs://b/run")
    assert fileio.listdir("gs://b/run") == ["x.json"]
    with pytest.raises(FileNotFoundError):
        fileio.listdir("gs://b/nothing")


def test_atomic_dir_on_gs_replaces_the_target_and_warns_once(gcs, caplog):
    target = "gs://b/run/encoders/student"
    with caplog.at_level(logging.WARNING):
        for value in ("old", "new"):
            with fileio.atomic_dir(target, what="encoder") as tmp:
                assert tmp.startswith("gs://b/run/encoders/incomplete.")
                fileio.write_text(tmp + "/spec.json", value)
    assert fileio.read_text(target + "/spec.json") == "new"
    assert sorted(os.listdir(gcs / "b" / "run" / "encoders")) == ["student"]
    warnings = [
        r.message for r in caplog.records if "cannot rename a folder atomically" in r.message
    ]
    assert len(warnings) == 1
    with pytest.raises(fileio.AlreadyExistsError, match="pass --overwrite"):
        with fileio.atomic_dir(target, overwrite=False, what="encoder"):
            pass
    with pytest.raises(RuntimeError):  # a failed build leaves the target as it was
        with fileio.atomic_dir(target) as tmp:
            fileio.write_text(tmp + "/spec.json", "broken")
            raise RuntimeError
    assert fileio.read_text(target + "/spec.json") == "new"
    assert sorted(os.listdir(gcs / "b" / "run" / "encoders")) == ["student"]


def test_a_cut_swap_on_gs_is_put_back(gcs):
    """A kill between moving the old target aside and copying the new one in."""
    target = "gs://b/run/enc"
    old = fileio.incomplete_path(target, "old", tag="999999.gone")
    old = old.replace(".gone.", f".{fileio._host()}.")  # a dead process of this host
    fileio.write_text(old + "/spec.json", "kept")
    done = fileio.clean_incomplete("gs://b/run", log=lambda m: None)
    assert done and fileio.read_text(target + "/spec.json") == "kept"
    assert os.listdir(gcs / "b" / "run") == ["enc"]


def test_workdir_lock_on_gs_is_a_holder_record(gcs, caplog):
    workdir = "gs://b/run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {
            "pid": sleeper.pid,
            "host": __import__("socket").gethostname(),
            "started": time.time(),
            "what": "pre-training",
        }
        fileio.write_json(workdir + "/.lock", record)
        assert workdir_lock.lock_holder(workdir)["pid"] == sleeper.pid
        with pytest.raises(workdir_lock.WorkdirBusyError, match=f"kill {sleeper.pid}"):
            workdir_lock.WorkdirLock(workdir, "pre-training").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert workdir_lock.lock_holder(workdir) is None  # its process is gone
    fileio.write_json(workdir + "/.lock", dict(record, host="preempted-vm"))
    with caplog.at_level(logging.WARNING):
        with workdir_lock.WorkdirLock(workdir, "evaluation"):
            assert workdir_lock.lock_holder(workdir)["pid"] == os.getpid()
    messages = " ".join(r.message for r in caplog.records)
    assert "taking over from pre-training" in messages and "preempted-vm" in messages
    assert "no exclusive locks" in messages
    assert workdir_lock.lock_holder(workdir) is None and not (gcs / "b" / "run" / ".lock").exists()


def test_metrics_writer_and_trim_on_gs(gcs):
    path = "gs://b/run/metrics.jsonl"
    writer = logging_lib.JsonlWriter(path)
    for step in (1, 2, 3):
        writer.write_scalars(step, {"train/loss": float(step)})
    writer.flush()
    (gcs / "b" / "run" / "metrics.jsonl").open("a").write('{"step": 4, "tor')  # a killed write
    writer = logging_lib.JsonlWriter(path)  # the resumed run
    assert logging_lib.trim_metrics(path, 2) == 2
    writer.write_scalars(3, {"train/loss": 30.0})
    writer.close()
    records = logging_lib.read_jsonl(path)
    assert [(r["step"], r["train/loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_dataset_lookup_in_a_gs_data_dir(gcs):
    for version in ("1.0.0", "1.1.0"):
        fileio.write_text(f"gs://b/data/mine/{version}/dataset_info.json", "{}")
    fileio.write_text("gs://b/data/mine/2.0.0/README", "no dataset_info.json: not a version")
    assert sources.find_dataset_dir("mine", "gs://b/data") == "gs://b/data/mine/1.1.0"
    assert sources.find_dataset_dir("mine:1.0.0", "gs://b/data") == "gs://b/data/mine/1.0.0"
    assert sources.find_dataset_dir("other", "gs://b/data") is None
    with pytest.raises(sources.DatasetNotFoundError, match="cannot be written to gs://b/data"):
        sources.open_split("rekd_shapes/tiny", "train", "gs://b/data")


def test_pretraining_with_a_gs_workdir_is_killed_and_resumed(tmp_path):
    """The tiny pre-training (configs/quickstart.py:tiny teacher stage, 6 steps) with
    --workdir=gs://bucket/run: SIGKILLed after its step-2 checkpoint, then the same command
    resumes it from that checkpoint, through the lock record the killed run left behind."""
    local = tmp_path / "gcs"
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
    )
    cmd = [sys.executable, DRIVER, str(local), "gs://bucket/run", "--checkpoint_every", "2"]
    proc = subprocess.Popen(
        cmd + ["--pause_after_save", "120"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 400
        for line in proc.stdout:
            if line.startswith("saved step 2") or time.time() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
    finally:
        proc.kill()
        proc.wait()
    run = local / "bucket" / "run"
    assert sorted(os.listdir(run / "checkpoints")) == ["2"], "not killed after step 2"
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid  # left behind
    resumed = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "final step 6" in resumed.stdout
    assert sorted(os.listdir(run / "checkpoints")) == ["2", "4", "6"]
    # Orbax took its GCS path: a commit marker instead of a rename
    assert (run / "checkpoints" / "6" / "commit_success.txt").exists()
    assert (run / "encoders" / "student" / "spec.json").exists()
    assert not (run / ".lock").exists()
    records = [r for r in logging_lib.read_jsonl(str(run / "metrics.jsonl")) if "train/loss" in r]
    assert [r["step"] for r in records] == list(range(1, 7))
    # resumed, not restarted: steps 1-2 are the killed run's records, steps 3-6 the new run's
    assert records[1]["time"] < killed_at < records[2]["time"]
    assert json.loads((run / "train_time.json").read_text())["train_seconds"] > 0


@pytest.fixture(scope="module")
def without_gcsfs(tmp_path_factory):
    """The commands' environment (tests/commands.py) where gcsfs cannot be imported, as in an
    install without the tpu extra: a `gcsfs` first on the path that raises ImportError (gcsfs
    may be installed here), and etils.epath told not to use TensorFlow's tf.io.gfile."""
    root = tmp_path_factory.mktemp("without_gcsfs")
    (root / "gcsfs").mkdir()
    (root / "gcsfs" / "__init__.py").write_text('raise ImportError("No module named gcsfs")\n')
    return {
        "tfds": str(root / "tfds"),
        "cache": str(root / "cache"),
        "env": {"PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "EPATH_USE_TF": "false"},
    }


MAIN = os.path.join(ROOT, "main.py")
# Every entry point given a gs:// path: (python arguments, with SRC for a folder of images).
GS_ENTRY_POINTS = {
    "pre-training workdir": [MAIN, "--config=default:tiny,runlocal", "--workdir=gs://b/run"],
    "pre-training data_dir": [
        MAIN,
        "--config=default:tiny,runlocal",
        "--workdir=run",
        "--config.data.data_dir=gs://b/data",
    ],
    "prepare": ["-m", "rekd_jax.data.prepare", "--src=SRC", "--name=pics", "--data_dir=gs://b/d"],
    "import_torch": [
        "-m",
        "rekd_jax.tools.import_torch",
        "--arch=resnet18",
        "--src=missing.pth",
        "--dst=gs://b/enc",
    ],
    "evaluation": [
        MAIN,
        "--config=knn_eval:tiny,runlocal",
        "--workdir=eval",
        "--config.checkpoint=gs://b/enc",
    ],
}


@pytest.mark.parametrize("entry_point", GS_ENTRY_POINTS)
def test_a_gs_path_without_gcsfs_is_one_line_naming_the_extra(without_gcsfs, tmp_path, entry_point):
    """One FATAL line naming the tpu extra (status 2), before the work: prepare before it
    scans --src, the importer before it reads --src (a file that does not exist here); nothing
    is written (no local folder named gs:)."""
    for cls in ("a", "b"):
        (tmp_path / "SRC" / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / "SRC" / "train" / cls / f"{i}.png")
    args = GS_ENTRY_POINTS[entry_point]
    result = run(without_gcsfs, *args, cwd=tmp_path, extra_env=without_gcsfs["env"])
    line = fatal_line(result)
    assert line.startswith("FATAL: StorageLibraryMissingError: gs://b/"), line
    assert line.endswith(
        "reaching gs:// needs gcsfs, which this Python cannot import; install it with "
        'pip install "rekd-jax[tpu]" (or pip install gcsfs)'
    ), line
    assert "Found" not in result.stdout and "loading" not in result.stderr
    assert not (tmp_path / "gs:").exists()
