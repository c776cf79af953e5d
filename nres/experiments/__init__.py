"""Comparisons of many runs: experiment files, scheduling methods x seeds, summaries, figures.

``nres compare FILE --out DIR`` (:mod:`nres.experiments.cli`) reads an experiment file
(:mod:`~nres.experiments.spec`), runs every method x seed as an ordinary run directory
(:mod:`~nres.experiments.scheduler`, :mod:`~nres.experiments.worker`), and writes the
time-to-target summary, intervals and verdict (:mod:`~nres.experiments.summary`) and the
figures (:mod:`~nres.experiments.figures`). :mod:`~nres.experiments.report` renders the
README's result tables from published summaries (``docs/results/<name>/summary.json``).
"""
