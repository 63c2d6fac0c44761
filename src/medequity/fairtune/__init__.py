"""FairTune: search which modules to fine-tune (and the LR) for validation fairness (Dutt et al., FairTune §3).

``search`` runs the outer loop (Optuna TPE + successive halving), ``fairtune`` also retrains the
best mask on all training data, ``compare_baselines`` gives Table 1 against full FT, linear readout,
attention and LayerNorm tuning; :mod:`medequity.fairtune.plots` draws Fig. 4 / Fig. 5 style figures.

Names are imported on first use, so ``medequity --help`` does not pay for torch and Optuna.
"""

import importlib

_EXPORTS = {
    "search": ("BASELINES", "FairTuneConfig", "FairTuneResult", "Objective", "SearchResult", "SearchSetup",
               "balanced_subsample", "compare_baselines", "fairtune", "search", "split_group_aucs", "study_history",
               "test_summary", "tune_lr"),
    "space": ("LR_RANGE", "SearchSpace", "group_space", "search_space", "vit_groups", "vit_space"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name = _MODULE_OF[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    # Bind every export of that module now: importing the submodule ``search`` set the package
    # attribute ``search`` to the module, and the function of the same name must win, as before.
    globals().update({export: getattr(module, export) for export in _EXPORTS[module_name]})
    return globals()[name]
