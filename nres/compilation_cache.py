"""JAX's persistent compilation cache for the command line.

A run compiles its programs (the burn-in, the chunk of updates, the evaluation) once;
with the cache on, a later run of the same configuration on the same machine and JAX
version loads them from disk instead of compiling again, so it starts in about the
time of its imports. Cached programs give the same results as freshly compiled ones
(the cache stores the compiled executable of the same program).

Where: ``$XDG_CACHE_HOME/nres/jax`` (default ``~/.cache/nres/jax``). The environment
variable ``NRES_COMPILATION_CACHE=DIR`` moves it, ``NRES_COMPILATION_CACHE=off``
disables it; ``nres train --compilation-cache DIR|off`` does the same for one command.
Deleting the directory is always safe.
"""

from __future__ import annotations

import os
import pathlib
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
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
