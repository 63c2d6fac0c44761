"""FairDi Table 3 ablation in one command: ERM → +CutMix → FIS → FIS+CutMix (step 0) → teachers → student.

    medequity fairdi ablation --option preset=fundus-race-difficulty --option n=2000 --attribute race \\
        --model small_cnn --model-option input_size=64 --out runs/fairdi-ablation

Rows (one per model, all on the same test split):

* ``ERM``, ``ERM + CutMix``, ``FIS`` — step-0 variants, each trained with FairDi's step-0 training
  settings (:meth:`FairDi.stage_config`: Adam 1e-4, wd 1e-4, ×0.1 every 10 epochs, early stop on
  validation worst-group AUC), so the rows differ only in loss and augmentation;
* ``FIS + CutMix (Step 0)`` — the FairDi run's own step-0 backbone + head (the same training a
  separate FIS+CutMix run would do, not repeated);
* ``FairDi-Teacher (<group> - Step 1)`` — each teacher head on the frozen backbone, scored on *all*
  test samples (as Table 3 reports them);
* ``FairDi-Student (Step 2)`` — the final model.

Columns: ``overall_auc``, ``auc:<group>`` per group, ``worst_group_auc``, ``auc_gap`` (max − min),
``es_auc`` (FairDi eq. 4: AUC / (1 + (1/G) Σ_g |AUC − AUC_g|)), ``mean_psd`` (eq. 5), ``max_psd``
(eq. 6), ``n_test``. Written as ``ablation.csv`` and ``ablation.json`` (with the spec and FairDi's
parameters), atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.experiment import ExperimentSpec, Prepared, RunResult, prepare, run_experiment, train_config
from medequity.methods import create_method
from medequity.metrics.summary import group_auc_summary
from medequity.training.trainer import Trainer
from medequity.usages import create_usage

STEP0_VARIANTS = (("ERM", "erm", {}), ("ERM + CutMix", "cutmix", {}), ("FIS", "fis", {"c": 0.5}))
STEP0_ROW = "FIS + CutMix (Step 0)"
STUDENT_ROW = "FairDi-Student (Step 2)"


def teacher_row(group: str) -> str:
    return f"FairDi-Teacher ({group} - Step 1)"


def auc_summary(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, group_names) -> dict[str, float]:
    """Table 3's columns: overall and per-group AUC, worst group, gap, ES-AUC (mean_abs_dev form,
    FairDi eq. 4), MeanPSD (eq. 5), MaxPSD (eq. 6) and the test size, from the one per-group summary
    (:func:`medequity.metrics.summary.group_auc_summary`).

    ``groups`` are integer codes into ``group_names`` (−1 = unknown: in the overall AUC only).
    A group with one class has AUC NaN, and so has every summary of it.
    """
    summary = group_auc_summary(labels, scores, groups, tuple(group_names), warn=False)
    return {"overall_auc": summary["auc"], **{f"auc:{name}": summary[f"auc:{name}"] for name in group_names},
            "worst_group_auc": summary["worst_group_auc"], "auc_gap": summary["auc_gap"], "es_auc": summary["es_auc_mad"],
            "mean_psd": summary["mean_psd"], "max_psd": summary["max_psd"], "n_test": int(summary["n"])}


def fairdi_ablation(spec_like: ExperimentSpec | Prepared | dict, *, fairdi_params: dict[str, Any] | None = None,
                    trainer: Trainer | None = None, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """FairDi Table 3 on one (dataset, attribute): a DataFrame, one row per model (see module doc).

    ``spec_like``: an :class:`~medequity.experiment.ExperimentSpec` (or its dict) or a prepared
    experiment; its ``method`` is ignored. It needs an image usage (``ft`` or ``peft``): CutMix
    edits pixels. ``fairdi_params`` override FairDi's defaults; the step-0 variants train with
    ``FairDi.stage_config(train, "step0")``. ``progress(message)`` is called before each training run.
    All rows are trained on one prepared experiment (same data, views and initial weights).
    """
    prepared = spec_like if isinstance(spec_like, Prepared) else prepare(spec_like)
    # metrics come from auc_summary below: the runs' own bootstrap/permutation tests are not needed
    prepared = prepared.with_spec(n_boot=0, n_permutations=0)
    spec = prepared.spec
    if create_usage(spec.usage, **spec.usage_params).uses_features:
        raise ValueError(f"the FairDi ablation needs an image usage (ft or peft) for CutMix; got usage {spec.usage!r}")
    fairdi_params = dict(fairdi_params or {})
    trainer = trainer or Trainer()
    fairdi = create_method("fairdi", **fairdi_params)
    step0_train = asdict(fairdi.stage_config(train_config(spec), "step0"))

    rows = []
    for label, method, params in STEP0_VARIANTS:
        if progress is not None:
            progress(f"training {label}")
        run = run_experiment(prepared.with_spec(method=method, method_params=dict(params), train=dict(step0_train)), trainer=trainer)
        test = run.test_data  # the split its test predictions were made on (same rows, same order)
        scores = run.predictions.loc[run.predictions.split == "test", "score"].to_numpy()
        rows.append({"model": label, "stage": "baseline", **auc_summary(test.labels, scores, test.groups, test.group_names)})

    if progress is not None:
        progress("training FairDi (step 0, teachers, student)")
    run = run_experiment(prepared.with_spec(method="fairdi", method_params=fairdi_params), trainer=trainer)
    frame = pd.concat([pd.DataFrame(rows), fairdi_rows(run)], ignore_index=True)
    frame.attrs["fairdi_log"] = run.method_log
    return frame


def fairdi_rows(run: RunResult) -> pd.DataFrame:
    """Step-0, teacher and student rows of a finished FairDi run on its own test split."""
    from medequity.methods.fairdi import HeadView

    test, config, predictor = run.test_data, train_config(run.spec), Trainer()
    heads = run.method.variant_heads(run.model)
    models = [(STEP0_ROW, "step0", HeadView(heads["step0"]))]
    models += [(teacher_row(name), "teacher", HeadView(heads[f"teacher:{name}"])) for name in run.method.group_names]
    models += [(STUDENT_ROW, "student", run.method)]
    rows = []
    for label, stage, method in models:
        scores = predictor.predict(run.model, method, test, config)
        rows.append({"model": label, "stage": stage, **auc_summary(test.labels, scores, test.groups, test.group_names)})
    # The student's scores must be the run's own test predictions: same split, same order.
    run_scores = run.predictions.loc[run.predictions.split == "test", "score"].to_numpy()
    if run_scores.shape != scores.shape or not np.allclose(run_scores, scores, atol=1e-5):
        raise RuntimeError("the ablation's test split does not match the FairDi run's test predictions")
    frame = pd.DataFrame(rows)
    frame.attrs["fairdi_log"] = run.method_log
    return frame


def write_ablation(frame: pd.DataFrame, out: str | Path, *, spec=None, fairdi_params: dict | None = None) -> dict[str, Path]:
    """``ablation.csv`` and ``ablation.json`` (rows + spec + FairDi parameters and log), atomically."""
    from medequity.provenance import provenance
    from medequity.utils.io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(out / "ablation.csv", frame.to_csv(index=False))}
    record = {"rows": json.loads(frame.to_json(orient="records")),
              "spec": spec.to_dict() if spec is not None and hasattr(spec, "to_dict") else spec,
              "fairdi_params": fairdi_params or {}, "fairdi_log": frame.attrs.get("fairdi_log", {}),
              "provenance": provenance()}
    paths["json"] = atomic_write_text(out / "ablation.json", json.dumps(record, indent=2, default=str))
    return paths
