"""Ctrl-C (a real SIGINT) to real commands at each phase: setting up, inside XLA compilation,
training (one and two Ctrl-C), evaluation, prepare and the importer; SIGTERM to an
evaluation; the `python -m` tools (prepare, the importer, the report) in their first seconds,
while they import their libraries. Every stop is one line, no traceback, never a crash, with
exit status 130 (143 for SIGTERM); in training the first Ctrl-C saves a checkpoint at the next
step boundary and the rerun resumes from it.

Each child is signalled once its stderr shows the phase's own line ("building ...",
"compiling the training step ...", a metrics line, "writing NAME ...", "loading FILE"), or,
before it prints anything, once /proc shows the phase: the child catches SIGTERM (its first
line ran) or has loaded a library's native code (numpy, jaxlib, ... are being imported).
"""

import json
import os
import signal
import sys
import time

import numpy as np
import pytest
from commands import Child, last_line, run

INTERRUPTED = (
    "interrupted (Ctrl-C): stopped at once; everything already written stays valid "
    "(outputs are written atomically), rerun the same command to continue"
)
TERMINATED = INTERRUPTED.replace("interrupted (Ctrl-C)", "terminated (SIGTERM)")
PRETRAIN = ["main.py", "--config=default:tiny,runlocal"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupts")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def assert_clean_stop(status, text, line=INTERRUPTED, code=130):
    assert status == code, text[-3000:]
    assert last_line(text) == line, text[-3000:]
    for crash in ("Traceback", "Fatal Python error", "Segmentation fault", "KeyboardInterrupt"):
        assert crash not in text, text[-3000:]


def test_ctrl_c_while_setting_up(shared, tmp_path):
    child = Child(shared, *PRETRAIN, f"--workdir={tmp_path / 'w'}")
    child.wait_for("building the models")
    child.signal(signal.SIGINT)
    assert_clean_stop(*child.finish())


def test_ctrl_c_inside_xla_compilation_is_one_line_not_a_crash(shared, tmp_path):
    """Raised inside XLA's compilation, a KeyboardInterrupt can end in a segmentation fault at
    interpreter shutdown; the cache is off so that the compilation really runs."""
    child = Child(
        shared,
        *PRETRAIN,
        f"--workdir={tmp_path / 'w'}",
        "--xla_cache=off",
        extra_env={"JAX_ENABLE_COMPILATION_CACHE": "false"},
    )
    child.wait_for("compiling the training step")
    child.signal(signal.SIGINT)
    assert_clean_stop(*child.finish())


def _training(shared, workdir, steps=400):
    """A run long enough to be signalled while it trains (8 steps are logged each line)."""
    return Child(
        shared,
        *PRETRAIN,
        f"--workdir={workdir}",
        f"--config.num_train_steps={steps}",
        "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=1000",
    )


def test_ctrl_c_while_training_saves_at_the_next_step_and_the_rerun_resumes(shared, tmp_path):
    workdir = tmp_path / "w"
    child = _training(shared, workdir)
    child.wait_for("] loss=")
    child.signal(signal.SIGINT)
    status, text = child.finish()
    line = last_line(text)
    assert status == 130 and line.startswith("interrupted (Ctrl-C) at step "), text[-3000:]
    assert line.endswith(": checkpoint saved, rerun the same command to resume")
    assert "Traceback" not in text
    step = int(line.split("at step ")[1].split(":")[0])
    assert 2 <= step < 400 and (workdir / "checkpoints" / str(step)).is_dir()
    again = run(
        shared,
        *PRETRAIN,
        f"--workdir={workdir}",
        f"--config.num_train_steps={step + 2}",
        "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=1000",
        "--config.allow_config_change=True",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} step {step}" in again.stderr


def test_a_second_ctrl_c_stops_at_once(shared, tmp_path):
    child = _training(shared, tmp_path / "w")
    child.wait_for("] loss=")
    child.signal(signal.SIGINT)
    child.wait_for("Ctrl-C: a checkpoint will be saved after the current step")
    child.signal(signal.SIGINT)
    status, text = child.finish()
    assert status == 130 and "Traceback" not in text, text[-3000:]
    # the second Ctrl-C ends the run, unless the step and its save were done first
    assert last_line(text) == INTERRUPTED or "checkpoint saved" in last_line(text), text[-2000:]


def _evaluation(shared, tmp_path):
    return Child(
        shared,
        "main.py",
        "--config=knn_eval:tiny,runlocal",
        f"--workdir={tmp_path}",
        "--config.checkpoint=init:resnet18:cifar_stem=true,width_multiplier=0.125",
    )


def test_ctrl_c_during_evaluation(shared, tmp_path):
    child = _evaluation(shared, tmp_path / "e")
    child.wait_for("compiling the feature extractor")
    child.signal(signal.SIGINT)
    assert_clean_stop(*child.finish())


def test_sigterm_during_evaluation_is_one_line(shared, tmp_path):
    child = _evaluation(shared, tmp_path / "e")
    child.wait_for("compiling the feature extractor")
    child.signal(signal.SIGTERM)
    assert_clean_stop(*child.finish(), line=TERMINATED, code=143)


def test_ctrl_c_during_prepare(shared, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = tmp_path / "src" / split / cls
            folder.mkdir(parents=True)
            for i in range(150):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
                    folder / f"{i}.png"
                )
    child = Child(
        shared,
        "-m",
        "rekd_jax.data.prepare",
        "--src",
        tmp_path / "src",
        "--name",
        "pictures",
        "--data_dir",
        tmp_path / "tfds",
    )
    child.wait_for("writing pictures")
    child.signal(signal.SIGINT)
    assert_clean_stop(*child.finish())
    assert not (tmp_path / "tfds" / "pictures" / "1.0.0").exists()
    again = run(
        shared,
        "-m",
        "rekd_jax.data.prepare",
        "--src",
        tmp_path / "src",
        "--name",
        "pictures",
        "--data_dir",
        tmp_path / "tfds",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert os.listdir(tmp_path / "tfds" / "pictures") == ["1.0.0"]  # the leftover is gone


def test_ctrl_c_during_import(shared, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    src = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), src)
    child = Child(
        shared,
        "-m",
        "rekd_jax.tools.import_torch",
        "--arch",
        "resnet50",
        "--src",
        src,
        "--dst",
        tmp_path / "enc",
    )
    child.wait_for(f"loading {src}")
    child.signal(signal.SIGINT)
    assert_clean_stop(*child.finish())
    assert not (tmp_path / "enc").exists()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Python installs none by itself)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _has_loaded(pid: int, library: str) -> bool:
    """Whether the process has mapped native code from site-packages/<library>/."""
    with open(f"/proc/{pid}/maps") as f:
        return f"site-packages/{library}/" in f.read()


def _wait_for_moment(child, moment: str, timeout: float = 300) -> None:
    """Polls the child until `moment` ('first line': it catches SIGTERM; a library name: it has
    loaded that library's native code), with nothing printed on stderr yet."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert child.proc.poll() is None, f"the child ended before {moment}"
        reached = (
            _catches_sigterm(child.proc.pid)
            if moment == "first line"
            else _has_loaded(child.proc.pid, moment)
        )
        if reached:
            return
        time.sleep(0.005)
    raise AssertionError(f"the child never reached {moment}")


@pytest.fixture(scope="module")
def tool_inputs(tmp_path_factory):
    """A folder of images (prepare), a PyTorch checkpoint (the importer) and a pre-training
    workdir's metrics.jsonl (the report)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tool_inputs")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        folder = root / "src" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(folder / f"{i}.png")
    run_dir = root / "run"
    run_dir.mkdir()
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"step": step, "time": step, "train/loss": 6.0 - step}) + "\n")
    return root


def _tool_command(tool: str, inputs, out) -> tuple[list, object]:
    """(the arguments of `python -m <tool>`, the output it must not leave behind)."""
    if tool == "prepare":
        args = ["--src", inputs / "src", "--name", "pictures", "--data_dir", out]
        return ["-m", "rekd_jax.data.prepare", *args], out / "pictures"
    if tool == "import_torch":
        src = inputs / "r18.pth"
        if not src.exists():
            torch = pytest.importorskip("torch")
            torchvision = pytest.importorskip("torchvision")
            torch.save(torchvision.models.resnet18().state_dict(), src)
        args = ["--arch", "resnet18", "--src", src, "--dst", out / "enc"]
        return ["-m", "rekd_jax.tools.import_torch", *args], out / "enc"
    return ["-m", "rekd_jax.tools.report", inputs / "run", "--out", out], out / "curves.png"


# The moments of each tool's first seconds, in order: its first line; importing numpy (every
# tool); the library imported last before its work (TFDS's dependency PIL for prepare, JAX
# for the importer and the report: JAX's garbage-collection callback would swallow a
# KeyboardInterrupt); for the report, drawing (matplotlib is imported when it draws).
EARLY_MOMENTS = [
    ("prepare", "first line"),
    ("prepare", "numpy"),
    ("prepare", "PIL"),
    ("import_torch", "first line"),
    ("import_torch", "numpy"),
    ("import_torch", "jaxlib"),
    ("report", "first line"),
    ("report", "numpy"),
    ("report", "jaxlib"),
    ("report", "matplotlib"),
]


@pytest.mark.parametrize("tool,moment", EARLY_MOMENTS)
def test_ctrl_c_in_the_first_seconds_of_a_tool(shared, tool_inputs, tmp_path, tool, moment):
    """One line, status 130, and no output, from the tool's first line on: a Ctrl-C while it
    imports its libraries is neither a traceback nor swallowed (the tool going on to write
    its output and exit 0)."""
    args, output = _tool_command(tool, tool_inputs, tmp_path / "out")
    child = Child(shared, *args)
    _wait_for_moment(child, moment)
    child.signal(signal.SIGINT)
    status, text = child.finish()
    assert status == 130, text[-3000:]
    assert text.strip() == INTERRUPTED, text[-3000:]  # that line alone
    assert not output.exists()


def test_outside_the_command_line_ctrl_c_stays_keyboard_interrupt():
    """From Python (a notebook, a script), Ctrl-C during set-up is Python's own
    KeyboardInterrupt: only the command line ends the process at once."""
    import signal as signal_lib

    from rekd_jax.training import preemption

    assert signal_lib.getsignal(signal_lib.SIGINT) is signal_lib.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with preemption.StopOnSignal():
            os.kill(os.getpid(), signal_lib.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                sys.getrefcount(None)
