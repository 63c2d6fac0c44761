"""``save_run``: write a trained run — weights, predictions, history, its record, the audit report
of its test predictions and the method's own artifacts (e.g. Fair Diagnosis' Grad-CAM
explanations) — every file atomically."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from medequity.audit import audit
from medequity.data import GROUP_PREFIX
from medequity.experiment.spec import RunResult
from medequity.metrics.thresholds import Threshold
from medequity.provenance import provenance
from medequity.training.trainer import save_checkpoint
from medequity.utils.io import atomic_write_bytes, atomic_write_text


def save_run(result: RunResult, out_dir: str | Path, *, n_boot: int | None = None) -> dict[str, Path]:
    """Write a run: predictions, history and run.json, then what its task writes (classification:
    the weights as safetensors and the audit report of its test predictions — report.html/json,
    groups.csv, gaps.csv; segmentation: metrics.csv and summaries.csv, and weights only when a
    usage trained them), then the method's own artifacts; every file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("predictions", result.predictions), ("history", result.history)):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        paths[name] = atomic_write_bytes(out / f"{name}.parquet", buffer.getvalue())
    record = {"spec": result.spec.to_dict(), "threshold": result.threshold, "best_epoch": result.best_epoch,
              "seconds": result.seconds, "method_params": result.method.params, "method_log": result.method_log,
              # what the usage chose (CLIP zero-shot/CLIP-Adapt: the prompts and where they came from)
              "usage_record": getattr(result.model, "usage_record", None), "provenance": provenance()}
    paths["run"] = atomic_write_text(out / "run.json", json.dumps(record, indent=2, default=str))
    if result.spec.task == "classification":
        paths.update(save_classification_report(result, out, n_boot=n_boot))
    else:
        paths.update(save_tables(result, out))
    paths.update(save_artifacts(result, out))
    return paths


def save_tables(result: RunResult, out: Path) -> dict[str, Path]:
    """The tidy per-group metrics and summaries as CSV, and the trained weights if anything trained."""
    paths = {name: atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
             for name, frame in (("metrics", result.metrics), ("summaries", result.summaries))}
    # per attribute: empty classes skipped per group, prompts inside their class per group, conventions
    settings = {attribute: result.extra_settings for attribute, result in result.group_results.items()}
    paths["settings"] = atomic_write_text(out / "evaluation.json", json.dumps(settings, indent=2, default=str))
    if result.best_epoch >= 0:  # a usage trained something: keep it
        paths["model"] = save_checkpoint(out / "model.safetensors", result.model, result.method)
    return paths


def save_classification_report(result: RunResult, out: Path, *, n_boot: int | None = None) -> dict[str, Path]:
    """The weights and the audit report of a classification run's test predictions."""
    paths = {"model": save_checkpoint(out / "model.safetensors", result.model, result.method)}
    test = result.predictions[result.predictions.split == "test"].copy()
    attributes = [c for c in test.columns if c.startswith(GROUP_PREFIX)]
    test = test.rename(columns={c: c[len(GROUP_PREFIX):] for c in attributes})
    n_boot = result.spec.n_boot if n_boot is None else n_boot
    # The report audits the run's own decisions: the scores cut at the run's threshold, or, for a
    # post-processing method (ThresholdOptimizer, reject option), its per-group decisions. Either
    # way they are what run_experiment evaluated, so its results serve (no second bootstrap)
    # unless a different n_boot is asked for.
    threshold = Threshold.from_dict(result.threshold)  # its own rule (>= for fitted, > for fixed) and record
    thresholded = threshold.predict(test["score"].to_numpy())
    post_processed = not np.array_equal(test["pred"].to_numpy(), thresholded)
    reuse = n_boot == result.spec.n_boot
    report = audit(test, label="label", score="score", prediction="pred" if post_processed else None,
                   attributes=[c[len(GROUP_PREFIX):] for c in attributes], threshold=threshold, n_boot=n_boot,
                   n_permutations=result.spec.n_permutations, random_state=result.spec.seed,
                   # each attribute on its own replicates, as run_experiment evaluated them (its results
                   # are reused): one resampling scheme for every attribute of the report
                   shared_bootstrap=False, precomputed=result.group_results if reuse else None)
    report.settings["source"] = (f"test predictions of {result.spec.method} ({result.spec.usage}, {result.spec.model}) "
                                 f"on {result.spec.dataset}")
    if post_processed:
        report.settings["decisions"] = f"{result.spec.method}'s own post-processed decisions (not one threshold on the scores)"
    paths.update({f"report_{k}": v for k, v in report.save(out).items()})
    return paths


def save_artifacts(result: RunResult, out: Path) -> dict[str, Path]:
    """The method's own artifacts (:meth:`~medequity.methods.base.Method.explain`: Fair Diagnosis and
    FAAP give Grad-CAM explanations of Ŷ and Ŝ) rendered by the report layer; {} for other methods.
    A failure here is logged, never fatal: the run itself is already saved."""
    from medequity.report.explanations import write_explanations

    if result.model is None or result.method is None:
        return {}
    try:
        data = result.test_data
        if data is None:
            from medequity.experiment.prepare import rebuild_split_data

            data = rebuild_split_data(result.spec, "test")
        explanation = result.method.explain(result.model, data, seed=result.spec.seed)
        if explanation is None:
            return {}
        spec = result.spec
        title = f"{result.method.name} ({spec.usage}, {spec.model}) on {spec.dataset}, attribute {spec.attribute}"
        written = write_explanations(explanation, out, title=title, settings={"attribute": spec.attribute})
    except Exception:  # noqa: BLE001 - explanations are an extra; keep the saved run
        logging.getLogger(__name__).exception("could not write the %s explanations", result.spec.method)
        return {}
    return {f"explanations_{k}": v for k, v in written.items()}
