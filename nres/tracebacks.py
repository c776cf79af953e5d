"""Where in the user's own code an error arose: the last traceback frame outside nres.

The command line shows it in its one-line error (``nres: error: ... (at spring.py:23, in
step)``) so a failing ``step`` or ``loss`` points at its own line; ``--debug`` (or
``NRES_DEBUG=1``) prints the whole traceback instead of hiding it.

An error nres raises about a task function (a shape check, a failed import) replaces
the user's exception with a one-line one (``raise ... from None``); the user's
exception stays in ``__context__``, and :func:`user_frame` looks there too.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from typing import Iterator, Optional

DEBUG_ENV = "NRES_DEBUG"


def debug_enabled() -> bool:
    """True when ``NRES_DEBUG`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _library_folders() -> tuple[str, ...]:
    """nres's own folder and the installed libraries and standard library (not user code)."""
    folders = {os.path.dirname(os.path.abspath(__file__))}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            folders.add(os.path.abspath(path))
    return tuple(folder + os.sep for folder in folders)


def is_user_file(filename: str) -> bool:
    """A real file outside nres, the standard library and installed packages."""
    if not filename or filename.startswith("<"):
        return False
    return not os.path.abspath(filename).startswith(_library_folders())


def chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling (newest first),
    the suppressed ``__context__`` of ``raise ... from None`` included."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def user_frame(err: BaseException) -> Optional[traceback.FrameSummary]:
    """The last frame of user code in the traceback of ``err`` or of the errors behind it
    (the innermost one that has any), or None when the error never passed through user code."""
    for error in reversed(list(chain(err))):  # the original error first: it is where the user's code failed
        frames = [f for f in traceback.extract_tb(error.__traceback__) if is_user_file(f.filename)]
        if frames:
            return frames[-1]
    return None


def location(frame: traceback.FrameSummary) -> str:
    """``file:line, in function`` with the file relative to the working directory when inside it."""
    path = os.path.abspath(frame.filename)
    relative = os.path.relpath(path)
    shown = relative if not relative.startswith(os.pardir) else path
    return f"{shown}:{frame.lineno}, in {frame.name}"


def print_traceback(err: BaseException, file=None) -> None:
    """The whole traceback of ``err``, the exceptions it replaced included."""
    for error in chain(err):
        error.__suppress_context__ = False
    traceback.print_exception(type(err), err, err.__traceback__, file=file or sys.stderr)
