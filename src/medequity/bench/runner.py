"""Run every cell of a benchmark spec: inline, in local processes, or on a Ray cluster.

Workers compute; only the driver writes. A worker returns its tables as Parquet bytes and a
``run.json`` record, so a Ray cluster needs no shared file system, and the driver writes each run
atomically (``run.json`` last) and rewrites ``results.parquet`` as runs finish. Runs whose
``run.json`` exists are skipped, so a stopped benchmark continues where it stopped. A run that
raises is recorded (``error.json`` with its traceback) and the others go on.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.bench.spec import BenchSpec, Cell, Evaluation, load_spec
from medequity.bench.store import Results, ResultsLock, ResultsStore, frame_to_parquet, now
from medequity.data.base import GROUP_PREFIX
from medequity.experiment import RunResult, run_experiment
from medequity.experiment.prepare import resolve_checkpoint
from medequity.training.trainer import Trainer
from medequity.utils.process import worker_initializer

Progress = Callable[[int, int, str], None]  # (runs done, runs in total, what is happening)


def run_benchmark(spec: str | Path | dict | BenchSpec, out: str | Path, *, ray_address: str | None = None,
                  n_jobs: int = 1, progress: Progress | None = None) -> Results:
    """Run the cells of ``spec`` not yet finished under ``out``; return all results.

    ``n_jobs=1`` runs inline; more runs that many spawned processes (which end when this process
    does, however it ends: :func:`~medequity.utils.process.die_with_parent`); ``ray_address`` sends runs to a Ray cluster
    (``"local"`` starts a local Ray with ``n_jobs`` CPUs). One call at a time may write ``out``: a
    second raises :class:`~medequity.bench.store.ResultsLocked` naming the first.
    """
    bench = spec if isinstance(spec, BenchSpec) else load_spec(spec)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1; got {n_jobs}")
    # One writer per folder: a second `bench run` on the same --out fails here, naming the first.
    with ResultsLock(out):
        return _run_locked(bench, out, ray_address=ray_address, n_jobs=n_jobs, progress=progress)


def _run_locked(bench: BenchSpec, out: str | Path, *, ray_address: str | None, n_jobs: int,
                progress: Progress | None) -> Results:
    store = ResultsStore(out)
    store.write_header(bench.to_yaml(), {
        "name": bench.name, "task": bench.task, "selection": bench.selection.to_dict(), "warnings": bench.warnings,
        "evaluation": asdict(bench.evaluation), "run_ids": [cell.run_id for cell in bench.cells], "updated": now(),
    })
    todo = [cell for cell in bench.cells if not store.is_done(cell.run_id)]
    total, done = len(bench.cells), len(bench.cells) - len(todo)
    report = progress or (lambda *_: None)
    report(done, total, f"{done} of {total} runs already done" if done else "starting")
    if not todo:
        return store.refresh_results()

    _pretrain_once(todo, lambda text: report(done, total, text))
    if ray_address is not None:
        outcomes = _run_on_ray(todo, bench.evaluation, ray_address, n_jobs)
    elif n_jobs == 1:
        outcomes = _run_inline(todo, bench.evaluation, lambda text: report(done, total, text))
    else:
        outcomes = _run_in_processes(todo, bench.evaluation, n_jobs)
    results = None
    for cell, outcome in outcomes:
        _record(store, cell, outcome)
        done += 1
        results = store.refresh_results()  # results.parquet always reflects every finished run
        report(done, total, f"{_describe(cell)} {'done' if outcome['status'] == 'done' else 'FAILED'}")
    return results if results is not None else store.refresh_results()


def _pretrain_once(cells: list[Cell], describe: Callable[[str], None]) -> None:
    """Train the ``synthetic:`` checkpoints the runs need here, once each, with a line per epoch —
    not silently inside the first run (a minute or more of no output), nor in every worker at once."""
    seen: set[str] = set()
    for cell in cells:
        key = json.dumps([cell.spec.task, cell.spec.model, cell.spec.model_options, cell.spec.cache_dir], sort_keys=True,
                         default=str)
        if key in seen:
            continue
        seen.add(key)
        try:  # a spec without a synthetic: checkpoint comes back unchanged at once
            resolve_checkpoint(cell.spec, progress=describe)
        except Exception:  # the runs that need it raise the same error and record it as their failure
            pass


def _describe(cell: Cell) -> str:
    return f"{cell.dataset}/{cell.model}/{cell.labels['usage']}/{cell.spec.method} {cell.spec.attribute} seed {cell.spec.seed}"


def _record(store: ResultsStore, cell: Cell, outcome: dict) -> None:
    if outcome["status"] == "done":
        store.write_run(cell.run_id, outcome["tables"], outcome["record"])
    else:
        store.write_error(cell.run_id, {"run_id": cell.run_id, "labels": cell.labels, "spec": cell.spec.to_dict(),
                                        "error": outcome["error"], "traceback": outcome["traceback"], "created": now()})


# --- executors --------------------------------------------------------------------------------------
def _run_inline(cells: list[Cell], evaluation: Evaluation, describe: Callable[[str], None]) -> Iterator[tuple[Cell, dict]]:
    for cell in cells:
        def on_epoch(info: dict, cell=cell) -> None:
            describe(f"{_describe(cell)}: epoch {info['epoch'] + 1}/{info['epochs']}")

        describe(_describe(cell))
        yield cell, execute_cell(cell, evaluation, on_epoch=on_epoch)


def _run_in_processes(cells: list[Cell], evaluation: Evaluation, n_jobs: int) -> Iterator[tuple[Cell, dict]]:
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    # Workers end with this process, however it ends (utils.process.worker_initializer).
    executor = ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn"), initializer=worker_initializer,
                                   initargs=(threads, os.getpid()))
    try:
        futures = {executor.submit(execute_cell, cell, evaluation): cell for cell in cells}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker process died (out of memory, killed): record it, go on
                outcome = _failure(exc)
            yield futures[future], outcome
    except BaseException:  # Ctrl-C or the caller stopped: drop queued runs, do not wait for running ones
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _run_on_ray(cells: list[Cell], evaluation: Evaluation, address: str, n_jobs: int) -> Iterator[tuple[Cell, dict]]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=n_jobs, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        # Ray hides GPUs from tasks that do not ask for one: on a cluster with GPUs each run asks for one.
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(execute_cell)
        pending = {remote.remote(cell, evaluation): cell for cell in cells}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except Exception as exc:  # the task or its worker died
                    outcome = _failure(exc)
                yield cell, outcome
        except BaseException:  # stopped: cancel what has not finished (a rerun resumes it)
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()


def _failure(exc: BaseException) -> dict:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc))}


# --- one run (runs in the worker) ---------------------------------------------------------------------
def execute_cell(cell: Cell, evaluation: Evaluation, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train and evaluate one cell; never raises an Exception (a failure is an outcome)."""
    try:
        result = run_experiment(cell.spec, trainer=Trainer(progress=on_epoch))
        return _outcome(cell, result, evaluation)
    except Exception as exc:
        return _failure(exc)


def _outcome(cell: Cell, result: RunResult, evaluation: Evaluation) -> dict:
    from medequity.data.splits import membership_hash
    from medequity.provenance import provenance

    predictions = result.predictions
    ids = {split: predictions.loc[predictions.split == split, "sample_id"].astype(str).to_numpy() for split in ("val", "test")}
    test_data = result.test_data
    group_names = test_data.group_names
    split_hash = {"train": membership_hash(result.data["train"].table["sample_id"].astype(str)),
                  **{split: membership_hash(values) for split, values in ids.items()}}

    tables = {"metrics": result.metrics, "summaries": result.summaries, "predictions": predictions,
              "history": result.history}
    segmentation = cell.spec.task == "segmentation"
    representation_info: dict[str, Any] = {}
    if evaluation.probe:
        try:
            if segmentation:
                frame, representation_info = segmentation_representation(result.model, test_data, evaluation,
                                                                         seed=cell.spec.seed)
            else:
                frame, representation_info = representation(result.model, test_data, predictions, evaluation,
                                                            seed=cell.spec.seed)
        except Exception as exc:  # the trained model and its test metrics are still worth keeping
            frame, representation_info = pd.DataFrame(columns=["sample_id", "x", "y"]), {"error": f"{type(exc).__name__}: {exc}"}
        tables["representation"] = frame
    gallery_info: dict[str, Any] = {}
    if segmentation:
        try:  # a few overlays for the report (bench.gallery): the model is still in memory now
            tables["gallery"] = segmentation_gallery(result, cell.spec.attribute, seed=cell.spec.seed)
            gallery_info = {"cases": int(len(tables["gallery"]))}
        except Exception as exc:  # the run's metrics are still worth keeping
            gallery_info = {"error": f"{type(exc).__name__}: {exc}"}
    validation = (segmentation_validation_summary(predictions, cell.spec.attribute) if segmentation
                  else validation_summary(result.history, result.best_epoch, group_names))
    created = now()
    record = {
        "run_id": cell.run_id, "labels": cell.labels, "spec": cell.spec.to_dict(), "seconds": result.seconds,
        "best_epoch": result.best_epoch, "threshold": result.threshold,
        "validation": validation,
        "method_log": result.method_log, "representation": representation_info, "created": created,
        # e.g. the zero-shot prompts used and where they came from (the dataset, the usage's params)
        "usage_record": getattr(result.model, "usage_record", None),
        **({"gallery": gallery_info} if segmentation else {}),
        "provenance": {**provenance(), "seed": cell.spec.seed, "split_seed": cell.spec.split_seed,
                       "split_hash": split_hash, "created": created},
    }
    return {"status": "done", "tables": {name: frame_to_parquet(_parquet_safe(t)) for name, t in tables.items()},
            "record": record}


def validation_summary(history: pd.DataFrame, best_epoch: int, group_names: tuple[str, ...]) -> dict:
    """Validation AUC, worst-group AUC, ES-AUC and per-group AUCs (by group name) of the chosen epoch."""
    if history is None or history.empty or "epoch" not in history.columns:
        return {}
    rows = history[history["epoch"] == best_epoch]
    row = (rows if not rows.empty else history).iloc[-1]  # multi-stage methods: the last stage's choice
    summary = {key: _number(row.get(key)) for key in ("val_auc", "val_worst_group_auc", "val_es_auc")}
    per_group = {}
    for g, name in enumerate(group_names):
        per_group[str(name)] = _number(row.get(f"val_auc_group{g}"))
    summary["val_auc_group"] = per_group
    return summary


def segmentation_validation_summary(predictions: pd.DataFrame, attribute: str) -> dict:
    """Validation Dice of a segmentation run on its attribute: overall (mean over samples of each
    sample's mean Dice over its classes, as the test metrics), worst group, ES-Dice (FairSeg:
    Dice / (1 + Σ_g |Dice − Dice_g|)) and per-group Dice (by group name) — what selection compares."""
    column = GROUP_PREFIX + attribute
    rows = predictions[(predictions.split == "val") & ~predictions["skipped"].astype(bool)]
    if rows.empty or column not in rows.columns:
        return {}
    per_sample = rows.groupby("sample_id", sort=False).agg(dice=("dice", "mean"), group=(column, "first"))
    overall = float(per_sample.dice.mean())
    groups = per_sample.groupby(per_sample.group.astype(str), sort=True).dice.mean()
    finite = groups[np.isfinite(groups)]
    es = overall / (1 + float(np.abs(overall - finite).sum())) if len(finite) else math.nan
    return {"val_dice": _number(overall), "val_worst_group_dice": _number(finite.min() if len(finite) else math.nan),
            "val_es_dice": _number(es), "val_dice_group": {str(g): _number(v) for g, v in groups.items()}}


def segmentation_gallery(result: RunResult, attribute: str, *, seed: int) -> pd.DataFrame:
    """The best, median and worst test case per group of a segmentation run, predicted as the run
    predicted them (trained models through the method's inference path, like the task's predict)."""
    from medequity.bench.gallery import gallery_table

    method = result.method
    with_groups = bool(getattr(method, "needs_groups_at_inference", False))
    if method is not None:
        method.extra.eval()

    def inference(net, x, groups):
        return method.logits(net, x, groups if with_groups else None)

    return gallery_table(result.model, result.test_data, result.predictions, attribute, seed=seed,
                         inference=inference if method is not None else None)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def representation(model, test_data, predictions: pd.DataFrame, evaluation: Evaluation, *, seed: int) -> tuple[pd.DataFrame, dict]:
    """Representation fairness on the test set: attribute probe AUCs and a 2-D embedding.

    Features are ``model.features(x)`` in eval mode over the test items as the model sees them
    (images for fine-tuning, cached encoder features for linear probing).
    """
    test = predictions[predictions.split == "test"].reset_index(drop=True)
    attribute_columns = [c for c in test.columns if c.startswith(GROUP_PREFIX)]
    if evaluation.attributes:
        attribute_columns = [c for c in attribute_columns if c.removeprefix(GROUP_PREFIX) in evaluation.attributes]
    empty = pd.DataFrame(columns=["sample_id", "x", "y", "label", *attribute_columns])
    if test_data is None or not hasattr(model, "features"):
        return empty, {"error": "the trained model has no features() or its test split was not seen"}
    return probe_and_embed(encode_test_set(model, test_data), test, evaluation, seed=seed)


def segmentation_representation(model, test_data, evaluation: Evaluation, *, seed: int) -> tuple[pd.DataFrame, dict]:
    """Representation fairness of a segmenter: attribute probes and a 2-D embedding of its image
    encoder's test embeddings, mean-pooled over space (memory-mapped from the embedding cache the
    run already filled, so nothing is encoded again). The encoder is the same for every prompt type."""
    if test_data is None or not hasattr(model, "embeddings"):
        reason = "the segmentation model has no cached image-encoder embeddings (embeddings()) to probe"
        return pd.DataFrame(columns=["sample_id", "x", "y"]), {"skipped": reason}
    embeddings = np.asarray(model.embeddings(test_data), dtype=np.float32)
    features = embeddings.reshape(len(embeddings), embeddings.shape[1], -1).mean(axis=2) if embeddings.ndim > 2 else embeddings
    table = test_data.table.reset_index(drop=True)
    frame, info = probe_and_embed(features, table, evaluation, seed=seed, label_column=None)
    info["features"] = "image-encoder embeddings, mean-pooled over space (the same for every prompt type)"
    return frame, info


def probe_and_embed(features: np.ndarray, test: pd.DataFrame, evaluation: Evaluation, *, seed: int,
                    label_column: str | None = "label") -> tuple[pd.DataFrame, dict]:
    """Attribute probe AUCs and a 2-D embedding of ``features`` (one row per row of ``test``, which
    holds ``sample_id`` and the ``group:<attribute>`` columns)."""
    from threadpoolctl import threadpool_limits

    from medequity.metrics.representation import attribute_probe_auc, embed_2d

    attribute_columns = [c for c in test.columns if c.startswith(GROUP_PREFIX)]
    if evaluation.attributes:
        attribute_columns = [c for c in attribute_columns if c.removeprefix(GROUP_PREFIX) in evaluation.attributes]
    feature_dim = int(features.shape[1])
    info: dict[str, Any] = {"probe_auc": {}, "probe_errors": {}}
    for column in attribute_columns:
        attribute = column.removeprefix(GROUP_PREFIX)
        try:
            # A small logistic regression: BLAS threads only contend (several times slower on shared cores).
            with threadpool_limits(limits=1):
                info["probe_auc"][attribute] = attribute_probe_auc(features, test[column].to_numpy(), random_state=seed)
        except ValueError as exc:  # e.g. a group with fewer than 2 test samples
            info["probe_auc"][attribute] = None
            info["probe_errors"][attribute] = str(exc)

    method = evaluation.embedding
    if features.shape[1] > 50 and features.shape[0] < 50:
        # embed_2d first reduces to 50 PCA components, which needs at least 50 samples.
        from sklearn.decomposition import PCA

        features = PCA(n_components=min(features.shape), random_state=seed).fit_transform(features)
    try:
        xy, rows = embed_2d(features, method=method, random_state=seed, max_samples=evaluation.embedding_samples)
    except ValueError:  # too few samples for t-SNE's perplexity
        method = "pca"
        xy, rows = embed_2d(features, method=method, random_state=seed, max_samples=evaluation.embedding_samples)
    frame = pd.DataFrame({"sample_id": test["sample_id"].to_numpy()[rows], "x": xy[:, 0], "y": xy[:, 1]})
    if label_column is not None:
        frame["label"] = test[label_column].to_numpy()[rows]
    for column in attribute_columns:
        frame[column] = test[column].to_numpy()[rows]
    info.update({"embedding": method, "n_embedded": int(len(rows)), "n_test": int(len(test)),
                 "feature_dim": feature_dim})
    return frame, info


def encode_test_set(model, data, batch_size: int = 512) -> np.ndarray:
    import torch

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    loader = torch.utils.data.DataLoader(data.items, batch_size=batch_size, shuffle=False)
    chunks = []
    with torch.no_grad():
        for batch in loader:
            chunks.append(model.features(batch["x"].to(device)).flatten(1).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (group values, stage names) as strings so Parquet accepts them."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            values = frame[column]
            if len(values) and all(isinstance(v, bytes) for v in values):  # binary (gallery arrays) stays binary
                continue
            frame[column] = values.where(values.isna(), values.astype(str))
    return frame
