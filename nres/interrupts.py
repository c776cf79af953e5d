"""Stop signals: Ctrl-C (SIGINT), preemption (SIGTERM) and schedulers' warning (SIGUSR1).

All three mean "stop cleanly". Outside the training loop (imports, start-up, evaluation)
a stop signal raises :class:`Interrupted` wherever the program is, so ``finally`` blocks
and atomic writes clean up and the command exits with the signal's code. Inside the
training loop (:func:`deferred_stop`) the first one only sets a flag: the loop saves a
checkpoint after the compiled chunk it is running and exits with the same code; a
second one aborts at once (the last checkpoint stays intact).

Exit codes are the shell's ``128 + signal number``: 130 SIGINT, 143 SIGTERM, 138 SIGUSR1.
This module imports nothing heavy, so the command line installs it before JAX loads.
"""

from __future__ import annotations

import contextlib
import signal
import sys

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived where the program could not finish its step first."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = exit_code(signum)


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise():
    """Every stop signal raises :class:`Interrupted` (restored on exit; main thread only)."""
    with _handlers(_raise):
        yield


@contextlib.contextmanager
def deferred_stop():
    """Yields ``state``: ``state["signum"]`` is set by the first stop signal; a second raises."""
    state = {"signum": None}

    def handler(signum, frame):
        if state["signum"] is not None:
            raise Interrupted(signum)
        state["signum"] = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: saving a checkpoint after the current updates ({name} again to abort)",
              file=sys.stderr, flush=True)

    with _handlers(handler):
        yield state


@contextlib.contextmanager
def _handlers(handler):
    try:
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
