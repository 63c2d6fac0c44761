"""One experiment, end to end: dataset → split → backbone + usage → method → predictions → metrics.

This is the unit that ``medequity train`` runs once and ``medequity bench`` runs for every cell of
its grid. Data flows one way; each step gets only what the previous one produced.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.data import GROUP_PREFIX, create_dataset
from medequity.data.attributes import with_intersections
from medequity.data.splits import get_splits
from medequity.data.transforms import build_transform
from medequity.metrics import GroupMetricResult, GroupMetricWarning, group_metrics
from medequity.metrics.causal import ADF_SUMMARY, adf_with_interval
from medequity.metrics.groups import encode_groups
from medequity.metrics.thresholds import resolve_threshold
from medequity.training.data import make_split_data
from medequity.training.trainer import TrainConfig, Trainer

SPLITS = ("train", "val", "test")


@dataclass
class ExperimentSpec:
    """Everything that defines one run; plain data (YAML/JSON), never code."""

    dataset: str = "synthetic"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    attribute: str = "sex"
    model: str = "small_cnn"
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. checkpoint, input_size
    transform: dict[str, Any] | None = None  # default: what the backbone expects
    usage: str = "lp"
    usage_params: dict[str, Any] = field(default_factory=dict)
    method: str = "erm"
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    split_file: str | None = None
    split_seed: int = 0
    threshold: str | float = "best_f1"  # fitted on validation, applied to test
    n_boot: int = 200
    n_permutations: int = 200
    eval_attributes: list[str] | None = None  # default: every attribute of the dataset
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown experiment keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)


@dataclass
class RunResult:
    spec: ExperimentSpec
    predictions: pd.DataFrame  # split, sample_id, label, score, pred, group:<attr> columns
    metrics: pd.DataFrame  # tidy: attribute, group, metric, value, ci_low, ci_high, n, ...
    summaries: pd.DataFrame  # tidy: attribute, metric, summary, value, ci_low, ci_high, p_value
    history: pd.DataFrame
    threshold: dict
    best_epoch: int
    seconds: float
    method_log: dict = field(default_factory=dict)
    model: Any = None  # the trained model (not serialised by the results store)
    method: Any = None
    # What ``metrics``/``summaries`` were made from (not serialised): save_run's audit report reuses
    # them instead of running the bootstrap and permutation tests again.
    group_results: dict[str, GroupMetricResult] = field(default_factory=dict)
    test_data: Any = None  # the test SplitData the model was evaluated on (explanations reuse it)


def load_experiment_data(spec: ExperimentSpec):
    """The dataset with its split column (official, saved, or made and saved)."""
    dataset = create_dataset(spec.dataset, spec.root, **spec.dataset_options) if spec.root else create_dataset(spec.dataset, **spec.dataset_options)
    if "split" not in dataset.table.columns or dataset.table["split"].isna().any():
        dataset = get_splits(dataset, spec.split_file, seed=spec.split_seed)
    dataset = with_intersections(dataset, [spec.attribute, *(spec.eval_attributes or [])])
    if spec.attribute not in dataset.attributes:
        raise ValueError(f"dataset {spec.dataset!r} has no attribute {spec.attribute!r}; has {dataset.attributes}")
    return dataset


def rebuild_split_data(spec: ExperimentSpec, split: str = "test"):
    """A split as :func:`run_experiment` fed it to the model (same dataset, split, groups and
    transform), rebuilt from the spec: for a result that does not carry it (``RunResult.test_data``)."""
    dataset = load_experiment_data(spec)
    part = dataset.subset(np.flatnonzero(dataset.table["split"].astype(str).to_numpy() == split))
    group_names = tuple(sorted(dataset.groups(spec.attribute).dropna().astype(str).unique()))
    config = spec.transform
    if config is None:  # what the backbone expects; random init only (never load a checkpoint here)
        from medequity.models import create_backbone

        options = {k: v for k, v in spec.model_options.items() if k != "checkpoint"}
        config = create_backbone(spec.model, cache_dir=spec.cache_dir, **options).transform_config()
    return make_split_data(part, spec.attribute, build_transform(config), group_names)


def run_experiment(spec: ExperimentSpec, *, progress=None, trainer: Trainer | None = None) -> RunResult:
    """Train and evaluate one (dataset, model, usage, method, attribute, seed) cell."""
    from medequity.methods import create_method
    from medequity.models import create_backbone
    from medequity.training.trainer import seed_everything
    from medequity.usages import UsageContext, create_usage

    start = time.perf_counter()
    seed_everything(spec.seed)
    dataset = load_experiment_data(spec)
    splits = {name: dataset.subset(np.flatnonzero(dataset.table["split"].astype(str).to_numpy() == name)) for name in SPLITS}
    for name, part in splits.items():
        if len(part) == 0:
            raise ValueError(f"split {name!r} of {spec.dataset!r} is empty")
    known = dataset.groups(spec.attribute).dropna().astype(str)
    group_names = tuple(sorted(known.unique()))

    backbone = create_backbone(spec.model, cache_dir=spec.cache_dir, **spec.model_options)
    transform = build_transform(spec.transform or backbone.transform_config())
    data = {name: make_split_data(part, spec.attribute, transform, group_names) for name, part in splits.items()}

    usage = create_usage(spec.usage, **spec.usage_params)
    config = TrainConfig(**{"seed": spec.seed, **spec.train, **({} if usage.trains else {"epochs": 0})})
    context = UsageContext(cache_dir=Path(spec.cache_dir) if spec.cache_dir else None, device=str(config.resolved_device()),
                           progress=progress)
    model, data = usage.build(backbone, data, context)
    method = create_method(spec.method, **spec.method_params)
    trainer = trainer or Trainer()
    fit = method.fit(model, data["train"], data["val"], config, trainer)

    scores = {name: trainer.predict(model, method, data[name], config) for name in ("val", "test")}
    post = {name: method.postprocess(scores[name], data[name].groups) for name in ("val", "test")}
    threshold = resolve_threshold(spec.threshold, y_val=data["val"].labels, score_val=post["val"][0]) \
        if not isinstance(spec.threshold, (int, float)) else resolve_threshold(spec.threshold)
    frames = []
    for name in ("val", "test"):
        score, pred = post[name]
        pred = threshold.predict(score) if pred is None else pred
        table = data[name].table
        frame = pd.DataFrame({"split": name, "sample_id": table["sample_id"].astype(str).to_numpy(),
                              "label": data[name].labels, "score": score, "pred": pred.astype(np.int8)})
        for column in table.columns:
            if column.startswith(GROUP_PREFIX):
                frame[column] = table[column].astype(object).to_numpy()
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    test = predictions[predictions.split == "test"]
    results = evaluate_predictions(test, spec.eval_attributes or dataset.attributes, n_boot=spec.n_boot,
                                   n_permutations=spec.n_permutations, seed=spec.seed)
    metrics, summaries = tidy_results(results)
    summaries = pd.concat([summaries, adf_summaries(test, list(results), n_boot=spec.n_boot, seed=spec.seed)],
                          ignore_index=True)
    return RunResult(spec, predictions, metrics, summaries, fit.history, threshold.to_dict(), fit.best_epoch,
                     time.perf_counter() - start, dict(method.log), model, method, results, data["test"])


def evaluate_predictions(test: pd.DataFrame, attributes, *, n_boot: int, n_permutations: int,
                         seed: int) -> dict[str, GroupMetricResult]:
    """Per-group metrics with bootstrap CIs and gap tests of a test predictions table, per attribute.

    Called the way :func:`medequity.audit.audit` calls :func:`group_metrics` (its defaults, the
    table's hard predictions), so :func:`save_run` can hand these results to the audit as they are.
    """
    return {attribute: group_metrics(test["label"].to_numpy(), test["score"].to_numpy(), y_pred=test["pred"].to_numpy(),
                                     sensitive_features=test[GROUP_PREFIX + attribute].rename(attribute), n_boot=n_boot,
                                     n_permutations=n_permutations, random_state=seed)
            for attribute in attributes}


def adf_summaries(test: pd.DataFrame, attributes, *, n_boot: int, seed: int) -> pd.DataFrame:
    """ADF = I(S;Ŷ|Y) of the test decisions per attribute, with its bootstrap CI, as summary rows
    (metric ``adf``): Fair Diagnosis' causal fairness, reported for every run so benchmarks can
    compare methods on it (the audit report computes the same)."""
    rows = []
    y, pred = test["label"].to_numpy(), test["pred"].to_numpy(dtype=np.int64)
    for attribute in attributes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GroupMetricWarning)  # group_metrics has already said it
            groups = encode_groups(test[GROUP_PREFIX + attribute].rename(attribute), len(test), require_two=False)
        adf = adf_with_interval(y, pred, groups, n_boot=n_boot, random_state=seed)
        rows.append({"attribute": attribute, "metric": "adf", "summary": ADF_SUMMARY, "value": adf["value"],
                     "ci_low": adf["ci_low"], "ci_high": adf["ci_high"], "p_value": np.nan})
    return pd.DataFrame(rows, columns=["attribute", "metric", "summary", "value", "ci_low", "ci_high", "p_value"])


def tidy_results(results: dict[str, GroupMetricResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, summaries): the tidy tables of :class:`RunResult`, one block per attribute."""
    metrics = [result.to_frame().assign(attribute=attribute) for attribute, result in results.items()]
    summaries = [result.summaries().assign(attribute=attribute) for attribute, result in results.items()]
    return pd.concat(metrics, ignore_index=True), pd.concat(summaries, ignore_index=True)


def save_run(result: RunResult, out_dir: str | Path, *, n_boot: int | None = None) -> dict[str, Path]:
    """Write a trained run: weights (safetensors), predictions, history, run.json and the audit
    report of its test predictions (report.html/json, groups.csv, gaps.csv), all atomically."""
    import json

    from medequity.audit import audit
    from medequity.provenance import provenance
    from medequity.training.trainer import save_checkpoint
    from medequity.utils.io import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"model": save_checkpoint(out / "model.safetensors", result.model, result.method)}
    for name, frame in (("predictions", result.predictions), ("history", result.history)):
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        paths[name] = atomic_write_bytes(out / f"{name}.parquet", buffer.getvalue())
    record = {"spec": result.spec.to_dict(), "threshold": result.threshold, "best_epoch": result.best_epoch,
              "seconds": result.seconds, "method_params": result.method.params, "method_log": result.method_log,
              "provenance": provenance()}
    paths["run"] = atomic_write_text(out / "run.json", json.dumps(record, indent=2, default=str))
    test = result.predictions[result.predictions.split == "test"].copy()
    attributes = [c for c in test.columns if c.startswith(GROUP_PREFIX)]
    test = test.rename(columns={c: c[len(GROUP_PREFIX):] for c in attributes})
    n_boot = result.spec.n_boot if n_boot is None else n_boot
    # The report audits the run's own decisions: the scores cut at the run's threshold, or, for a
    # post-processing method (ThresholdOptimizer, reject option), its per-group decisions. Either
    # way they are what run_experiment evaluated, so its results serve (no second bootstrap)
    # unless a different n_boot is asked for.
    thresholded = resolve_threshold(result.threshold["value"]).predict(test["score"].to_numpy())
    post_processed = not np.array_equal(test["pred"].to_numpy(), thresholded)
    reuse = n_boot == result.spec.n_boot
    report = audit(test, label="label", score="score", prediction="pred" if post_processed else None,
                   attributes=[c[len(GROUP_PREFIX):] for c in attributes], threshold=result.threshold["value"], n_boot=n_boot,
                   n_permutations=result.spec.n_permutations, random_state=result.spec.seed,
                   precomputed=result.group_results if reuse else None)
    report.settings["source"] = f"test predictions of {result.spec.method} ({result.spec.usage}, {result.spec.model}) on {result.spec.dataset}"
    if post_processed:
        report.settings["decisions"] = f"{result.spec.method}'s own post-processed decisions (not one threshold on the scores)"
    paths.update({f"report_{k}": v for k, v in report.save(out).items()})
    paths.update(_save_explanations(result, out))
    return paths


def _save_explanations(result: RunResult, out: Path) -> dict[str, Path]:
    """Fair Diagnosis / FAAP runs (duck typing: ``perturb`` + ``sensitive_logits``): the Grad-CAM
    Ŷ/Ŝ explanation files (``explanations_{html,json,png}``); {} otherwise or for feature inputs.
    A failure here is logged, never fatal: the run itself is already saved."""
    import logging

    from medequity.fair_diagnosis.explanations import explain_fair_diagnosis, is_adversarial_mask_method

    if not is_adversarial_mask_method(result.method) or result.model is None:
        return {}
    try:
        written = explain_fair_diagnosis(result, out)
    except Exception:  # noqa: BLE001 - explanations are an extra; keep the saved run
        logging.getLogger(__name__).exception("could not write the Fair Diagnosis explanations")
        return {}
    return {} if written is None else {f"explanations_{k}": v for k, v in written.items()}
