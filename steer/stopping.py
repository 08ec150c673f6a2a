"""Stopping a worker at a safe point: Ctrl-C and SIGTERM ask, the running code decides where.

An exception raised straight from a signal handler can land in the middle of
a database call (a connection pool's lock held, a transaction half sent), and
a worker that then goes on to record its trial's end can hang on that lock.
So the first SIGINT or SIGTERM only sets `requested`. The training loop
checks it between two steps (`Steering.step`), the runner before and
after each trial, the `--workers` parent between two looks at its workers;
`check()` raises KeyboardInterrupt there, and the usual clean-up runs: the
trial ends FAIL with its reason, its pending commands expire.

If nothing checks within `FALLBACK_SECONDS` (a trial with steering off
never polls), the main thread is interrupted anyway. A second signal stops
at once in an interactive `steer run`; a worker of `--workers N` ignores it
(its parent sends exactly one, and kills it if it must).
"""

from __future__ import annotations

import _thread
import signal
import threading
from typing import Any

FALLBACK_SECONDS = 10.0

requested = threading.Event()  # set by the first stop signal
_force = threading.Event()  # set when the fallback fires: the next handler call raises
_timer: threading.Timer | None = None


def install(*, second_signal_stops_at_once: bool) -> None:
    """Handle SIGINT and SIGTERM as described above (call from the main thread)."""

    def handler(signum: int, frame: Any) -> None:
        global _timer
        if _force.is_set() or (requested.is_set() and second_signal_stops_at_once):
            raise KeyboardInterrupt
        if requested.is_set():
            return
        requested.set()
        _timer = threading.Timer(FALLBACK_SECONDS, _fallback)
        _timer.daemon = True
        _timer.start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _fallback() -> None:
    _force.set()
    _thread.interrupt_main()  # runs the SIGINT handler in the main thread, which now raises


def check() -> None:
    """Raise KeyboardInterrupt here if a stop was requested: the caller is at a safe point."""
    if requested.is_set():
        if _timer is not None:
            _timer.cancel()  # stopping now: the clean-up after this must not be interrupted
        raise KeyboardInterrupt
