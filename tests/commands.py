"""Running the command-line entry points in subprocesses for tests, with one TFDS data_dir and
one compilation cache per test module. Not collected (no test_ prefix)."""

import os
import select
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(shared: dict, **extra) -> dict:
    """The environment of a child: the checkout importable, CPU with 4 devices, the module's
    TFDS data_dir and compilation cache; `extra` values replace those (None: unset)."""
    out = dict(os.environ)
    out.update(
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        TFDS_DATA_DIR=shared["tfds"],
        JAX_COMPILATION_CACHE_DIR=shared["cache"],
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def run(shared: dict, *args, timeout=600, cwd=ROOT, extra_env=None) -> subprocess.CompletedProcess:
    """`python ARGS...` to completion (main.py, -m module, -c code)."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env(shared, **(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fatal_line(result: subprocess.CompletedProcess) -> str:
    """The single FATAL line of a failed command (exit status 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("FATAL")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


class Child:
    """A child process whose stderr is read line by line while it runs."""

    def __init__(self, shared: dict, *args, cwd=ROOT, extra_env=None):
        self.proc = subprocess.Popen(
            [sys.executable, *map(str, args)],
            cwd=cwd,
            env=env(shared, **(extra_env or {})),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._buffer = b""

    def wait_for(self, text: str, timeout: float = 600) -> str:
        """Reads stderr until a line holding `text` (returned); AssertionError if the process
        ends or the time runs out first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            ready, _, _ = select.select([self.proc.stderr], [], [], 1.0)
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines += [c.decode("utf-8", "replace") for c in complete]
        raise AssertionError(
            f"no line with {text!r} (exit {self.proc.poll()}):\n" + "\n".join(self.lines[-40:])
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        """(exit status, all of stderr) once the process ends."""
        _, rest = self.proc.communicate(timeout=timeout)
        text = "\n".join(self.lines) + "\n" + (self._buffer + rest).decode("utf-8", "replace")
        return self.proc.returncode, text


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
