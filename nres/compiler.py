"""How a run's training programs are compiled: the XLA options of its ``compile_for`` setting.

XLA:CPU has two families of kernel emitters. Its default, the fusion emitters, give the
fastest kernels; the classic emitters compile in about half the time for small
programs, at slower kernels. ``compile_for`` chooses per run:

* ``"steps"``: XLA's defaults (the fastest updates; what a long run wants);
* ``"start"``: the classic emitters on the CPU backend (the shortest cold start; the
  Lorenz task's default, whose programs compute the same bits under both, tested).

Only the CPU backend is affected; on GPU and TPU both settings compile the same program.
Every engine compiles the training programs (init, update chunk, the Ray workers'
windows and apply) with these options, so a run's results do not depend on its engine.
"""

from __future__ import annotations

from nres.config import COMPILE_FOR


def compiler_options(compile_for: str) -> dict:
    """The XLA compiler options (``jax.jit(..., compiler_options=...)``) of a
    ``compile_for`` setting on the default backend; empty for ``"steps"`` and off CPU."""
    import jax

    if compile_for not in COMPILE_FOR:
        raise ValueError(f"compile_for must be one of {', '.join(COMPILE_FOR)}, got {compile_for!r}")
    if compile_for == "start" and jax.default_backend() == "cpu":
        return {"xla_cpu_use_fusion_emitters": False}
    return {}
