"""Reliability: no command loses data, and every expected failure is one clear line.

Each case runs real files, real processes and real signals: SIGKILL in the middle of a dataset
build and of encoder saves, two concurrent runs on one workdir, a truncated newest checkpoint,
a resumed run with a changed config, unreadable folders and symlink loops, a 16-bit PNG, a
MemoryError under an address-space limit, and the entry points' one-line errors.

Permissions: the tests run as root, for whom chmod 000 changes nothing. The unreadable-folder
case therefore runs prepare in a child process without the DAC-override capabilities
(`setpriv --bounding-set -dac_override,-dac_read_search`), so the kernel enforces the modes as
for any user; as a non-root user it runs directly; it is skipped only when neither works.

Pre-training cases use configs/default.py:tiny,runlocal (8 steps on rekd_shapes/tiny, checkpoints
at steps 4 and 8) or tests/training/pretrain_driver.py, with one persistent compilation cache,
so after the first run each takes seconds.
"""

import glob
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax.core import checkpoint as checkpoint_lib
from rekd_jax.core import fileio, workdir_lock
from rekd_jax.core import logging as logging_lib
from rekd_jax.training import resume

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "training", "pretrain_driver.py")
RUNLOCAL = "--config=configs/default.py:tiny,runlocal"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A TFDS data_dir and a compilation cache shared by every subprocess of this module."""
    root = tmp_path_factory.mktemp("reliability")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def _env(shared):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        TFDS_DATA_DIR=shared["tfds"],
        JAX_COMPILATION_CACHE_DIR=shared["cache"],
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    return env


def _run(shared, *args, timeout=600, **kwargs):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=_env(shared),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def _main(shared, *args, **kwargs):
    return _run(shared, "main.py", *args, **kwargs)


def _fatal_line(result):
    """The single FATAL line of a failed command (asserting there is no traceback)."""
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("FATAL")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _spawn(shared, code):
    """A Python child process running `code` that prints 'ready' when it is set up."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(shared),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + proc.stderr.read()[-3000:]
    return proc


def _lock_holder(shared, workdir, purpose):
    """A child process holding WORKDIR's lock for `purpose` (for a minute)."""
    return _spawn(
        shared,
        f"""
import time
from rekd_jax.core import workdir_lock
lock = workdir_lock.WorkdirLock({workdir!r}, {purpose!r}).acquire()
print("ready", flush=True)
time.sleep(60)
""",
    )


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- fileio


def test_atomic_dir_survives_sigkill_and_cleans_the_leftover(tmp_path, shared):
    target = tmp_path / "out"
    with fileio.atomic_dir(str(target)) as tmp:
        open(os.path.join(tmp, "data"), "w").write("old")
    proc = _spawn(
        shared,
        f"""
import os, time
from rekd_jax.core import fileio
with fileio.atomic_dir({str(target)!r}) as tmp:
    open(os.path.join(tmp, "data"), "w").write("half")
    print("ready", flush=True)
    time.sleep(60)
""",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = glob.glob(str(tmp_path / "incomplete.*"))
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0]
    assert (target / "data").read_text() == "old"  # the old output is untouched
    with fileio.atomic_dir(str(target)) as tmp:  # the next writer cleans the leftover
        open(os.path.join(tmp, "data"), "w").write("new")
    assert (target / "data").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(fileio.AlreadyExistsError, match="pass --force"):
        with fileio.atomic_dir(str(target), overwrite=False, flag="--force"):
            pass


def test_a_swap_cut_in_the_middle_is_put_back(tmp_path):
    """A kill between the two renames of a non-atomic swap leaves only the 'old' copy."""
    old = fileio.incomplete_path(str(tmp_path / "enc"), "old").replace(
        f".{os.getpid()}.", f".{_dead_pid()}."
    )
    os.makedirs(old)
    open(os.path.join(old, "spec.json"), "w").write("{}")
    done = fileio.clean_incomplete(str(tmp_path), log=lambda m: None)
    assert "restored" in done[0] and os.listdir(tmp_path) == ["enc"]
    assert (tmp_path / "enc" / "spec.json").read_text() == "{}"


def test_workdir_lock_names_the_holder_and_is_taken_over_after_a_kill(tmp_path, shared):
    workdir = str(tmp_path / "w")
    proc = _lock_holder(shared, workdir, "pre-training")
    with pytest.raises(workdir_lock.WorkdirBusyError) as info:
        workdir_lock.WorkdirLock(workdir, "evaluation").acquire()
    message = str(info.value)
    assert f"pid {proc.pid} on {socket.gethostname()}" in message and "pre-training" in message
    assert f"kill {proc.pid}" in message and workdir_lock.lock_holder(workdir)["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workdir_lock.lock_holder(workdir) is None  # the kernel released the dead process's lock
    with workdir_lock.WorkdirLock(workdir, "evaluation"):
        assert workdir_lock.lock_holder(workdir)["pid"] == os.getpid()
    assert workdir_lock.lock_holder(workdir) is None


# ----------------------------------------------------------------------------- datasets


def _png(array):
    import io as _io

    from PIL import Image

    out = _io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _source(root, n=40, value=0):
    for cls in ("a", "b"):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(
                _png(np.full((8, 8, 3), (value + i) % 256, np.uint8))
            )


def _prepare(shared, src, data_dir, *extra):
    return _run(
        shared,
        "-m",
        "rekd_jax.data.prepare",
        "--src",
        src,
        "--name",
        "things",
        "--data_dir",
        data_dir,
        "--num_workers",
        "1",
        *extra,
    )


def _num_train(data_dir):
    return len(tfds.data_source("things", data_dir=data_dir)["train"])


def test_prepare_keeps_the_old_dataset_on_sigkill_and_on_a_bad_source(tmp_path, shared):
    data_dir = str(tmp_path / "tfds")
    _source(tmp_path / "small", n=5)
    assert _prepare(shared, tmp_path / "small", data_dir).returncode == 0
    assert _num_train(data_dir) == 10
    # Refused without --overwrite, with one line naming the flag.
    line = _fatal_line(_prepare(shared, tmp_path / "small", data_dir))
    assert "already exists" in line and "--overwrite" in line
    # A bad source with --overwrite: the old version is still there.
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    line = _fatal_line(_prepare(shared, tmp_path / "bad", data_dir, "--overwrite"))
    assert "no readable images" in line and _num_train(data_dir) == 10
    # SIGKILL while the new version is being written.
    _source(tmp_path / "big", n=1500)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rekd_jax.data.prepare",
            "--src",
            str(tmp_path / "big"),
            "--name",
            "things",
            "--data_dir",
            data_dir,
            "--num_workers",
            "1",
            "--overwrite",
        ],
        cwd=ROOT,
        env=_env(shared),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pattern = os.path.join(data_dir, "things", "incomplete.*", "_build")
    deadline = time.time() + 120
    while not glob.glob(pattern) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert glob.glob(os.path.join(data_dir, "things", "incomplete.*"))
    assert _num_train(data_dir) == 10  # the old version is complete and readable
    # The next build removes the leftover and replaces the dataset.
    assert _prepare(shared, tmp_path / "big", data_dir, "--overwrite").returncode == 0
    assert _num_train(data_dir) == 3000
    assert sorted(os.listdir(os.path.join(data_dir, "things"))) == ["1.0.0"]


def test_prepare_reports_every_unreadable_entry_by_reason(tmp_path):
    from rekd_jax.data import prepare, sources

    src = tmp_path / "src"
    _source(src, n=2)
    (src / "empty_class").mkdir()
    sixteen = np.full((8, 8), 40000, np.uint16)
    (src / "a" / "deep.png").write_bytes(_png(sixteen))
    os.symlink(".", src / "a" / "loop")  # a folder link back to its own folder
    os.symlink("self.png", src / "b" / "self.png")  # a file link to itself
    os.symlink("gone.png", src / "b" / "dangling.png")
    logged = []
    report = prepare.prepare(
        str(src), "reasons", str(tmp_path / "tfds"), num_workers=1, log=logged.append
    )
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "a/loop": "symlink_loop",
        "b/self.png": "symlink_loop",
        "b/dangling.png": "broken_link",
    }
    assert report["empty_classes"] == {"train": ["empty_class"]}
    assert any("warning" in line and "empty_class" in line for line in logged)
    # The 16-bit image is scaled (40000 / 65535 * 255 = 155.6), not clipped to 255.
    split = sources.open_split("reasons", "train", str(tmp_path / "tfds"))
    names = split.metadata()["file_names"]
    record = split.read([names.index("a/deep.png")])[0]
    assert np.all(sources.decode_image(record["image"]) == 156)


def test_prepare_follows_no_folder_link_out_of_its_class(tmp_path):
    from rekd_jax.data import prepare, sources

    src = tmp_path / "src"
    _source(src, n=3)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    (src / "a" / "sub").mkdir()
    (src / "a" / "sub" / "s.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    os.symlink("..", src / "a" / "up")  # up to the source: every class below it
    os.symlink("../b", src / "a" / "to_b")  # into another class
    os.symlink(outside, src / "a" / "out")  # out of the source
    os.symlink("sub", src / "a" / "in")  # inside its class: followed, each folder read once
    os.symlink(outside / "x.png", src / "b" / "x.png")  # a file link is followed
    report = prepare.prepare(str(src), "links", str(tmp_path / "tfds"), num_workers=1)
    assert {s["path"]: s["reason"] for s in report["skipped"]} == {
        "a/up": "symlink_loop",
        "a/to_b": "link_outside_class",
        "a/out": "link_outside_class",
        "a/sub": "symlink_loop",  # already read through a/in
    }
    split = sources.open_split("links", "train", str(tmp_path / "tfds"))
    names = split.metadata()["file_names"]
    labels = [int(r["label"]) for r in split.read(range(len(names)))]
    assert sorted(zip(names, labels)) == [
        *[(f"a/{i}.png", 0) for i in range(3)],
        ("a/in/s.png", 0),
        *[(f"b/{i}.png", 1) for i in range(3)],
        ("b/x.png", 1),
    ]


_UNREADABLE = """
import json, sys
from rekd_jax.data import prepare
report = prepare.prepare(sys.argv[1], "perm", sys.argv[2], num_workers=1, log=lambda m: None)
print(json.dumps({s["path"]: s["reason"] for s in report["skipped"]}))
"""


def test_prepare_reports_unreadable_folders_and_files(tmp_path, shared):
    src = tmp_path / "src"
    _source(src, n=2)
    (src / "c").mkdir()
    (src / "c" / "0.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    (src / "b" / "sub").mkdir()
    (src / "b" / "sub" / "x.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    os.chmod(src / "c", 0)  # an unreadable class folder
    os.chmod(src / "b" / "sub", 0)  # an unreadable subfolder
    os.chmod(src / "a" / "1.png", 0)  # an unreadable file
    command = [sys.executable, "-c", _UNREADABLE, str(src), str(tmp_path / "tfds")]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file modes cannot be enforced")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", caps, "--inh-caps", caps] + command
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=_env(shared), capture_output=True, text=True, timeout=300
        )
    finally:
        for path in (src / "c", src / "b" / "sub", src / "a" / "1.png"):
            os.chmod(path, 0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    reasons = json.loads(result.stdout.splitlines()[-1])
    assert reasons == {"c": "permission", "b/sub": "permission", "a/1.png": "permission"}


def test_memory_error_while_decoding_is_not_taken_for_a_corrupt_file(tmp_path, shared):
    from PIL import Image

    Image.new("L", (12000, 12000), 7).save(tmp_path / "big.png")  # 170 kB, 144 MB decoded
    code = """
import resource, sys, warnings
warnings.simplefilter("ignore")
from rekd_jax.data import prepare
vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 100 * 2**20, vm + 100 * 2**20))
try:
    print(prepare._load(sys.argv[1])[0])
except MemoryError:
    print("MemoryError")
"""
    result = _run(shared, "-c", code, tmp_path / "big.png")
    assert result.stdout.strip() == "MemoryError", result.stdout + result.stderr[-2000:]


# ----------------------------------------------------------------------------- encoders


def _encoder(seed=0):
    import jax

    from rekd_jax.models import heads

    spec = {
        "arch": "alexnet",
        "overrides": {"num_classes": 0, "cifar_stem": True},
        "projector": None,
        "source": f"test {seed}",
    }
    module = heads.build_encoder(spec)
    variables = module.init(
        jax.random.PRNGKey(seed), np.zeros((1, 32, 32, 3), np.float32), train=False
    )
    return spec, jax.tree_util.tree_map(np.asarray, dict(variables))


def test_encoder_saves_killed_at_random_moments_never_lose_the_encoder(tmp_path, shared):
    from rekd_jax.models import io

    dst = str(tmp_path / "enc")
    spec, variables = _encoder()
    io.save_encoder(dst, spec, variables)
    writer = f"""
import numpy as np, jax
from rekd_jax.models import heads, io
spec = {spec!r}
module = heads.build_encoder(spec)
v = module.init(jax.random.PRNGKey(1), np.zeros((1, 32, 32, 3), np.float32), train=False)
print("ready", flush=True)
for i in range(1000):
    io.save_encoder({dst!r}, dict(spec, source=f"loop {{i}}"), v)
"""
    for delay in (0.3, 0.7, 1.1):
        proc = _spawn(shared, writer)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded_spec, _ = io.load_encoder(dst)  # always a complete encoder, old or new
        assert loaded_spec["source"].startswith(("test", "loop"))
    with pytest.raises(fileio.AlreadyExistsError, match="--overwrite"):
        io.save_encoder(dst, spec, variables, overwrite=False)


def _import(capsys, *args):
    """import_torch's CLI in this process: (exit status, the FATAL line or '')."""
    from rekd_jax.tools import import_torch

    code = import_torch.main(["--arch", "resnet18", *map(str, args)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("FATAL")]
    assert len(lines) == (1 if code else 0), err
    return code, "".join(lines)


def test_import_torch_failures_are_one_line(tmp_path, shared, capsys):
    torch = pytest.importorskip("torch")
    import torchvision

    torch.save(
        torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), tmp_path / "ok.pth"
    )
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth").write_bytes(b"hello, not a checkpoint")
    for name, says in (
        ("truncated.pth", "truncated or corrupt"),
        ("garbage.pth", "is not a PyTorch checkpoint"),
    ):
        code, line = _import(capsys, "--src", tmp_path / name, "--dst", tmp_path / "x")
        assert code == 2 and says in line and "trust_pickle" not in line
    # An unwritable --dst (below a file) fails at once, before the checkpoint is read.
    (tmp_path / "file").write_text("")
    start = time.time()
    code, line = _import(capsys, "--src", tmp_path / "ok.pth", "--dst", tmp_path / "file" / "enc")
    assert code == 2 and str(tmp_path / "file") in line and time.time() - start < 10
    # An existing encoder is replaced only with --overwrite (the real CLI process, once).
    assert _import(capsys, "--src", tmp_path / "ok.pth", "--dst", tmp_path / "enc")[0] == 0
    result = _run(
        shared,
        "-m",
        "rekd_jax.tools.import_torch",
        "--arch",
        "resnet18",
        "--src",
        tmp_path / "ok.pth",
        "--dst",
        tmp_path / "enc",
    )
    line = _fatal_line(result)
    assert "already exists" in line and "--overwrite" in line
    code, _ = _import(
        capsys, "--src", tmp_path / "ok.pth", "--dst", tmp_path / "enc", "--overwrite"
    )
    assert code == 0 and sorted(os.listdir(tmp_path)) == [
        "enc",
        "file",
        "garbage.pth",
        "ok.pth",
        "truncated.pth",
    ]


# ----------------------------------------------------------------------------- main.py


def test_main_expected_failures_are_one_line(tmp_path, shared):
    line = _fatal_line(
        _main(shared, RUNLOCAL, "--config.global_batch_size=abc", f"--workdir={tmp_path / 'w'}")
    )
    assert "--config.global_batch_size=abc" in line and "invalid literal" in line
    line = _fatal_line(_main(shared, RUNLOCAL))
    assert "--workdir is missing" in line
    (tmp_path / "file").write_text("")
    line = _fatal_line(_main(shared, RUNLOCAL, f"--workdir={tmp_path / 'file'}"))
    assert line.startswith("FATAL: FileExistsError") and str(tmp_path / "file") in line
    line = _fatal_line(
        _main(
            shared,
            RUNLOCAL,
            "--config.global_batch_size=256",
            "--config.mocov2.queue_size=512",
            f"--workdir={tmp_path / 'w'}",
        )
    )
    assert "exceeds the 200 examples" in line and "--config.global_batch_size" in line
    debug = _main(shared, RUNLOCAL, f"--workdir={tmp_path / 'file'}", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.fixture(scope="module")
def runlocal_workdir(tmp_path_factory, shared):
    """A finished runlocal pre-training (checkpoints at steps 4 and 8)."""
    workdir = tmp_path_factory.mktemp("runlocal") / "w"
    result = _main(shared, RUNLOCAL, f"--workdir={workdir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_resume_with_a_changed_config_stops_with_the_differences(
    tmp_path, shared, runlocal_workdir
):
    workdir = tmp_path / "w"
    shutil.copytree(runlocal_workdir, workdir)
    assert json.load(open(workdir / resume.SIGNATURE_FILE))["student.arch"] == "resnet18"
    changes = [
        "--config.student.arch=resnet34",
        "--config.optimizer.base_learning_rate=0.1",
        "--config.dtype=bfloat16",
        "--config.num_train_steps=12",
        "--config.mocov2.temperature=0.1",
        "--config.data.image_size=24",
        "--config.data.eval_resize=24",
    ]
    line = _fatal_line(_main(shared, RUNLOCAL, f"--workdir={workdir}", *changes))
    for diff in (
        "student.arch: 'resnet18' -> 'resnet34'",
        "optimizer.base_learning_rate: 0.03 -> 0.1",
        "dtype: 'float32' -> 'bfloat16'",
        "num_train_steps: 8 -> 12",
        "mocov2.temperature: 0.2 -> 0.1",
        "data.image_size: 16 -> 24",
    ):
        assert diff in line
    assert "--config.allow_config_change=True" in line
    # Operational fields may change; the accepted change is recorded.
    result = _main(
        shared,
        RUNLOCAL,
        f"--workdir={workdir}",
        "--config.log_every_steps=2",
        "--config.optimizer.base_learning_rate=0.1",
        "--config.allow_config_change=True",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(workdir / resume.SIGNATURE_FILE))["optimizer.base_learning_rate"] == 0.1


def test_truncated_newest_checkpoint_falls_back_and_metrics_hold_each_step_once(
    tmp_path, shared, runlocal_workdir
):
    workdir = tmp_path / "w"
    shutil.copytree(runlocal_workdir, workdir)
    for path in glob.glob(
        str(workdir / "checkpoints" / "8" / "state" / "**" / "d" / "*"), recursive=True
    ):
        os.truncate(path, 10)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train/lo')  # a torn last line, as a kill mid-write leaves it
    assert [
        r["step"]
        for r in logging_lib.read_jsonl(str(workdir / "metrics.jsonl"))
        if "train/loss" in r
    ] == [4, 8]
    result = _main(shared, RUNLOCAL, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Event loop is closed" not in result.stderr
    assert "checkpoints/8 cannot be restored" in result.stderr
    assert "resumed from" in result.stderr and "step 4" in result.stderr
    aside = os.listdir(workdir / "checkpoints_unrestorable")
    assert len(aside) == 1 and aside[0].startswith("8.")  # kept, not deleted
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    records = logging_lib.read_jsonl(str(workdir / "metrics.jsonl"))
    assert [r["step"] for r in records if "train/loss" in r] == [4, 8]
    assert sum("hparams" in r for r in records) == 1


def test_no_checkpoint_restores_moves_nothing(tmp_path, shared, runlocal_workdir):
    workdir = tmp_path / "w"
    shutil.copytree(runlocal_workdir, workdir)
    for step in ("4", "8"):
        for path in glob.glob(
            str(workdir / "checkpoints" / step / "state" / "**" / "d" / "*"), recursive=True
        ):
            os.truncate(path, 10)
    line = _fatal_line(_main(shared, RUNLOCAL, f"--workdir={workdir}"))
    assert "CheckpointRestoreError" in line and "step 8" in line and "step 4" in line
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    assert not os.path.exists(workdir / "checkpoints_unrestorable")


def test_checkpoints_without_checksums_restore_unverified_or_fall_back(
    tmp_path, shared, runlocal_workdir
):
    """Checkpoints as written without checksums: the newest, its side item edited to {}, is
    passed over like damage; the one before restores unverified, with one warning."""
    workdir = tmp_path / "w"
    shutil.copytree(runlocal_workdir, workdir)
    for step in ("4", "8"):
        shutil.rmtree(workdir / "checkpoints" / step / "checksums")
    (workdir / "checkpoints" / "8" / "extra" / "metadata").write_text("{}")
    result = _main(shared, RUNLOCAL, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    fallback = [line for line in lines if "cannot be restored" in line]
    assert (
        len(fallback) == 1
        and "checkpoints/8 cannot be restored: its side item holds no " in (fallback[0])
    )
    unverified = [line for line in lines if "unverified" in line]
    assert len(unverified) == 1 and "checkpoints/4 has no checksums" in unverified[0]
    assert "resumed from" in result.stderr and "step 4" in result.stderr
    assert os.listdir(workdir / "checkpoints_unrestorable")[0].startswith("8.")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]  # step 8 trained again


def _build_flawed_shapes(data_dir):
    """A TFDS ArrayRecord dataset 'flawed_shapes' (200 train / 100 test random 32x32 images,
    10 classes) whose train records 5 and 6 hold broken images; its train file."""

    class FlawedShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(32, 32, 3)),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(200, broken=(5, 6)),
                "test": self._generate_examples(100),
            }

        def _generate_examples(self, count, broken=()):
            rng = np.random.default_rng(count)
            for i in range(count):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(png, "PNG")
                image = b"not an image" if i in broken else png.getvalue()
                yield i, {"image": image, "label": i % 10}

    FlawedShapes.name = "flawed_shapes"
    FlawedShapes(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    (train_file,) = glob.glob(str(data_dir / "flawed_shapes" / "1.0.0" / "*-train.array_record*"))
    return train_file


def test_a_dataset_file_truncated_during_training_stops_and_resumes(tmp_path, shared):
    """A train file truncated while a run reads it (data.resident=off): one line naming the
    file; the checkpoints stay, and once the file is restored the same command resumes. The
    two broken images are skipped, replaced, counted in the metrics and warned about once."""
    train_file = _build_flawed_shapes(tmp_path / "tfds")
    shutil.copy(train_file, tmp_path / "intact")
    workdir = tmp_path / "w"
    command = [
        sys.executable,
        "main.py",
        RUNLOCAL,
        f"--workdir={workdir}",
        "--config.data.dataset=flawed_shapes",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.data.resident=off",
        "--config.data.prefetch=1",
        "--config.num_train_steps=16",
        "--config.checkpoint_every_steps=2",
        "--config.log_every_steps=1",
    ]
    run = subprocess.Popen(
        command, cwd=ROOT, env=_env(shared), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 600
        while not (workdir / "checkpoints" / "2").is_dir() and run.poll() is None:
            assert time.time() < deadline, "no checkpoint at step 2"
            time.sleep(0.02)
        run.send_signal(signal.SIGSTOP)  # the reader holds the file open, a few batches ahead
        os.truncate(train_file, os.path.getsize(train_file) // 2)
        run.send_signal(signal.SIGCONT)
        _, stderr = run.communicate(timeout=600)
    finally:
        run.kill()
        run.wait()
    result = subprocess.CompletedProcess(command, run.returncode, "", stderr.decode())
    line = _fatal_line(result)
    assert result.returncode == 2
    assert line.startswith("FATAL: DatasetCorruptError: dataset 'flawed_shapes' split 'train': ")
    assert f" in {train_file} is empty (its file is truncated or damaged)" in line
    assert "restore it from a copy or prepare it again" in line
    assert "config.data.max_skipped_fraction=0.01" in line
    saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints"))
    assert saved and saved[-1] < 16

    shutil.copy(tmp_path / "intact", train_file)
    resumed = subprocess.run(
        command, cwd=ROOT, env=_env(shared), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} step {saved[-1]}" in resumed.stderr
    assert not (workdir / "checkpoints_unrestorable").exists()
    warned = [x for x in resumed.stderr.splitlines() if "skipped, replaced by another" in x]
    assert len(warned) == 1 and "is not a decodable image" in warned[0]
    rows = [r for r in logging_lib.read_jsonl(str(workdir / "metrics.jsonl")) if "step" in r]
    assert [r["step"] for r in rows] == list(range(1, 17))
    after = [r["train/skipped_records"] for r in rows if r["step"] > saved[-1]]
    assert sum(after) >= 1 and set(after) <= {0, 1, 2}


def _two_unverified_checkpoints(directory):
    """Checkpoints 1 and 2 of a tree, as written without checksums."""
    data = {"epoch": 0, "step": 1, "seed": 0, "num_examples": 10, "global_batch_size": 2}
    tree = {"w": np.arange(40, dtype=np.float32), "s": np.int32(1)}
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    for step in (1, 2):
        ckpt.save(step, tree, {"data": data})
        shutil.rmtree(os.path.join(directory, str(step), checkpoint_lib.CHECKSUMS))
    ckpt.close()
    return tree, data


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda extra: extra.write_text("{}"), "holds no data-iterator state ('data')"),
        (
            lambda extra: extra.write_text('{"data": {"epoch": 1}}'),
            "data-iterator state is incomplete (data iterator state lacks ['step', ",
        ),
        (lambda extra: extra.unlink(), "extra/metadata not found"),
    ],
)
def test_missing_or_incomplete_checkpoint_metadata_falls_back(tmp_path, caplog, edit, reason):
    from rekd_jax.training import pretrain

    directory = str(tmp_path / "ckpt")
    tree, data = _two_unverified_checkpoints(directory)
    edit(tmp_path / "ckpt" / "2" / "extra" / "metadata")
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    restored, extra, step = ckpt.restore_newest(tree, check_extra=pretrain.check_side_item)
    assert step == 1 and extra == {"data": data} and np.array_equal(restored["w"], tree["w"])
    (failed,) = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
    assert failed.startswith(f"checkpoint {directory}/2 cannot be restored: ") and reason in failed
    (unverified,) = [r.getMessage() for r in caplog.records if "unverified" in r.getMessage()]
    assert unverified.startswith(f"checkpoint {directory}/1 has no checksums")
    assert os.listdir(tmp_path / "ckpt_unrestorable")[0].startswith("2.")
    ckpt.close()


def test_an_unverified_checkpoint_is_warned_about_once(tmp_path, caplog):
    directory = str(tmp_path / "ckpt")
    tree, _ = _two_unverified_checkpoints(directory)
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    ckpt.restore(tree, 2)
    ckpt.restore(tree, 2)
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        f"checkpoint {directory}/2 has no checksums (it was written without them): restoring it "
        "unverified"
    ]
    ckpt.close()


def test_two_runs_on_one_workdir(tmp_path, shared):
    """A second pre-training (or an evaluation) on a busy workdir exits with one line naming
    the first; after the first is SIGKILLed, the next run takes its lock over and resumes."""
    workdir = tmp_path / "w"
    first = subprocess.Popen(
        [sys.executable, DRIVER, str(workdir), "--pause_after_save", "60"],
        cwd=ROOT,
        env=_env(shared),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("saved step"):  # after TFDS's own lines
            lines.append(first.stdout.readline())
            assert lines[-1], "".join(lines)
        second = _fatal_line(_main(shared, RUNLOCAL, f"--workdir={workdir}"))
        assert f"pid {first.pid}" in second and "pre-training" in second
        assert second.startswith("FATAL: WorkdirBusyError")
        # Evaluating the encoder the paused run is about to export: one line from main.py;
        # reading it directly names the writer (after retrying) instead of a bare error.
        encoder = workdir / "encoders" / "student"
        _fatal_line(
            _main(
                shared,
                "--config=configs/knn_eval.py",
                f"--config.checkpoint={encoder}",
                f"--workdir={tmp_path / 'eval'}",
            )
        )
        from rekd_jax.models import io

        with pytest.raises(io.EncoderBusyError, match=f"pid {first.pid}"):
            io.load_encoder(encoder, retries=1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    result = _run(shared, DRIVER, workdir)
    assert result.returncode == 0 and "final step 6" in result.stdout, result.stderr[-3000:]
    records = logging_lib.read_jsonl(str(workdir / "metrics.jsonl"))
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # each step once


def test_evaluation_holds_its_workdir(tmp_path, shared):
    workdir = str(tmp_path / "eval")
    holder = _lock_holder(shared, workdir, "evaluation")
    try:
        from rekd_jax.models import io

        spec, variables = _encoder()
        io.save_encoder(str(tmp_path / "enc"), spec, variables)
        line = _fatal_line(
            _main(
                shared,
                "--config=configs/knn_eval.py",
                f"--config.checkpoint={tmp_path / 'enc'}",
                f"--workdir={workdir}",
            )
        )
        assert line.startswith("FATAL: WorkdirBusyError") and f"pid {holder.pid}" in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_restores_of_damaged_checkpoints_print_no_closed_loop_tracebacks(tmp_path, shared):
    # TensorStore reads still in flight when a damaged checkpoint's restore fails call back
    # into Orbax's closed event loop, sometimes after the restore returned (CI once caught
    # one past a time-boxed capture). Ten damaged restores in one process: none may print,
    # and an unrelated unraisable error must still reach standard error.
    code = """
import glob, os, sys
import numpy as np
from rekd_jax.core import checkpoint
tree = {"a": np.arange(100000, dtype=np.float32), "b": {"c": np.ones((300, 300), np.float32)}}
for attempt in range(10):
    directory = os.path.join(sys.argv[1], str(attempt))
    ckpt = checkpoint.Checkpointer(directory, async_save=False)
    ckpt.save(4, tree); ckpt.save(8, tree)
    for path in glob.glob(os.path.join(directory, "8", "state", "**", "d", "*"), recursive=True):
        os.truncate(path, 10)
    assert ckpt.restore_newest(tree)[2] == 4
    ckpt.close()
class Unrelated:
    def __del__(self):
        raise ValueError("unrelated failure in __del__")
Unrelated()
print("done", flush=True)
"""
    result = _run(shared, "-c", code, tmp_path, timeout=300)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    assert "Event loop is closed" not in result.stderr
    assert "unrelated failure in __del__" in result.stderr
    assert result.stderr.count("cannot be restored") == 10


def test_nan_message_names_only_a_finished_async_checkpoint(tmp_path):
    from rekd_jax.training import pretrain

    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=True)
    ckpt.save(3, {"w": np.ones((256, 256), np.float32)})  # still being written (async)
    with pytest.raises(pretrain.NonFiniteError, match="last good checkpoint is step 3"):
        pretrain._check_finite([(4, {"loss": float("nan")})], ckpt)
    assert os.listdir(tmp_path / "ckpt") == ["3"]  # finalised (no temporary folder) by then
    ckpt.close()


def test_trim_and_read_metrics(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w") as f:
        f.write(
            '{"hparams": {"a": 1}}\n{"step": 1, "x": 1}\n{"step": 2, "x": 2}\n'
            '{"step": 3, "x": 3}\n{"step": 4, "x'
        )
    assert [r.get("step") for r in logging_lib.read_jsonl(path)] == [None, 1, 2, 3]
    assert logging_lib.trim_metrics(path, 2) == 2
    assert [r.get("step") for r in logging_lib.read_jsonl(path)] == [None, 1, 2]
    with open(path, "a") as f:
        f.write('oops\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 4 is not JSON"):
        logging_lib.read_jsonl(path)
