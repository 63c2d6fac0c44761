"""``medequity bench``: a grid of experiments from a YAML spec, run locally or on Ray, resumable.

:func:`load_spec` expands a spec into runs, :func:`run_benchmark` runs those not yet finished,
:func:`load_results` reads a results folder back as DataFrames (layout in :mod:`.store`).
Names are imported on first use, so reading results does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "run_benchmark": "runner",
    "SELECTION_GROUP": "selection", "mark_selected": "selection",
    "BenchSpec": "spec", "Cell": "spec", "SpecError": "spec", "load_spec": "spec", "run_id": "spec",
    "Results": "store", "leaderboard": "store", "load_results": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medequity.bench' has no attribute {name!r}")
    return getattr(import_module(f"medequity.bench.{_EXPORTS[name]}"), name)
