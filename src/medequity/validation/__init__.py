"""Validation of the seed methods on synthetic data whose bias mechanism is known.

The claim scaffolding (:class:`Claim`, :class:`ValidationResult`, their files and plot) shared
by each paper feature's validation (:mod:`medequity.fairdi.validation`,
:mod:`medequity.fairtune.validation`, :mod:`medequity.fair_diagnosis.validation`).
Each of those trains a method as its paper describes, on a synthetic preset chosen so the paper's
claim can be checked, and returns a :class:`ValidationResult`: the claims (observed value, bound,
tolerance, pass/fail), the numbers behind them and the settings. ``size="quick"`` is the version
the test suite runs; ``size="full"`` the benchmark (minutes on a CPU). From the command line:

    medequity validate fairdi            # FairDi §4.4: student vs step 0 and teachers
    medequity validate fairtune          # FairTune Fig. 1 and the mask search vs full FT
    medequity validate fair-diagnosis    # Fair Diagnosis: direct vs indirect path
    medequity validate segmentation      # segmentation mitigation vs ERM (:mod:`.segmentation`)

Names are imported on first use, so ``medequity --help`` does not pay for torch.
"""

import importlib

_EXPORTS = {
    "result": ("Claim", "ValidationResult"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")
    return getattr(module, name)
