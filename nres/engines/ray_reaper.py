"""Ends what a local Ray instance left running when its driver died without shutting it down.

Run as a script (no nres import): ``python ray_reaper.py PSUTIL_DIR ROOT_PID...``. The
driver that started Ray (:class:`nres.engines.ray.RayEngine` without ``--ray-address``)
starts it with a pipe on its stdin and the pids of Ray's head processes (GCS, raylet,
dashboard, monitors) as roots. Every second it notes the roots and their descendants
(the raylet's agents and the actors' worker processes). A line ``done`` on stdin (the
driver shut Ray down itself) ends it; end of input without it (the driver was killed:
SIGKILL, the OOM killer) makes it stop the noted processes still running (SIGTERM, then
SIGKILL after :data:`GRACE_S`), and end.

Why: when the driver dies, the GCS and the raylet go with it, but the raylet's dashboard
and runtime-env agents then try to report the raylet's death to the dead GCS and sit in
that call for Ray's fixed 60 s timeout (Ray 2.x), and actors' workers can linger too.
Process ids are checked with their start times, so a reused pid is never signalled.
"""

from __future__ import annotations

import select
import signal
import sys
import time

GRACE_S = 3.0
POLL_S = 1.0


def _snapshot(psutil, roots: list[int], seen: dict) -> None:
    for pid in roots:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            try:
                seen.setdefault(proc.pid, proc.create_time())
            except psutil.Error:
                pass


def _living(psutil, seen: dict) -> list:
    alive = []
    for pid, started in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def _stop(psutil, seen: dict) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in _living(psutil, seen):
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and _living(psutil, seen):
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C or a closed terminal hits the driver
        signal.signal(sig, signal.SIG_IGN)
    try:
        import psutil
    except ImportError:  # Ray ships its own copy
        sys.path.insert(0, argv[0])
        try:
            import psutil
        except ImportError:
            return 0
    roots = [int(pid) for pid in argv[1:]]
    seen: dict = {}
    while True:
        _snapshot(psutil, roots, seen)
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready:
            line = sys.stdin.readline()
            if line.strip() == "done":
                return 0
            if not line:  # the driver is gone and never said done
                _stop(psutil, seen)
                return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
