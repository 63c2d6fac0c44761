"""FairTune: search which modules to fine-tune (and the LR) for validation fairness (Dutt et al., FairTune §3).

``search`` runs the outer loop (Optuna TPE + successive halving), ``fairtune`` also retrains the
best mask on all training data, ``compare_baselines`` gives Table 1 against full FT, linear readout,
attention and LayerNorm tuning; :mod:`medequity.fairtune.plots` draws Fig. 4 / Fig. 5 style figures.
"""

from medequity.fairtune.search import (
    BASELINES,
    FairTuneConfig,
    FairTuneResult,
    Objective,
    SearchResult,
    SearchSetup,
    balanced_subsample,
    compare_baselines,
    fairtune,
    search,
    split_group_aucs,
    study_history,
    test_summary,
    tune_lr,
)
from medequity.fairtune.space import LR_RANGE, SearchSpace, group_space, search_space, vit_groups, vit_space

__all__ = [
    "BASELINES", "LR_RANGE", "FairTuneConfig", "FairTuneResult", "Objective", "SearchResult", "SearchSetup", "SearchSpace",
    "balanced_subsample", "compare_baselines", "fairtune", "group_space", "search", "search_space", "split_group_aucs",
    "study_history", "test_summary", "tune_lr", "vit_groups", "vit_space",
]
