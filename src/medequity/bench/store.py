"""The results of a benchmark on disk, and reading them back.

Layout (the HTML report and DuckDB queries rely on it)::

    <out>/spec.yaml                 the spec as given
    <out>/bench.json                name, task, selection rule, tuning-budget warnings, planned run ids
    <out>/results.parquet           summaries of all finished runs + identifiers + selected
    <out>/runs/<run_id>/metrics.parquet, summaries.parquet, predictions.parquet,
                        history.parquet, representation.parquet, run.json   (run.json last)
    <out>/runs/<run_id>/error.json  a failed run (rerun on resume)
    <out>/bench.lock                who is running into the folder (PID, host, start time), empty when no one

Every file is written atomically (temporary file + ``os.replace``), and ``run.json`` is written
last: a run folder without it is unfinished and runs again, so a killed benchmark loses nothing
and never counts a run twice. One ``bench run`` at a time writes a folder (:class:`ResultsLock`):
two would both run every cell, and the last ``bench.json`` would describe the other's runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medequity.bench.selection import SELECTION_GROUP, mark_selected
from medequity.utils.io import atomic_write_bytes, atomic_write_text

RUN_FILE = "run.json"
ERROR_FILE = "error.json"
BENCH_FILE = "bench.json"
RESULTS_FILE = "results.parquet"
SPEC_FILE = "spec.yaml"
LOCK_FILE = "bench.lock"
TABLES = ("metrics", "summaries", "predictions", "history", "representation")
IDENTIFIERS = ("run_id", *SELECTION_GROUP, "hparams")
RESULT_COLUMNS = (*IDENTIFIERS, "selected", "selection_rule")


@dataclass
class Results:
    """Finished runs of one benchmark as tidy tables (see the module docstring for the files)."""

    runs: pd.DataFrame  # one row per finished run: identifiers, selected, seconds, val_* columns
    metrics: pd.DataFrame  # per-group test metrics with identifier columns
    summaries: pd.DataFrame  # gap/worst/ES summaries with identifier columns
    failed: pd.DataFrame  # run_id, error (runs with error.json and no run.json)
    selection: dict = field(default_factory=dict)  # {"rule": ..., "max_gap": ...}
    warnings: list[str] = field(default_factory=list)
    task: str = "classification"  # the spec's task: picks the headline metric (HEADLINES)


@dataclass(frozen=True)
class Headline:
    """A task's headline metric: what the leaderboard shows and validation selection compares."""

    metric: str  # in the metrics/summaries tables
    es_summary: str  # the equity-scaled form the leaderboard shows
    score: str  # run column selection compares (overall validation value)
    group_scores: str  # run column: JSON of group name -> validation value
    columns: tuple[str, str, str, str]  # leaderboard names of: overall, worst group, gap, equity-scaled


HEADLINES = {
    # FairMedFM ES-AUC, std form.
    "classification": Headline("auc", "es_std", "val_auc", "val_group_aucs", ("auc", "worst_group_auc", "auc_gap", "es_auc")),
    # FairSeg ES-Dice: Dice / (1 + Σ_g |Dice − Dice_g|).
    "segmentation": Headline("dice", "es_sum_abs_dev", "val_dice", "val_group_dices",
                             ("dice", "worst_group_dice", "dice_gap", "es_dice")),
}


def headline(task: str) -> Headline:
    if task not in HEADLINES:
        raise ValueError(f"unknown task {task!r}; known: {sorted(HEADLINES)}")
    return HEADLINES[task]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def to_json(value: Any) -> Any:
    """JSON-safe copy: numpy/torch values to Python, NaN/inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


class ResultsLocked(RuntimeError):
    """Another process is running a benchmark into the same results folder."""


class StaleLockWarning(UserWarning):
    """A lock left by a benchmark that no longer runs was taken over."""


class ResultsLock:
    """Exclusive use of a results folder by one process, for as long as the ``with`` block runs.

    An advisory ``flock`` on ``<out>/bench.lock``: the operating system releases it when its
    holder exits in any way (even SIGKILL), so a lock can never outlive its process. The file
    records the holder — PID, host, start time, command — for the error a second process gets;
    it is emptied on release. A file that still names a holder but is not locked was left by a
    process that died: it is taken over, with a :class:`StaleLockWarning` naming that process.
    """

    def __init__(self, out: str | Path):
        self.path = Path(out) / LOCK_FILE
        self._handle: Any = None

    def __enter__(self) -> ResultsLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(handle)
                handle.close()
                raise ResultsLocked(
                    f"results folder {str(self.path.parent)!r} is in use by another `medequity bench run` "
                    f"({describe_holder(holder)}); wait for it to finish, stop it, or give this run another --out. "
                    f"(The lock is {str(self.path)!r}; it is released when that process exits.)") from None
            except BaseException:
                handle.close()
                raise
            # The file may have been replaced between open and flock (a holder does not delete it, but
            # a user might): only a lock on the file that is at the path now counts.
            if _same_file(handle, self.path):
                break
            handle.close()
        previous = _read_holder(handle)
        if previous:
            warnings.warn(f"taking over the results folder {str(self.path.parent)!r} from a benchmark that is no "
                          f"longer running ({describe_holder(previous)}); its finished runs are kept, the rest rerun",
                          StaleLockWarning, stacklevel=2)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": _command()}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()  # no holder; the OS releases the flock when the file closes
            handle.flush()
        finally:
            handle.close()


def _read_holder(handle: Any) -> dict:
    handle.seek(0)
    text = handle.read()
    try:
        holder = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        holder = {"unreadable": text[:200]}
    return holder if isinstance(holder, dict) else {"unreadable": text[:200]}


def _same_file(handle: Any, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _command() -> str:
    import sys

    return " ".join(sys.argv)[:300]


def describe_holder(holder: dict) -> str:
    """'PID 123 on host h, started 2026-…, command …' (what a lock file records)."""
    if not holder:
        return "a process that has not written its details yet"
    if "unreadable" in holder:
        return f"unreadable lock details {holder['unreadable']!r}"
    parts = [f"PID {holder.get('pid')} on host {holder.get('host')}", f"started {holder.get('started')}"]
    if holder.get("command"):
        parts.append(f"command {holder['command']!r}")
    return ", ".join(parts)


class ResultsStore:
    """Writes one benchmark's folder; keeps what it has read so refreshing results stays cheap."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._cache: dict[str, tuple[dict, pd.DataFrame, pd.DataFrame]] = {}

    def run_dir(self, run_id: str) -> Path:
        return self.out / "runs" / run_id

    def is_done(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / RUN_FILE).exists()

    def write_header(self, spec_yaml: str, bench: dict) -> None:
        atomic_write_text(self.out / SPEC_FILE, spec_yaml)
        atomic_write_text(self.out / BENCH_FILE, json.dumps(to_json(bench), indent=2))

    def write_run(self, run_id: str, tables: dict[str, bytes], record: dict) -> Path:
        """Parquet tables first, ``run.json`` last (its presence is what "finished" means)."""
        folder = self.run_dir(run_id)
        for name, data in tables.items():
            atomic_write_bytes(folder / f"{name}.parquet", data)
        (folder / ERROR_FILE).unlink(missing_ok=True)
        atomic_write_text(folder / RUN_FILE, json.dumps(to_json({**record, "status": "done"}), indent=2))
        return folder

    def write_error(self, run_id: str, record: dict) -> Path:
        return atomic_write_text(self.run_dir(run_id) / ERROR_FILE,
                                 json.dumps(to_json({**record, "status": "failed"}), indent=2))

    def refresh_results(self) -> Results:
        """Re-read finished runs, re-select, and rewrite ``results.parquet`` atomically."""
        results = load_results(self.out, _cache=self._cache)
        table = results.summaries if not results.summaries.empty else pd.DataFrame(columns=list(RESULT_COLUMNS))
        atomic_write_bytes(self.out / RESULTS_FILE, frame_to_parquet(table))
        return results


def read_bench(out: str | Path) -> dict:
    path = Path(out) / BENCH_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_results(out: str | Path, *, rule: str | None = None, max_gap: float | None = None, _cache: dict | None = None) -> Results:
    """The finished runs under ``out`` as DataFrames, with the hyper-parameter choice marked.

    ``rule``/``max_gap`` default to the benchmark's recorded selection rule. Only runs the
    current spec plans are included (a run left over from an edited spec stays on disk, unused).
    """
    out = Path(out)
    if not (out / "runs").is_dir() and not (out / BENCH_FILE).exists():
        raise FileNotFoundError(f"{str(out)!r} holds no benchmark results (no runs/ folder); run `medequity bench run` first")
    bench = read_bench(out)
    selection = {"rule": rule or bench.get("selection", {}).get("rule", "worst_group"),
                 "max_gap": max_gap if max_gap is not None else bench.get("selection", {}).get("max_gap")}
    planned = set(bench["run_ids"]) if "run_ids" in bench else None
    cache = _cache if _cache is not None else {}

    rows, metric_frames, summary_frames, failures = [], [], [], []
    folders = sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []
    for folder in folders:
        run_id = folder.name
        if planned is not None and run_id not in planned:
            continue
        if not (folder / RUN_FILE).exists():
            if (folder / ERROR_FILE).exists():
                error = json.loads((folder / ERROR_FILE).read_text(encoding="utf-8"))
                failures.append({"run_id": run_id, **error.get("labels", {}), "error": error.get("error", "")})
            continue
        if run_id not in cache:
            record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
            cache[run_id] = (record, pd.read_parquet(folder / "metrics.parquet"), pd.read_parquet(folder / "summaries.parquet"))
        record, metrics, summaries = cache[run_id]
        rows.append(run_row(record))
        metric_frames.append(metrics.assign(run_id=run_id))
        summary_frames.append(summaries.assign(run_id=run_id))

    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS)) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
    task = bench.get("task") or (str(runs.task.iloc[0]) if rows else "classification")
    head = headline(task)
    runs["selected"] = (mark_selected(runs, selection["rule"], max_gap=selection["max_gap"], score=head.score,
                                      group_scores=head.group_scores) if rows else pd.Series(dtype=bool))
    runs["selection_rule"] = selection["rule"]
    identifiers = runs[list(RESULT_COLUMNS)]
    metrics = _with_identifiers(metric_frames, identifiers)
    summaries = _with_identifiers(summary_frames, identifiers)
    failed = pd.DataFrame(failures, columns=["run_id", *SELECTION_GROUP, "hparams", "error"])
    return Results(runs, metrics, summaries, failed, selection, list(bench.get("warnings", [])), task)


RUN_COLUMNS = (*IDENTIFIERS, "seconds", "best_epoch", "val_auc", "val_worst_group_auc", "val_es_auc", "val_group_aucs",
               "probe_auc", "threshold", "created", "task", "val_dice", "val_worst_group_dice", "val_es_dice",
               "val_group_dices")


def run_row(record: dict) -> dict:
    labels, validation = record["labels"], record.get("validation", {})
    return {
        "run_id": record["run_id"], **{k: labels[k] for k in (*SELECTION_GROUP, "hparams")},
        "seconds": record.get("seconds"), "best_epoch": record.get("best_epoch"),
        "val_auc": _float(validation.get("val_auc")), "val_worst_group_auc": _float(validation.get("val_worst_group_auc")),
        "val_es_auc": _float(validation.get("val_es_auc")),
        "val_group_aucs": json.dumps(validation.get("val_auc_group", {}), sort_keys=True),
        "probe_auc": json.dumps(record.get("representation", {}).get("probe_auc", {}), sort_keys=True),
        "threshold": _float(record.get("threshold", {}).get("value")), "created": record.get("created"),
        "task": record.get("spec", {}).get("task", "classification"),
        "val_dice": _float(validation.get("val_dice")), "val_worst_group_dice": _float(validation.get("val_worst_group_dice")),
        "val_es_dice": _float(validation.get("val_es_dice")),
        "val_group_dices": json.dumps(validation.get("val_dice_group", {}), sort_keys=True),
    }


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _with_identifiers(frames: list[pd.DataFrame], identifiers: pd.DataFrame) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    table = pd.concat(frames, ignore_index=True).merge(identifiers, on="run_id", how="left", validate="many_to_one")
    ordered = [*RESULT_COLUMNS, *[c for c in table.columns if c not in RESULT_COLUMNS]]
    return table[ordered]


# --- the leaderboard --------------------------------------------------------------------------------
LEADERBOARD_KEYS = ("dataset", "usage", "train_attribute")


def leaderboard(results: Results) -> pd.DataFrame:
    """Selected runs, one row per (dataset, usage, attribute, model, method), best worst group first.

    On the training attribute, averaged over seeds, the task's headline metric (:data:`HEADLINES`):
    classification: test AUC, worst-group AUC, AUC gap with its CI and ES-AUC (FairMedFM, std
    form) — columns ``auc``, ``worst_group_auc``, ``auc_gap``, ``gap_ci_low``, ``gap_ci_high``,
    ``es_auc``; segmentation (each prompt type is its own usage, ``seg_zs:bbox``): test Dice,
    worst-group Dice, Dice gap with its CI and ES-Dice (FairSeg, Dice / (1 + Σ_g |Dice − Dice_g|))
    — ``dice``, ``worst_group_dice``, ``dice_gap``, ``gap_ci_*``, ``es_dice``. With one seed the
    gap CI is the run's bootstrap interval; with several it is a t-interval over seeds, clipped at 0
    (gaps are ≥ 0) — two different intervals, which every table labels.
    """
    head = headline(results.task)
    overall_name, worst_name, gap_name, es_name = head.columns
    columns = [*LEADERBOARD_KEYS, "model", "method", "n_seeds", overall_name, worst_name, gap_name, "gap_ci_low",
               "gap_ci_high", es_name]
    if results.runs.empty:
        return pd.DataFrame(columns=columns)
    summaries = results.summaries
    summaries = summaries[summaries.selected & (summaries.attribute == summaries.train_attribute)
                          & (summaries.metric == head.metric)]
    metrics = results.metrics
    overall = metrics[metrics.selected & (metrics.attribute == metrics.train_attribute) & (metrics.metric == head.metric)
                      & (metrics.group == "overall")]
    per_run = (summaries.pivot_table(index="run_id", columns="summary", values="value", aggfunc="first")
               .reindex(columns=["worst", "gap", head.es_summary]))
    gap_ci = summaries[summaries.summary == "gap"].set_index("run_id")[["ci_low", "ci_high"]]
    per_run = per_run.join(gap_ci).join(overall.set_index("run_id")["value"].rename("overall"))
    selected = results.runs[results.runs.selected].set_index("run_id")
    per_run = selected[[*LEADERBOARD_KEYS, "model", "method", "seed"]].join(per_run)

    rows = []
    for key, group in per_run.groupby([*LEADERBOARD_KEYS, "model", "method"], sort=False):
        n = len(group)
        gap = group["gap"].to_numpy(dtype=np.float64)
        if n == 1:
            low, high = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0])
        else:
            from scipy import stats

            half = stats.t.ppf(0.975, n - 1) * np.nanstd(gap, ddof=1) / math.sqrt(n)
            # a gap (max − min) is ≥ 0; a t-interval does not know that, so it is clipped at 0
            low, high = max(float(np.nanmean(gap) - half), 0.0), float(np.nanmean(gap) + half)
        rows.append({**dict(zip([*LEADERBOARD_KEYS, "model", "method"], key)), "n_seeds": n,
                     overall_name: group["overall"].mean(), worst_name: group["worst"].mean(),
                     gap_name: float(np.nanmean(gap)), "gap_ci_low": low, "gap_ci_high": high,
                     es_name: group[head.es_summary].mean()})
    board = pd.DataFrame(rows, columns=columns)
    # ties (e.g. ERM and a post-processor of it with the same AUCs) are ordered by model and method,
    # not by which run finished first
    return board.sort_values([*LEADERBOARD_KEYS, worst_name, "model", "method"],
                             ascending=[True, True, True, False, True, True], kind="stable", ignore_index=True)
