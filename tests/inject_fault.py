"""Run ``nres`` with a signal sent to itself at a chosen point (fault injection for tests).

Usage: python tests/inject_fault.py TARGET NTH SIGNAL WHEN [MATCH] -- NRES_ARGS...

* TARGET ``module:attribute.path``: on the NTH call of that function (counting only
  calls with an argument ending in MATCH, if given) the process sends itself SIGNAL
  (``SIGKILL``, ``SIGINT``, ``SIGTERM``, ``SIGUSR1``), ``before`` or ``after`` the call.
  ``os:replace`` with MATCH ``checkpoint.npz`` is "during a checkpoint write": the
  temporary file is complete but not yet renamed. WHEN ``gc`` sends it from inside a
  garbage-collection callback run just before the call (where Python cannot raise).
* TARGET ``import:NAME``: the signal arrives while NAME is first imported.
"""

import importlib
import os
import signal
import sys


def main() -> int:
    split = sys.argv.index("--")
    target, nth, signame, when, *match = sys.argv[1:split]
    nth, signum = int(nth), getattr(signal, signame)
    fire = lambda: os.kill(os.getpid(), signum)
    if target.startswith("import:"):
        name = target.partition(":")[2]

        class Finder:
            def find_spec(self, fullname, path=None, target=None):
                if fullname == name:
                    sys.meta_path.remove(self)
                    fire()
                return None

        sys.meta_path.insert(0, Finder())
    else:
        module_name, _, path = target.partition(":")
        owner = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, attribute)
        calls = [0]

        def wrapper(*args, **kwargs):
            hit = False
            if not match or any(str(a).endswith(match[0]) for a in args):
                calls[0] += 1
                hit = calls[0] == nth
            if hit and when == "before":
                fire()
            if hit and when == "gc":
                import gc

                def callback(phase, info):
                    if phase == "start":
                        gc.callbacks.remove(callback)
                        fire()

                gc.callbacks.append(callback)
                gc.collect()
            result = original(*args, **kwargs)
            if hit and when == "after":
                fire()
            return result

        setattr(owner, attribute, wrapper)
    from nres.cli import main as nres_main

    return nres_main(sys.argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main())
