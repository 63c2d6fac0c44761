"""``medequity bench``: a grid of experiments from a YAML spec, run locally or on Ray, resumable.

:func:`load_spec` expands a spec into runs, :func:`run_benchmark` runs those not yet finished,
:func:`load_results` reads a results folder back as DataFrames (layout in :mod:`.store`).
"""

from medequity.bench.runner import run_benchmark
from medequity.bench.selection import SELECTION_GROUP, mark_selected
from medequity.bench.spec import BenchSpec, Cell, SpecError, load_spec, run_id
from medequity.bench.store import Results, leaderboard, load_results

__all__ = ["SELECTION_GROUP", "BenchSpec", "Cell", "Results", "SpecError", "leaderboard", "load_results", "load_spec",
           "mark_selected", "run_benchmark", "run_id"]
