"""The Ray driver process of a ``--backend ray`` run (see :mod:`nres.engines.ray`).

``python -m nres.engines.ray_driver FD``: serves the :class:`~nres.engines.ray.RayEngine`
of the run's process over the socket ``FD``, one request at a time: ``(method, args)``
in, ``("ok", result)``, ``("bad input", message)`` or ``("error", message)`` out. The
first request, ``start``, builds the :class:`~nres.engines.ray.RayDriver` (starting or
joining Ray); ``close``, or the end of input (the run's process is gone, even killed),
shuts it down. Stop signals are the run's process's to act on: a Ctrl-C that reaches the
whole process group does not end the driver under a checkpoint being written.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

from nres.config import ConfigError


def serve(conn: Connection) -> None:
    driver = None
    try:
        while True:
            try:
                method, args = conn.recv()
            except (EOFError, OSError):
                return
            if method == "close":
                _reply(conn, ("ok", None))
                return
            try:
                if method == "start":
                    from nres.engines.ray import RayDriver

                    driver = RayDriver(*args)
                    reply = ("ok", None)
                else:
                    reply = ("ok", getattr(driver, method)(*args))
            except ConfigError as err:
                reply = ("bad input", str(err))
            except Exception as err:
                text = str(err).strip().splitlines()
                reply = ("error", f"{type(err).__name__}: {text[0] if text else ''}")
            if not _reply(conn, reply):
                return
    finally:
        if driver is not None:
            driver.close()


def _reply(conn: Connection, message) -> bool:
    """Send ``message``; False when the run's process is gone (killed mid-request)."""
    try:
        conn.send(message)
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    serve(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
