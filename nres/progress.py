"""Progress of long commands: a tqdm bar on a terminal, plain periodic lines otherwise.

Every command that can take more than a few seconds (``nres train``, ``nres eval
--all``, ``nres variance``, ``nres rollout``) reports through :func:`progress`. On a
terminal it is a tqdm bar; when stderr is a file or a pipe (a batch job's log) it
writes one plain line at the start, at most one every ``interval_s`` seconds
(``$NRES_PROGRESS_INTERVAL``, default 30) and one at the end, so logs never fill
with ``\\r`` frames.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

DEFAULT_INTERVAL_S = 30.0


INTERVAL_ENV = "NRES_PROGRESS_INTERVAL"


def interval_s() -> float:
    """Seconds between plain progress lines (``$NRES_PROGRESS_INTERVAL``, default 30; ``inf``:
    only the first and last). Raises :class:`nres.config.ConfigError` for a value that is not a
    number of seconds >= 0 (the ``nres`` command checks it before it starts)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # nan too
        from nres.config import ConfigError

        raise ConfigError(f"{INTERVAL_ENV}={text!r} must be a number of seconds >= 0 (default "
                          f"{DEFAULT_INTERVAL_S:g})")
    return value


class PlainProgress:
    """A tqdm-like progress report written as whole lines (for logs and pipes)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, stream: Optional[TextIO] = None,
                 every_s: Optional[float] = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = initial
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = interval_s() if every_s is None else every_s
        self.postfix: dict[str, Any] = {}
        self.started = self.last = time.perf_counter()
        self.closed = False
        self._line()

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.started
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        rate = ""
        if self.n > self.start_n and elapsed > 0:
            rate = f", {(self.n - self.start_n) / elapsed:.3g} {self.unit}/s"
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{percent}, {elapsed:.1f} s{rate}{extra}",
              file=self.stream, flush=True)
        self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every_s and self.n < self.total:
            self._line()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = {k: v for k, v in values.items()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()


def progress(total: int, desc: str, unit: str = "step", initial: int = 0, enabled: bool = True,
             stream: Optional[TextIO] = None):
    """A progress reporter with tqdm's ``update``/``set_postfix``/``close``.

    ``enabled=False`` gives a silent one; a terminal gets tqdm; anything else gets
    :class:`PlainProgress` lines.
    """
    stream = stream if stream is not None else sys.stderr
    if enabled and not _is_tty(stream):
        return PlainProgress(total, desc, unit, initial=initial, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                file=stream)


def track(items: Iterable, total: int, desc: str, unit: str = "step", enabled: bool = True) -> Iterator:
    """Iterate ``items`` while reporting progress (one unit per item)."""
    bar = progress(total, desc, unit, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
