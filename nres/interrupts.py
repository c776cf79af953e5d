"""Stop signals: Ctrl-C (SIGINT), preemption (SIGTERM) and schedulers' warning (SIGUSR1).

All three mean "stop cleanly", at any instant from the command's first line to its last.
Every stop signal is first *recorded* (:func:`pending`); what happens next depends on
where the program is:

* Outside the training loop (:func:`stop_signals_raise`: start-up, evaluation) it raises
  :class:`Interrupted`, so ``finally`` blocks and atomic writes clean up and the command
  exits with the signal's code -- except where raising would break something that
  cannot be undone: inside an ``import`` (a half-imported numpy or jaxlib crashes the
  process) the stop is deferred, and where Python cannot raise at all (a garbage-
  collection callback, a finaliser: the exception would be printed and dropped) it is
  dropped silently but stays recorded. A deferred stop is raised at the next safe point
  (:func:`check`); the command line checks after its imports, before it creates a run
  directory, when the training loop starts and before it exits, so a stop is never lost.
* Inside the training loop (:func:`deferred_stop`) the first one (or one still pending
  from start-up) only sets a flag: the loop saves a checkpoint after the compiled chunk
  it is running and exits with the same code; a second one aborts at once (the last
  checkpoint stays intact).
* Before the command's handlers are in place and after they are gone
  (:func:`record_stop_signals`) a stop is only recorded; the command ends with its code.

Exit codes are the shell's ``128 + signal number``: 130 SIGINT, 143 SIGTERM, 138 SIGUSR1.
This module imports nothing heavy, so the command line installs it before JAX loads.
"""

from __future__ import annotations

import contextlib
import signal
import sys

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))

_pending: list = [None]  # the first stop signal not yet acted on (a list: set from handlers)


def exit_code(signum: int) -> int:
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived where the program could not finish its step first."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = exit_code(signum)


def pending():
    """The recorded stop signal not yet acted on, or None."""
    return _pending[0]


def clear() -> None:
    """Forget a recorded stop (it has been acted on)."""
    _pending[0] = None


def check() -> None:
    """A safe point: raise :class:`Interrupted` if a stop signal was recorded."""
    if _pending[0] is not None:
        raise Interrupted(_pending[0])


def _record(signum) -> None:
    if _pending[0] is None:
        _pending[0] = signum


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside an ``import`` (a module body or the import machinery)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _record_only(signum, frame):
    _record(signum)


def _raise_when_safe(signum, frame):
    _record(signum)
    if not _importing(frame):
        raise Interrupted(signum)


def _unraisable(previous):
    """A ``sys.unraisablehook`` that drops :class:`Interrupted` quietly: raised in a
    callback or finaliser, it stays recorded for the next :func:`check`."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, Interrupted):
            _record(unraisable.exc_value.signum)
            return
        previous(unraisable)

    hook.nres_stop_hook = True
    return hook


def _install_unraisable_hook() -> None:
    if not getattr(sys.unraisablehook, "nres_stop_hook", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)


def record_stop_signals() -> None:
    """From now on every stop signal is only recorded (the command's first and last lines)."""
    _install_unraisable_hook()
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, _record_only)
    except ValueError:  # not the main thread: signals stay as they are
        pass


@contextlib.contextmanager
def stop_signals_raise():
    """Every stop signal raises :class:`Interrupted` where that is safe, and is deferred
    to the next :func:`check` elsewhere (restored on exit; main thread only)."""
    _install_unraisable_hook()
    with _handlers(_raise_when_safe):
        yield


@contextlib.contextmanager
def deferred_stop():
    """Yields ``state``: ``state["signum"]`` is set by the first stop signal (or holds one
    recorded before); a second raises."""
    state = {"signum": _pending[0]}

    def handler(signum, frame):
        _record(signum)
        if state["signum"] is not None:
            if not _importing(frame):
                raise Interrupted(signum)
            return
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


PARENT_ENV = "NRES_PARENT_PID"  # set by a parent whose children must not outlive it (nres compare)


def end_with_parent() -> None:
    """Stop this process when its parent dies, if the parent asked for it.

    A parent that puts its pid in the environment as :data:`PARENT_ENV` (``nres
    compare``, for each run's process) cannot forward a SIGKILL of its own; on Linux its
    child then asks the kernel for a SIGTERM when the parent dies (``prctl``
    ``PR_SET_PDEATHSIG``) and stops as on any SIGTERM: at its last checkpoint, resumable.
    A parent gone already: SIGTERM at once. The variable is removed, so this process's own
    children do not inherit it. Elsewhere (other systems, no variable): nothing.
    """
    import os

    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)
