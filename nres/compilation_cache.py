"""JAX's persistent compilation cache for the command line.

A run compiles its programs (the init, the chunk of updates, which also runs the
burn-in, and the evaluation) once; with the cache on, a later run of the same
configuration on the same machine and JAX version loads them from disk instead of
compiling again, so it starts in about the time of its imports. Two layers: JAX's own
persistent cache (every program, keyed on the lowered program, so a hit still traces
and lowers it) and, for the run's init and update programs, :class:`Program`, which
stores the executable keyed on what determines it and loads it without tracing
(``DIR/executables``). Cached programs give the same results as freshly compiled ones
(both store the compiled executable of the same program).

Where: ``$XDG_CACHE_HOME/nres/jax`` (default ``~/.cache/nres/jax``). The environment
variable ``NRES_COMPILATION_CACHE=DIR`` moves it, ``NRES_COMPILATION_CACHE=off``
disables it; ``nres train --compilation-cache DIR|off`` does the same for one command.
Deleting the directory is always safe. Stored executables (about 0.25 to 1 MB per
configuration) are kept within 256 MiB, least recently used first out.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import pathlib
import re
import sys
import threading
from typing import Optional

ENV = "NRES_COMPILATION_CACHE"
OFF = "off"


def default_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/nres/jax``, or ``~/.cache/nres/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "nres" / "jax"


def resolve(setting: Optional[str] = None) -> Optional[pathlib.Path]:
    """The cache directory for ``setting`` (a flag value), else ``$NRES_COMPILATION_CACHE``,
    else :func:`default_dir`; ``None`` when the chosen value is ``off``."""
    value = setting if setting is not None else os.environ.get(ENV)
    if value is None or value == "":
        return default_dir()
    if value.strip().lower() == OFF:
        return None
    return pathlib.Path(value).expanduser()


def enable(setting: Optional[str] = None) -> Optional[pathlib.Path]:
    """Turn the persistent cache on (or off) before anything compiles.

    Every program is cached, however small or quick to compile. Returns the directory
    in use, or ``None`` when off. When the directory named by ``setting`` cannot be
    created this raises ``ValueError``; when the default or ``$NRES_COMPILATION_CACHE``
    one cannot, the cache stays off (a run never fails because of its default cache).
    """
    import jax

    path = resolve(setting)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if setting is not None:
                raise ValueError(f"--compilation-cache {setting}: cannot create the directory ({err.strerror})") from None
            path = None
    from jax.experimental.compilation_cache import compilation_cache

    if (path is not None, str(path)) != (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir):
        compilation_cache.reset_cache()  # JAX decides once per process; a new setting starts over
    global _active
    _active = path
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _quiet_cache_warnings()
    return path


# JAX warns once per program it cannot read from or write to its cache (a read-only, full or
# damaged directory): 16-20 warnings of several lines in a run, which still works (it compiles
# anew). The command says it once, in one line.
_CACHE_WARNING = re.compile(r"Error (reading|writing) persistent compilation cache entry for '[^']*': ?(.*)", re.S)
_cache_warned = False


def _cache_notice(message) -> bool:
    """Whether ``message`` is one of JAX's cache warnings; the first one prints the
    process's one line."""
    found = _CACHE_WARNING.match(str(message))
    if found is None:
        return False
    global _cache_warned
    if not _cache_warned:
        _cache_warned = True
        reason = " ".join(found.group(2).split())[:200]
        effect = ("compiling anew (deleting the directory is safe)" if found.group(1) == "reading"
                  else "the run goes on, its programs are not stored")
        print(f"nres: warning: cannot {found.group(1)[:-3].replace('writ', 'write')} the compilation cache "
              f"{str(_active)!r} ({reason}); {effect}; {ENV}=off turns the cache off", file=sys.stderr,
              flush=True)
    return True


class _RelayedCacheWarnings(logging.Filter):
    """matplotlib reads its style files under ``warnings.catch_warnings(record=True)``,
    which holds every thread's warnings for that moment (``nres.run`` imports it beside
    compilation) and logs them as ``In FILE: MESSAGE``; JAX's cache warnings among them
    become the one line too."""

    def filter(self, record):
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) == 2 and _cache_notice(args[1]))


def _quiet_cache_warnings() -> None:
    """Replace JAX's warnings about unusable cache entries by one line on stderr per process."""
    import warnings

    show = warnings.showwarning
    if getattr(show, "nres_cache", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not _cache_notice(message):
            return show(message, category, filename, lineno, file, line)

    showwarning.nres_cache = True
    warnings.showwarning = showwarning
    logging.getLogger("matplotlib.style").addFilter(_RelayedCacheWarnings())


# -- compiled programs stored whole ------------------------------------------------------
# JAX's persistent cache is keyed on the lowered program, so even a cache hit first traces
# and lowers it (for the default Lorenz run, about as long as the updates themselves).
# `Program` stores the compiled executable itself, keyed on everything that determines it
# (the caller's description of the program, its argument shapes and shardings, nres's own
# files, the versions of JAX and of the libraries programs are built from, the devices,
# XLA_FLAGS and JAX's settings), and loads it without tracing.

EXECUTABLES = "executables"  # subfolder of the cache directory
MAX_STORED_BYTES = 256 * 2**20  # the folder keeps the most recently used executables within this
_STALE_S = 3600.0  # a temporary file this old was left by a killed process
_LIBRARIES = ("jax", "jaxlib", "optax", "numpy", "mujoco", "mujoco-mjx", "scikit-learn")
_active: Optional[pathlib.Path] = None  # the directory `enable` chose


@functools.cache
def _source_digest() -> str:
    """Digest of every file of the installed nres package (code and data), once per process."""
    import hashlib

    digest, root = hashlib.sha256(), pathlib.Path(__file__).resolve().parent
    for file in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _versions() -> dict:
    """The installed versions of :data:`_LIBRARIES` (None: not installed), read once per process."""
    import importlib.metadata

    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _environment() -> dict:
    """What beside a program's own description determines its executable. JAX's settings
    and the devices are read at every call: they may change within a process."""
    import sys

    import jax

    settings = {k: repr(v) for k, v in sorted(jax.config.values.items())
                if not any(word in k for word in ("cache", "log", "explain", "debug"))}
    return {
        "nres": _source_digest(), "python": sys.version, "versions": _versions(), "settings": settings,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "processes": jax.process_count(),
        "process": jax.process_index(),  # each process of a multi-process run compiles for its own devices
        "devices": [(d.platform, d.device_kind, d.id) for d in jax.devices()],
    }


def _signature(args) -> tuple:
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(args)
    return (str(treedef),) + tuple(
        (tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)), str(getattr(x, "sharding", "")),
         bool(getattr(x, "weak_type", False)))
        for x in leaves
    )


_fresh_lock = threading.Lock()
_fresh_compiles = 0  # compilations in flight with JAX's persistent cache turned off


def _compile_fresh(lowered):
    """Compile without JAX's persistent cache: an executable JAX loaded from its cache
    serializes incompletely (it fails with "Function ... not found" when loaded again).
    Thread-safe: the cache stays off while any such compilation is in flight."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    global _fresh_compiles
    with _fresh_lock:
        if not _fresh_compiles:
            jax.config.update("jax_enable_compilation_cache", False)
            compilation_cache.reset_cache()
        _fresh_compiles += 1
    try:
        return lowered.compile()
    finally:
        with _fresh_lock:
            _fresh_compiles -= 1
            if not _fresh_compiles:
                jax.config.update("jax_enable_compilation_cache", True)
                compilation_cache.reset_cache()


def _accepts(compiled, args) -> bool:
    """Whether a loaded executable was compiled for arguments like ``args`` (tree, shapes, dtypes)."""
    import jax
    import numpy as np

    try:
        if compiled.in_tree != jax.tree_util.tree_structure((tuple(args), {})):
            return False
        return all(tuple(info.shape) == tuple(np.shape(x)) and np.dtype(info.dtype) == np.dtype(x.dtype)
                   for info, x in zip(jax.tree_util.tree_leaves(compiled.args_info), jax.tree_util.tree_leaves(args)))
    except Exception:  # noqa: BLE001 - anything unexpected in the stored file: compile anew
        return False


class Program:
    """``jax.jit(fn)`` whose executable is kept in the cache directory between processes.

    ``identity`` describes the program completely beside ``fn``'s code (e.g. the run's
    resolved configuration), or is a function returning that description when first
    called; ``None`` means it cannot be described, and the program is an ordinary
    ``jax.jit``. One executable per distinct signature (argument tree, shapes, dtypes,
    shardings). ``compiler_options``: XLA options of every compilation
    (:func:`nres.compiler.compiler_options`), part of the stored executable's key.
    """

    def __init__(self, fn, identity, compiler_options: Optional[dict] = None):
        import jax

        self.fn, self.identity = fn, identity
        self.compiler_options = dict(compiler_options or {})
        self._jit = jax.jit(fn, compiler_options=self.compiler_options)
        self._compiled: dict = {}
        self._last = None

    def _stored(self) -> bool:
        if callable(self.identity):
            self.identity = self.identity()
        return _active is not None and self.identity is not None

    def prepare(self, *args) -> None:
        """Start building the executable for arguments like ``args`` in a background
        thread; a later call with arguments of that signature waits for it. ``args`` may
        be arrays or ``jax.ShapeDtypeStruct`` (with the shardings the call's arrays will
        have). A program that must be compiled is traced and lowered before this returns
        (Python work, which holds the GIL wherever it runs); XLA then compiles it, or a
        stored one is loaded, without holding the GIL, overlapping with what the caller
        does next (tracing another program). Does nothing for a program that is not
        stored; errors are left to the call that needs the program.
        """
        if not self._stored():
            return
        signature = _signature(args)
        if signature in self._compiled:
            return
        file, lowered = self._file(signature), None
        if not file.exists():
            try:
                lowered = self._jit.lower(*args)
            except Exception:
                return
        future: concurrent.futures.Future = concurrent.futures.Future()

        def build():
            try:
                future.set_result(self._build(file, args, lowered))
            except BaseException as err:  # re-raised by the call that needs it
                future.set_exception(err)

        self._compiled[signature] = future
        threading.Thread(target=build, name="nres-compile", daemon=True).start()

    def __call__(self, *args):
        if not self._stored():
            return self._jit(*args)
        if self._last is not None:  # the usual call: the signature of the previous one
            try:
                return self._last(*args)
            except (TypeError, ValueError):  # other shapes, dtypes or shardings: look it up
                pass
        signature = _signature(args)
        compiled = self._compiled.get(signature)
        if isinstance(compiled, concurrent.futures.Future):
            try:
                compiled = compiled.result()
            except Exception:  # built again here, where its error (if any) belongs
                compiled = None
        if compiled is None:
            compiled = self._build(self._file(signature), args)
        self._compiled[signature] = compiled
        self._last = compiled
        return compiled(*args)

    def _build(self, file: pathlib.Path, args, lowered=None):
        """The executable stored in ``file``, else compiled (from ``lowered``, or lowered
        for ``args``) and stored there; a given ``lowered`` means nothing is stored yet."""
        compiled = self._load(file) if lowered is None else None
        if compiled is not None and not _accepts(compiled, args):  # another program's file: compile anew
            compiled = None
        return compiled if compiled is not None else self._compile_and_store(file, lowered or self._jit.lower(*args))

    def _file(self, signature) -> pathlib.Path:
        """Where this program's executable for ``signature`` is stored."""
        import hashlib
        import json

        described = [self.identity, self.compiler_options, _environment(), signature]
        key = hashlib.sha256(json.dumps(described, sort_keys=True, default=repr).encode()).hexdigest()
        return _active / EXECUTABLES / f"{key}.bin"

    @staticmethod
    def _load(file: pathlib.Path):
        """The stored executable, or None (missing, partly written by a killed process, unreadable)."""
        import pickle

        from jax.experimental import serialize_executable

        try:
            with open(file, "rb") as handle:
                compiled = serialize_executable.deserialize_and_load(*pickle.load(handle))
            os.utime(file)  # recently used: kept by `_evict`
            return compiled
        except Exception:
            return None

    @staticmethod
    def _compile_and_store(file: pathlib.Path, lowered):
        import pickle

        from jax.experimental import serialize_executable

        from nres.checkpoint import atomic_write

        compiled = _compile_fresh(lowered)
        try:
            payload = pickle.dumps(serialize_executable.serialize(compiled))
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(file, lambda handle: handle.write(payload))
            _evict(file.parent, MAX_STORED_BYTES)
        except Exception:  # an executable that cannot be stored (or a full disk) only costs the next start
            pass
        return compiled


def _evict(folder: pathlib.Path, max_bytes: int) -> None:
    """Delete the least recently used stored executables (oldest modification time: a
    load refreshes it) until ``folder`` holds at most ``max_bytes``, and temporary files
    that killed processes left. Another process may delete or load the same files
    meanwhile; every step tolerates that."""
    import time

    stored = []
    for path in folder.iterdir():
        try:
            info = path.stat()
        except OSError:
            continue
        if path.suffix == ".tmp" and time.time() - info.st_mtime > _STALE_S:
            try:
                path.unlink()
            except OSError:
                pass
        elif path.suffix == ".bin":
            stored.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in stored)
    for _, size, path in sorted(stored):
        if total <= max_bytes:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
