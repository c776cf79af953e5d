"""Keeping ``jax.distributed`` processes in step, and noticing when one is gone.

Every process of a multi-controller JAX run must call the same collective programs in
the same order, or they hang (or Gloo aborts on mismatched messages). Whatever the
training loop decides from local facts (how many updates the next compiled call runs,
judged from measured time; whether a stop signal arrived) is therefore decided by
process 0 alone and read by every other process from the distributed runtime's
key-value store (:class:`Agreement`): the ``k``-th decision of every process is process
0's ``k``-th. Nothing a local clock or a busy core does can make two processes run
different programs.

:class:`Watchdog` is a thread in every process that publishes a heartbeat and watches
the others': a process whose peer has published nothing for ``timeout_s`` seconds
(killed, hung or unreachable), or that loses the coordinator, prints one line naming
the missing process and exits with :data:`EXIT_PEER_LOST`, leaving the last checkpoint
as it was (checkpoints are written atomically). Processes that finished are not missed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Optional

EXIT_PEER_LOST = 4
TIMEOUT_ENV = "NRES_PEER_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
_PREFIX = "nres/"
_FOREVER_MS = 2**31 - 1  # a wait bounded by the watchdog, not by the store


class PeerLost(RuntimeError):
    """A process the run needs is gone (a Ray cluster or its driver process): the
    ``nres`` command prints the message as one ``nres: error:`` line and exits with
    :data:`EXIT_PEER_LOST`; the last checkpoint is intact."""

    exit_code = EXIT_PEER_LOST


def peer_timeout() -> float:
    """Seconds without a heartbeat after which a peer counts as gone
    (``NRES_PEER_TIMEOUT``, default :data:`DEFAULT_TIMEOUT_S`)."""
    from nres.config import ConfigError

    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


class Agreement:
    """``agree(count, signum) -> (count, signum)``: process 0's decision, the same in
    every process (see the module docstring). ``count``: updates of the next compiled
    call (0: none); ``signum``: a stop signal (None: go on). A stop signal of any process
    reaches process 0's next decision and so every process's."""

    def __init__(self, client, process: int, num_processes: int):
        self.client, self.process, self.num_processes = client, process, num_processes
        self.index, self.reported = 0, False

    def __call__(self, count: int, signum: Optional[int]) -> tuple[int, Optional[int]]:
        key = f"{_PREFIX}decision/{self.index}"
        self.index += 1
        if self.process == 0:
            signum = signum or self._peer_signal()
            self.client.key_value_set(key, f"{count} {signum or 0}")
        else:
            if signum is not None and not self.reported:
                self.client.key_value_set(f"{_PREFIX}stop/{self.process}", str(int(signum)))
                self.reported = True
            count, signum = (int(v) for v in self.client.blocking_key_value_get(key, _FOREVER_MS).split())
        return count, signum or None

    def _peer_signal(self) -> Optional[int]:
        for peer in range(1, self.num_processes):
            try:
                return int(self.client.key_value_try_get(f"{_PREFIX}stop/{peer}"))
            except Exception:  # not set: that peer received no signal
                continue
        return None


class Watchdog:
    """The heartbeat thread of one process (see the module docstring). ``exit(code)``
    ends the process (default ``os._exit``); ``before_exit()`` runs first (cleanup)."""

    def __init__(self, client, process: int, num_processes: int, timeout_s: float,
                 before_exit: Callable[[], None] = lambda: None, exit: Callable[[int], None] = os._exit,
                 interval_s: float = 1.0):
        self.client, self.process, self.num_processes = client, process, num_processes
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.before_exit, self.exit = before_exit, exit
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nres-peer-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def settle(self) -> None:
        """Wait (up to the timeout) for a lost peer to be noticed: an error in this
        process's collectives often comes from a peer that just died, and then the
        watchdog's one line and exit code are the right report. Returns when no peer is
        lost by then."""
        self._thread.join(self.timeout_s + 3 * self.interval_s)

    def stop(self) -> None:
        """This process is done: peers stop watching it, it stops watching them."""
        if not self._done.is_set():
            self._done.set()
            try:
                self.client.key_value_set(f"{_PREFIX}done/{self.process}", "1", allow_overwrite=True)
            except Exception:
                pass

    def _run(self) -> None:
        seen = {p: (None, time.monotonic()) for p in range(self.num_processes) if p != self.process}
        beat = 0
        while not self._done.wait(self.interval_s if beat else 0):
            try:
                self.client.key_value_set(f"{_PREFIX}heartbeat/{self.process}", str(beat), allow_overwrite=True)
                beat += 1
                for peer, (last, since) in list(seen.items()):
                    if self._get(f"{_PREFIX}done/{peer}") is not None:
                        del seen[peer]
                        continue
                    value = self._get(f"{_PREFIX}heartbeat/{peer}")
                    if value != last:
                        seen[peer] = (value, time.monotonic())
                    elif time.monotonic() - since > self.timeout_s:
                        return self._lost(f"process {peer} stopped answering (no heartbeat for "
                                          f"{self.timeout_s:g} s)")
            except Exception as err:  # the coordination service (process 0) is unreachable
                if self._done.is_set():
                    return
                text = str(err).strip().splitlines()
                return self._lost(f"lost the coordinator (process 0): {text[0] if text else type(err).__name__}")

    def _get(self, key: str) -> Optional[str]:
        try:
            return self.client.key_value_try_get(key)
        except Exception as err:
            if "NOT_FOUND" in str(err) or "not found" in str(err).lower():
                return None
            raise

    def _lost(self, why: str) -> None:
        if self._done.is_set():
            return
        print(f"nres: error: --distributed process {self.process}: {why}; the last checkpoint is intact, "
              f"continue with --resume on every process (exit {EXIT_PEER_LOST})", file=sys.stderr, flush=True)
        try:
            self.before_exit()
        finally:
            self.exit(EXIT_PEER_LOST)
