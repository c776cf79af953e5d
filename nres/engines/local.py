"""Today's engine: every update of a chunk in one compiled call in this process."""

from __future__ import annotations

import numpy as np

from nres.compilation_cache import Program


class LocalEngine:
    """One compiled ``fori_loop`` per chunk (``Trainer._chunk_fn``); particles spread over
    this process's devices by ``Trainer.place`` when their count divides ``N``."""

    is_writer = True

    def __init__(self, trainer):
        self.trainer = trainer
        # stored whole in the compilation cache: a later run loads it without tracing
        self._chunk = Program(trainer._chunk_fn, lambda: trainer.program_identity("chunk"))

    def place(self, learner):
        return self.trainer.place(learner)

    def host(self, learner):
        return learner

    def prepare(self, template):
        self._chunk.prepare(template, np.int32(1), self.trainer.no_hold)

    def run_chunk(self, learner, count, hold):
        return self._chunk(learner, count, hold)

    def close(self) -> None:
        pass
