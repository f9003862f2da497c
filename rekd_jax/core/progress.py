"""Progress of long phases (compilation, feature extraction, epochs, training steps).

    progress = Progress("linear probe", total=100, unit="epoch")
    for epoch in ...:
        ...
        progress.update(1, loss=0.7)          # or progress.set(done)
    progress.close()

    with heartbeat("compiling the train step"):   # a phase of unknown length
        ...

A Progress logs one line at most every `every_secs` (30 s) and a last one at close():
"linear probe: epoch 37/100 (37%), 2.41 epoch/s, elapsed 0:00:15, ETA 0:00:26, loss=0.7".
The rate and the ETA leave out the first update (it includes compilation). On a terminal
(stderr is a TTY) a tqdm bar is shown as well; in log files there are only the lines.
A phase that ends within `quiet_secs` (10 s) logs nothing; `heartbeat` logs what starts
("compiling the training step ..."), then "still ..." every `every_secs` while its block
runs. Call update() after each unit is done, so that the first unit's time (compilation)
stays out of the rate.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from absl import logging

EVERY_SECS = 30.0
QUIET_SECS = 10.0


def hms(seconds: float) -> str:
    """Seconds as h:mm:ss (e.g. 3725.2 -> '1:02:05')."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm(name: str, total: int, initial: int, unit: str):
    if not on_terminal():
        return None
    try:
        from tqdm import tqdm  # optional: bars only where tqdm is installed
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit=unit, desc=name, leave=False, dynamic_ncols=True)


class Progress:
    """Counts `total` units of a phase; logs a rate-limited line with rate, elapsed and ETA."""

    def __init__(
        self,
        name: str,
        total: int,
        *,
        unit: str = "step",
        start: int = 0,
        every_secs: float = EVERY_SECS,
        quiet_secs: float = QUIET_SECS,
        log=logging.info,
        clock=time.monotonic,
    ):
        self.name, self.total, self.unit = name, int(total), unit
        self.start = self.done = int(start)
        self.every_secs, self.quiet_secs = every_secs, quiet_secs
        self._log, self._clock = log, clock
        self._t0 = clock()
        self._first = None  # (time, done) after the first update (compile excluded)
        self._last_line = self._t0
        self._extra: dict = {}
        self._bar = _tqdm(name, self.total, self.start, unit)
        self._closed = False

    def rate(self) -> float | None:
        """Units per second since the first update (None before two updates)."""
        if self._first is None or self.done <= self._first[1]:
            return None
        return (self.done - self._first[1]) / max(self._clock() - self._first[0], 1e-9)

    def eta(self) -> float | None:
        rate = self.rate()
        return None if rate is None else (self.total - self.done) / rate

    def line(self) -> str:
        if self.total:
            parts = [
                f"{self.name}: {self.unit} {self.done}/{self.total} "
                f"({100 * self.done / self.total:.0f}%)"
            ]
        else:  # unknown length: no fraction, no ETA
            parts = [f"{self.name}: {self.unit} {self.done}"]
        rate = self.rate()
        if rate is not None:
            parts.append(
                f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}"
            )
        parts.append(f"elapsed {hms(self._clock() - self._t0)}")
        eta = self.eta()
        if eta is not None and 0 < self.total and self.done < self.total:
            parts.append(f"ETA {hms(eta)}")
        if self._extra:
            parts.append(", ".join(f"{k}={_fmt(v)}" for k, v in self._extra.items()))
        return ", ".join(parts)

    def set(self, done: int, **extra) -> None:
        """The phase has done `done` units; `extra` values go on the next line."""
        if self._bar is not None:
            self._bar.update(int(done) - self.done)
        self.done = int(done)
        self._extra.update(extra)
        now = self._clock()
        if self._first is None:
            self._first = (now, self.done)
        if now - self._last_line >= self.every_secs and not 0 < self.total <= self.done:
            self._emit(now)

    def update(self, n: int = 1, **extra) -> None:
        self.set(self.done + n, **extra)

    def close(self) -> None:
        """Logs the closing line (unless the phase took less than quiet_secs)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        now = self._clock()
        if self.done > self.start and now - self._t0 >= self.quiet_secs:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self._last_line = now
        self._log("%s", self.line())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextlib.contextmanager
def heartbeat(
    what: str, every_secs: float = EVERY_SECS, quiet_secs: float = QUIET_SECS, log=logging.info
):
    """Logs '<what> ...' when the block starts, 'still <what> (elapsed h:mm:ss)' every
    `every_secs` while it runs, and '<what>: done in h:mm:ss' at the end when it took more
    than `quiet_secs`."""
    stop = threading.Event()
    t0 = time.monotonic()
    log("%s ...", what)

    def beat():
        while not stop.wait(every_secs):
            log("still %s (elapsed %s)", what, hms(time.monotonic() - t0))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        took = time.monotonic() - t0
        if took >= quiet_secs:
            log("%s: done in %s", what, hms(took))


def heartbeat_first_call(fn, what: str):
    """`fn`, whose first call (where JAX compiles) runs under heartbeat(what)."""
    called = False

    def wrapper(*args, **kwargs):
        nonlocal called
        if called:
            return fn(*args, **kwargs)
        called = True
        with heartbeat(what):
            return fn(*args, **kwargs)

    return wrapper
