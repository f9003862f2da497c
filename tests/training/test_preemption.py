"""Preemption: SIGTERM to a real pre-training run (`python main.py`, configs/default.py:tiny,
runlocal, 8 steps) saves a checkpoint at an agreed step boundary and exits 0 with one line;
rerunning the same command resumes, and the final checkpoint is bitwise equal to an
uninterrupted run of the same config. Once with one process (4 devices), once with two
processes (jax.distributed over 127.0.0.1, gloo, 2 devices each) where only process 1 gets the
signal and both stop after the same step. The in-process tests cover the one-process handler.

The signal is sent once metrics.jsonl holds the first step (so the run is training); a step
takes about half a second here or more, so the run is well inside its 8 steps when the signal
lands, and the test asserts that it stopped before the end. All runs share one TFDS data_dir and one
persistent compilation cache.
"""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from checkpoint_compare import assert_checkpoints_equal, read_checkpoint

from rekd_jax.training import preemption

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL_STEPS = 8  # configs/default.py:runlocal
LINE = "checkpoint saved, rerun the same command to resume"


# ----------------------------------------------------------------------------- in-process


def test_one_process_handler_sets_the_flag_and_is_restored(caplog):
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.StopOnSignal() as stop:
        assert not stop.multiprocess and stop.installed
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        assert not stop.agreed(1)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal; the handler only sets the flag
        os.kill(os.getpid(), signal.SIGTERM)  # a second one while "saving": logged, ignored
        assert stop.requested and stop.agreed(2)
    assert signal.getsignal(signal.SIGTERM) == previous and not stop.installed
    assert "SIGTERM received: a checkpoint will be saved" in caplog.text
    assert "received again" in caplog.text
    assert str(preemption.Preempted(6)) == f"preempted at step 6: {LINE}"


def test_the_command_prints_the_line_and_exits_0(capsys):
    from rekd_jax.core import errors

    def stopped():
        raise preemption.Preempted(5)

    assert errors.run_cli(stopped, debug=False) == 0
    assert capsys.readouterr().err == f"preempted at step 5: {LINE}\n"


def test_outside_the_main_thread_nothing_is_installed(caplog):
    import threading

    previous, seen = signal.getsignal(signal.SIGTERM), {}

    def body():
        with preemption.StopOnSignal() as stop:
            seen.update(installed=stop.installed, agreed=stop.agreed(1))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == {"installed": False, "agreed": False}
    assert signal.getsignal(signal.SIGTERM) == previous and "not in the main thread" in caplog.text


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def _env(shared, devices, processes):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        TFDS_DATA_DIR=shared["tfds"],
        JAX_COMPILATION_CACHE_DIR=shared["cache"],
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    if processes > 1:
        # JAX writes cache entries only from process 0 and process 1 does not hit them, so
        # with a warm cache process 0 would start training minutes before process 1 on a
        # busy CPU, past gloo's 30 s limit for setting up the first collective. Without the
        # cache both compile, and start together.
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def _command(workdir, process_id=None, port=None):
    cmd = [
        sys.executable,
        "main.py",
        "--config=configs/default.py:tiny,runlocal",
        f"--workdir={workdir}",
        "--config.log_every_steps=1",
    ]
    if process_id is not None:
        cmd += [
            "--config.distributed.enabled=True",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={process_id}",
        ]
    return cmd


def _start(shared, workdir, *, processes=1, port=None):
    """Starts the run (all its processes); each process's output goes to a log file beside
    the workdir (WORKDIR.<attempt>.<process>.log)."""
    procs, attempt = [], len(glob.glob(f"{workdir}.*.0.log"))
    for i in range(processes):
        log = open(f"{workdir}.{attempt}.{i}.log", "w+")
        cmd = _command(workdir, *((i, port) if processes > 1 else ()))
        env = _env(shared, 4 // processes, processes)
        procs.append(
            (
                subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
                ),
                log,
            )
        )
    return procs


def _finish(procs, timeout=900):
    """Waits for every process; returns [(returncode, output)]."""
    out = []
    for proc, log in procs:
        try:
            proc.wait(timeout=timeout)
        finally:
            proc.kill()
        log.seek(0)
        out.append((proc.returncode, log.read()))
        log.close()
    return out


def _run(shared, workdir, processes=1):
    results = _finish(
        _start(shared, workdir, processes=processes, port=_free_port() if processes > 1 else None)
    )
    for code, text in results:
        assert code == 0, text[-3000:]
    return results


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_first_step(procs, workdir, timeout=900):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert all(p.poll() is None for p, _ in procs), "the run ended before its first step"
        if os.path.exists(path) and '"train/loss"' in open(path).read():
            return
        time.sleep(0.05)
    raise AssertionError("no training step within the timeout")


def _preempted_step(text):
    lines = [line for line in text.splitlines() if line.endswith(LINE)]
    assert len(lines) == 1, text[-3000:]
    return int(lines[0].split("preempted at step ")[1].split(":")[0])


def _preempt_and_resume(shared, tmp_path, processes, signalled):
    """Uninterrupted run, then a run that gets SIGTERM (to the processes in `signalled`) and is
    rerun with the same command; returns (the preempted step, outputs of the stopped run)."""
    reference = tmp_path / "uninterrupted"
    _run(shared, reference, processes)
    workdir = tmp_path / "preempted"
    procs = _start(
        shared, workdir, processes=processes, port=_free_port() if processes > 1 else None
    )
    try:
        _wait_for_first_step(procs, workdir)
        for i in signalled:
            procs[i][0].send_signal(signal.SIGTERM)
        time.sleep(0.2)
        for i in signalled:  # a second notice: logged or ignored, the run still saves
            if procs[i][0].poll() is None:
                procs[i][0].send_signal(signal.SIGTERM)
    finally:
        results = _finish(procs)
    steps = set()
    for code, text in results:
        assert code == 0, text[-3000:]
        steps.add(_preempted_step(text))
    assert len(steps) == 1, f"the processes stopped at different steps: {steps}"
    stopped = steps.pop()
    assert 1 <= stopped < TOTAL_STEPS
    assert read_checkpoint(workdir)[0] == stopped
    _run(shared, workdir, processes)  # the same command resumes
    assert_checkpoints_equal(workdir, reference, expected_step=TOTAL_STEPS)
    return stopped, results


def test_sigterm_one_process_saves_exits_0_and_resumes_bit_exact(shared, tmp_path):
    stopped, [(_, text)] = _preempt_and_resume(shared, tmp_path, processes=1, signalled=[0])
    assert "SIGTERM received: a checkpoint will be saved" in text


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(shared, tmp_path):
    """Only process 1 gets the notice; JAX's preemption service stops both after one step."""
    _preempt_and_resume(shared, tmp_path, processes=2, signalled=[1])
