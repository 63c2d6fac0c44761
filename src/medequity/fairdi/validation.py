"""FairDi on a representation-biased synthetic task (FairDi §4.4, Table 3).

Claims checked on the test split, averaged over seeds, with tolerance ``tol`` (AUC points):

1. ``worst_group``: the student's worst-group AUC ≥ the step-0 backbone's (FIS + CutMix) − tol;
2. ``gap``: the student's AUC gap ≤ every teacher's gap (each teacher scored on all test samples,
   as Table 3 does) + tol.

Default data: ``derm-skin-tone-representation`` (only 15% of patients have skin types IV–VI).
Model: ``small_cnn`` fine-tuned from random initialisation at 32 px, FairDi's paper settings for
every stage (step 0: Adam 1e-4, ×0.1 every 10 epochs; heads: SGD momentum 0.9; patience 5;
λ = 0.95, τ = 1.5); one row per (seed, model) in the result's table, the oracle's per-group test
AUC (the rendered signal itself) in the settings.

Measured (``size="full"``: seeds 0 1 2, n = 4000, 30 epochs, tol 0.02; test means):

=============================  ==================  ==================  ==============================
preset                         worst-group AUC     AUC gap             teachers' gaps
                               step 0 → student    step 0 → student
=============================  ==================  ==================  ==============================
derm-skin-tone-representation  0.7674 → 0.7992     0.0411 → 0.0238     0.0575 / 0.0330   both PASS
fundus-race-difficulty         0.7046 → 0.6814     0.1171 → 0.1269     0.1470 / 0.1069   both FAIL
=============================  ==================  ==================  ==============================

On ``fundus-race-difficulty`` the disease signal is the same in both groups, only weaker for
non-White patients, so the pooled step-0 head is already near the oracle (test oracle AUC about
0.84 / 0.71) and a teacher trained on one group is no better on it than the pooled head
(non-White: 0.6975 vs 0.7046): FairDi's premise (teachers beat the shared model on their own
group) does not hold, and the student, one linear head compromising between two, loses about 0.02
worst-group AUC. Under-representation is where FairDi's claim holds on our data.

With ``table3=True`` (derm, 3 seeds, means) the other Table 3 rows read: ERM worst-group AUC 0.820
(gap 0.016), ERM + CutMix 0.767, FIS 0.819, FIS + CutMix (step 0) 0.767, student 0.799. CutMix costs
~0.05 worst-group AUC here: at 32 px the lesion covers a small central patch, so a pasted box
often adds or removes the lesion while the label is mixed by area. The student recovers most of
it (the claim above) but does not beat plain ERM on this data — Table 3's ERM row does not
reproduce at this scale. With ``fairdi_params={"cutmix": False}`` (3 seeds): step 0 0.819 → student
0.818 worst-group AUC, gap 0.020 → 0.015 (teachers 0.040 / 0.014), overall AUC 0.814 → 0.821 —
both claims pass, and the student ties ERM (0.820, gap 0.016) with the best overall AUC.
At 64 px (``image_size=64``, seed 0 only, 680 s): step 0 (FIS + CutMix) 0.679 → student 0.834
worst-group AUC, above ERM's 0.829 (overall AUC 0.836 vs 0.829) — Table 3's ordering — but the
gap claim fails on that seed (student 0.037 vs a teacher's 0.001: with one seed a teacher can be
level on both groups by chance, as seed 1 at 32 px; the full check averages seeds).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import pandas as pd

from medequity.validation.result import Claim, ValidationResult

SIZES = {
    # the benchmark: ~1 min per seed on one CPU thread
    "full": {"n": 4000, "epochs": 30, "seeds": (0, 1, 2)},
    # the test suite's version of the same experiment
    "quick": {"n": 3000, "epochs": 10, "seeds": (0,)},
}
DEFAULT_PRESET = "derm-skin-tone-representation"
DEFAULT_ATTRIBUTE = {"derm-skin-tone-representation": "skin_tone", "fundus-race-difficulty": "race"}


def fairdi_spec(preset: str, attribute: str, *, n: int, seed: int, epochs: int, image_size: int = 32,
                fairdi_params: dict | None = None, cache_dir=None):
    """The experiment each seed runs: small_cnn fine-tuned with FairDi on a synthetic preset."""
    from medequity.experiment import ExperimentSpec

    return ExperimentSpec(
        dataset="synthetic", dataset_options={"preset": preset, "n": n, "seed": seed, "image_size": image_size},
        attribute=attribute, model="small_cnn", model_options={"input_size": image_size}, cache_dir=cache_dir,
        usage="ft", method="fairdi", method_params=dict(fairdi_params or {}), seed=seed, eval_attributes=[attribute],
        train={"epochs": epochs, "batch_size": 128, "device": "cpu"}, n_boot=0, n_permutations=0)


def validate_fairdi(preset: str = DEFAULT_PRESET, attribute: str | None = None, *, size: str = "full",
                    n: int | None = None, epochs: int | None = None, seeds=None, image_size: int = 32,
                    tol: float = 0.02, fairdi_params: dict | None = None, table3: bool = False, cache_dir=None,
                    progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Train FairDi on ``preset`` for each seed and check both claims on the seed-averaged test AUCs.

    ``size`` picks n, epochs and seeds (``SIZES``); explicit arguments override it. ``table3``
    also trains the ERM, ERM + CutMix and FIS rows of Table 3 (three more runs per seed).
    """
    from medequity.data.synthetic import oracle_group_auc
    from medequity.experiment import prepare, run_experiment
    from medequity.fairdi.ablation import STEP0_ROW, STUDENT_ROW, fairdi_ablation, fairdi_rows

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    attribute = attribute or DEFAULT_ATTRIBUTE.get(preset)
    if attribute is None:
        raise ValueError(f"give the attribute for preset {preset!r} (known defaults: {DEFAULT_ATTRIBUTE})")
    chosen = {**SIZES[size], **{k: v for k, v in {"n": n, "epochs": epochs, "seeds": seeds}.items() if v is not None}}
    start = time.perf_counter()
    frames, oracle = [], {}
    for seed in chosen["seeds"]:
        spec = fairdi_spec(preset, attribute, n=chosen["n"], seed=seed, epochs=chosen["epochs"], image_size=image_size,
                           fairdi_params=fairdi_params, cache_dir=cache_dir)
        if progress is not None:
            progress(f"FairDi seed {seed}: step 0, teachers, student{' + Table 3 baselines' if table3 else ''}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small groups warn that their metrics are unreliable
            prepared = prepare(spec)
            frame = fairdi_ablation(prepared, fairdi_params=fairdi_params, progress=progress) if table3 \
                else fairdi_rows(run_experiment(prepared))
        oracle[seed] = {str(k): float(v) for k, v in oracle_group_auc(prepared.dataset, attribute, split="test").items()}
        frames.append(frame.assign(seed=seed))
    rows = pd.concat(frames, ignore_index=True)
    numeric = [c for c in rows.columns if c not in ("model", "stage", "seed")]
    mean = rows.groupby("model", sort=False)[numeric].mean()
    step0, student = mean.loc[STEP0_ROW], mean.loc[STUDENT_ROW]
    teacher_gaps = mean.loc[[m for m in mean.index if m.startswith("FairDi-Teacher")], "auc_gap"]
    claims = [
        Claim("worst_group", "the student's worst-group AUC is at least the step-0 backbone's (FIS + CutMix), within tol",
              float(student["worst_group_auc"]), ">=", float(step0["worst_group_auc"]) - tol, "FairDi §4.4, Table 3"),
        Claim("gap", "the student's AUC gap is at most every teacher's gap (teachers scored on all test samples), within tol",
              float(student["auc_gap"]), "<=", float(teacher_gaps.min()) + tol, "FairDi §4.4, Table 3"),
    ]
    settings = {"preset": preset, "attribute": attribute, "size": size, **chosen, "seeds": list(chosen["seeds"]),
                "image_size": image_size, "tol": tol, "fairdi_params": dict(fairdi_params or {}), "table3": table3,
                "model": "small_cnn", "oracle_test_auc": oracle,
                "step0": {"worst_group_auc": float(step0["worst_group_auc"]), "auc_gap": float(step0["auc_gap"])},
                "teacher_gaps": {str(k): float(v) for k, v in teacher_gaps.items()}}
    return ValidationResult("fairdi", preset, claims, rows, settings, time.perf_counter() - start,
                            notes=["table: one row per (seed, model); claims use the means over seeds"])
