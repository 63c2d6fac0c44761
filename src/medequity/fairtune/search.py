"""FairTune: bi-level search of a PEFT mask ω and learning rate α for validation fairness.

FairTune §3.3 (Algorithm 1, eq. 2): the inner loop fine-tunes the pre-trained model with mask ω
(the ``mask`` usage) and learning rate α; the outer loop proposes (ω, α) with Optuna's TPE sampler
(seeded) and stops unpromising inner loops with successive halving (reduction factor 4,
``min_resource="auto"``, App. A.5). Differences from the public FairTune code, on purpose:

- the objective is reported to the pruner after *every* epoch (``trial.report`` from the trainer's
  progress callback), so pruning saves compute — the public code reported once, after the last
  epoch, so its pruner only relabelled finished trials;
- the objective is computed on the *whole* validation set (the trainer's ``validation_summary`` or
  :func:`~medequity.metrics.group_metrics`), never averaged over mini-batch AUCs;
- the searched learning rate is carried into the final training on all training data.

Large training sets are subsampled for the search (10%, keeping the sensitive-attribute × label
ratios — App. A.5 "Scalability to Large Datasets"); the best (ω, α) is then retrained on all
training data through :func:`~medequity.experiment.run_experiment` and evaluated on test.

Studies live in any Optuna storage (``sqlite:///fairtune.db`` or another database URL) with
``load_if_exists``: several processes may search one study, and a stopped search continues — the
number of trials asked for is the study's total, finished trials are never rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from medequity.experiment import ExperimentSpec, RunResult, prepare, run_experiment, train_config, train_model
from medequity.fairtune.space import LR_RANGE, SearchSpace, search_space
from medequity.metrics.summary import group_auc_summary
from medequity.training.callbacks import Callback, EpochInfo, OptunaPruning
from medequity.training.trainer import TrainConfig, Trainer

# Trainer progress keys (whole-validation-set values) and the checkpoint-selection rule that keeps
# the epoch where that objective is best — so a trial's value is that of the model it would keep.
TRAINER_OBJECTIVES = {
    "val_worst_group_auc": ("worst_group_auc", "maximize"),
    "val_auc": ("auc", "maximize"),
    "val_es_auc": ("es_auc", "maximize"),
    "val_neg_loss": ("neg_loss", "maximize"),
    "val_bce": ("neg_loss", "minimize"),
}
_ALIASES = {"worst_group_auc": "val_worst_group_auc", "min_auc": "val_worst_group_auc", "auc": "val_auc",
            "es_auc": "val_es_auc", "neg_loss": "val_neg_loss", "bce": "val_bce"}
_LOWER_IS_BETTER_SUMMARIES = ("gap", "gap_to_overall", "skewness", "mean_psd", "max_psd")
LARGE_TRAIN_SIZE = 10_000  # ours: above this many training samples "auto" subsamples (the paper: CheXpert, ~220k)
BASELINES = {"ft": "Full FT", "lp": "Linear readout", "attn": "Attention tuning", "ln": "LayerNorm tuning"}


# -- objective ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """A validation objective by name.

    ``val_worst_group_auc`` (default; FairTune's min-group AUC, eq. 1), ``val_auc`` (the Table 2
    ablation), ``val_es_auc``, ``val_neg_loss``/``val_bce``: read from the trainer's per-epoch
    whole-set summary. ``metric:summary`` (e.g. ``auc:gap``, ``tpr:gap``, ``auc:es_mean_abs_dev``,
    ``bce:worst``): any METRICS.md metric and gap summary, computed by ``group_metrics`` on the
    whole validation set's scores (threshold ``best_f1`` on validation for hard-prediction metrics).
    """

    name: str
    direction: str

    @classmethod
    def parse(cls, name: str, direction: str | None = None) -> Objective:
        name = _ALIASES.get(name, name)
        if name in TRAINER_OBJECTIVES:
            default = TRAINER_OBJECTIVES[name][1]
        elif ":" in name:
            from medequity.metrics.weighted import get_metric

            metric, summary = name.split(":", 1)
            higher = get_metric(metric).higher_is_better  # raises for unknown metrics
            if summary in _LOWER_IS_BETTER_SUMMARIES:
                default = "minimize"
            elif summary == "worst":
                default = "maximize" if higher else "minimize"
            else:
                default = "maximize"
        else:
            raise ValueError(f"unknown objective {name!r}; use one of {sorted(TRAINER_OBJECTIVES)} or 'metric:summary' "
                             "(e.g. 'auc:gap', 'auc:worst', 'tpr:gap')")
        direction = direction or default
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize'; got {direction!r}")
        return cls(name, direction)

    @property
    def selection(self) -> str | None:
        """The trainer's checkpoint rule matching this objective (None: keep the spec's rule)."""
        return TRAINER_OBJECTIVES[self.name][0] if self.name in TRAINER_OBJECTIVES else None

    def value(self, row: dict, val_scores: np.ndarray, val) -> float:
        """The objective for one epoch: ``row`` is the trainer's progress dict, ``val_scores`` the
        model's scores on the whole validation split ``val`` (a SplitData)."""
        if self.name in TRAINER_OBJECTIVES:
            return float(row["val_bce"] if self.name == "val_bce" else row[self.name])
        return whole_set_metric(self.name, val.labels, val_scores, val.groups, val.group_names)

    def better(self, a: float, b: float) -> bool:
        if not np.isfinite(b):
            return bool(np.isfinite(a))
        return a > b if self.direction == "maximize" else a < b


def whole_set_metric(name: str, labels, scores, groups, group_names: Sequence[str]) -> float:
    """``metric:summary`` of ``group_metrics`` on a whole split (no bootstrap)."""
    from medequity.metrics import group_metrics

    metric, summary = name.split(":", 1)
    names = np.array([group_names[g] if g >= 0 else None for g in groups], dtype=object)
    result = group_metrics(labels, scores, sensitive_features=pd.Series(names, name="group"), metrics=[metric],
                           n_boot=0, n_permutations=0)
    return float(result.summary(metric, summary))


# -- search settings -------------------------------------------------------------------------------
@dataclass
class FairTuneConfig:
    """Outer-loop settings (FairTune App. A.5). The inner loop's training settings come from the
    experiment spec's ``train`` dict (epochs, batch size, scheduler…); its LR is searched."""

    space: str = "full"  # full (36 bits for ViT-B) | attn | ln (12 bits) | groups
    trials: int = 40  # total finished (complete + pruned) trials in the study; the paper used 40–100
    objective: str = "val_worst_group_auc"
    direction: str | None = None  # default from the objective
    lr_range: tuple[float, float] = LR_RANGE
    subsample: float | str | None = "auto"  # fraction of train for the search; "auto": 0.1 if large, else all
    seed: int = 0  # TPE sampler seed; not part of the study's identity, so workers of one study differ here
    storage: str | None = None  # Optuna storage URL (sqlite:///x.db); None = in memory
    study_name: str | None = None  # default: derived from the spec and these settings
    reduction_factor: int = 4
    min_resource: int | str = "auto"
    others: bool = False  # train parameters outside every group too (see the ``mask`` usage)

    def key(self) -> dict[str, Any]:
        """The settings that define a study (trial count, storage and sampler seed excluded)."""
        data = asdict(self)
        for name in ("trials", "storage", "study_name", "seed"):
            data.pop(name)
        data["lr_range"] = list(self.lr_range)
        return data


def subsample_fraction(n_train: int, subsample: float | str | None) -> float | None:
    if subsample == "auto":
        return 0.1 if n_train >= LARGE_TRAIN_SIZE else None
    if subsample is None or float(subsample) >= 1:
        return None
    if not 0 < float(subsample) < 1:
        raise ValueError(f"subsample must be in (0, 1], 'auto' or None; got {subsample!r}")
    return float(subsample)


def balanced_subsample(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Rows of a random ``fraction`` that keeps the sensitive-attribute × label ratios (App. A.5:
    "we ensured maintaining the ratios of sensitive attributes"); each non-empty cell keeps at
    least 2 rows so every group keeps both classes where it had them (its AUC stays defined)."""
    rng = np.random.default_rng(seed)
    rows = []
    cells = pd.DataFrame({"g": groups, "y": labels}).groupby(["g", "y"]).indices
    for _, index in sorted(cells.items()):
        k = min(len(index), max(2, int(round(fraction * len(index)))))
        rows.append(rng.choice(index, size=k, replace=False))
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


# -- one inner loop ----------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One finished inner loop: the objective of the kept checkpoint and per-epoch values."""

    value: float
    values: list[float]
    epochs_run: int
    model: Any
    method: Any
    fit: Any
    trainable_fraction: float


class ObjectivePerEpoch(Callback):
    """The search objective after every epoch, from the trainer's row and whole-validation scores."""

    def __init__(self, objective: Objective, val, on_epoch: Callable[[dict, float], None] | None = None,
                 trial: optuna.Trial | None = None):
        self.objective, self.val, self.on_epoch, self.trial = objective, val, on_epoch, trial
        self.values: list[float] = []
        self.trainable_fraction = math.nan

    def on_fit_start(self, trainer, model, method, train, val, config, stage) -> None:
        from medequity.usages.peft_usages import trainable_summary

        self.trainable_fraction = trainable_summary(model)["fraction"]
        if self.trial is not None:
            self.trial.set_user_attr("trainable_fraction", self.trainable_fraction)

    def on_epoch_end(self, info: EpochInfo) -> None:
        value = self.objective.value(info.row, info.val_scores, self.val)
        self.values.append(value)
        if self.on_epoch is not None:
            self.on_epoch(info.row, value)


class SearchSetup:
    """Data and settings shared by all trials: the experiment is prepared once
    (:func:`medequity.experiment.prepare`: same dataset split, views and seeded backbone as the
    final ``run_experiment``), each trial trains a fresh model through
    :func:`medequity.experiment.train_model` on ``train`` (possibly subsampled), judged on the whole ``val``.
    """

    def __init__(self, spec: ExperimentSpec, objective: Objective, *, subsample: float | str | None = "auto", seed: int = 0,
                 splits: Sequence[str] = ("train", "val")):
        self.spec, self.objective = spec, objective
        self.prepared = prepare(spec, splits=list(dict.fromkeys(("train", "val", *splits))))
        self.data = dict(self.prepared.data)
        self.group_names = self.prepared.group_names
        self.n_train_full = len(self.data["train"])
        self.fraction = subsample_fraction(self.n_train_full, subsample)
        if self.fraction is not None:
            rows = balanced_subsample(self.data["train"].groups, self.data["train"].labels, self.fraction, seed)
            self.data["train"] = self.data["train"].subset(rows)
        backbone = self.prepared.backbone
        self.groups = tuple(backbone.module_groups()) if backbone.module_groups is not None else ()

    def space(self, kind: str, lr_range=LR_RANGE) -> SearchSpace:
        return search_space(kind, self.prepared.backbone, lr_range)

    def config(self, lr: float) -> TrainConfig:
        changes = {"seed": self.spec.seed, **self.spec.train, "lr": float(lr)}
        if self.objective.selection is not None:
            changes["selection"] = self.objective.selection
        return TrainConfig(**changes)

    def train(self, usage: str, usage_params: dict, lr: float, *, trial: optuna.Trial | None = None,
              on_epoch: Callable[[dict, float], None] | None = None) -> Candidate:
        """Fine-tune one candidate; report the objective after every epoch and prune if told to.

        Pruning raises :class:`optuna.TrialPruned` from the trainer's callback: the exception
        leaves ``Trainer.fit`` at once (no further epochs) and Optuna records the trial as pruned
        with its reported values.
        """
        per_epoch = ObjectivePerEpoch(self.objective, self.data["val"], on_epoch, trial)
        callbacks: list[Callback] = [per_epoch]
        if trial is not None:
            # which process ran it, when several search one study (shared --storage); also tells a
            # later search whether a RUNNING trial's process is gone
            trial.set_user_attr("worker", _worker())
            callbacks.append(OptunaPruning(trial, lambda info: per_epoch.values[-1]))
        prepared = self.prepared.with_spec(usage=usage, usage_params=dict(usage_params)).with_data(**self.data)
        # A fresh backbone after re-seeding: the same initial weights as run_experiment's final training.
        trained = train_model(prepared, trainer=Trainer(callbacks=callbacks), config=self.config(lr))
        values = per_epoch.values
        fit = trained.fit
        # The value of the checkpoint the trainer kept (its selection rule matches the objective).
        value = values[fit.best_epoch] if 0 <= fit.best_epoch < len(values) else math.nan
        return Candidate(float(value), values, len(values), trained.model, trained.method, fit, per_epoch.trainable_fraction)


# -- the study ---------------------------------------------------------------------------------------
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def study_name_for(spec: ExperimentSpec, config: FairTuneConfig, kind: str = "mask") -> str:
    """A readable name plus a hash of everything that defines the study (so different searches
    sharing one database never mix)."""
    key = json.dumps(study_settings(spec, config, kind), sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"fairtune-{kind}-{spec.dataset}-{spec.attribute}-{spec.model}-{config.space}-{digest}"


HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 180  # a trial silent for 3 minutes belongs to a process that is gone


def _storage(url: str | None):
    """Optuna storage for ``url``. Database storages record a heartbeat of every running trial, so
    a trial whose process was killed is marked FAILED (by the next worker to start a trial) instead
    of staying RUNNING forever; SQLite gets a long lock timeout so several worker processes can
    write one file (each waits for the others' short transactions instead of failing)."""
    if url is None or "://" not in url:
        return url
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with _sqlite_creation_lock(url):
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS)


@contextlib.contextmanager
def _sqlite_creation_lock(url: str) -> Iterator[None]:
    """Two workers opening a new SQLite file at the same moment both create Optuna's schema and
    one fails (``UNIQUE constraint failed: alembic_version``): opening is serialised by a blocking
    ``flock`` on ``<file>.lock`` beside the database (released by the OS if its holder dies)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        yield
        return
    import fcntl

    lock_path = Path(url[len(prefix):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StudyMismatch(ValueError):
    """The storage holds a study of other settings, and nothing said to start a new one."""


STUDY_MODES = ("auto", "resume", "new")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def settings_difference(before: dict, after: dict, limit: int = 8) -> str:
    """``"train.epochs: 30 → 5; dataset_options.n: (none) → 600"``: what differs between two
    studies' settings (``FairTuneConfig.key`` and the spec), for an error message."""
    old, new = _flatten(before), _flatten(after)
    changes = [f"{key}: {old.get(key, '(none)')!r} → {new.get(key, '(none)')!r}"
               for key in sorted(set(old) | set(new)) if old.get(key, "(none)") != new.get(key, "(none)")]
    more = f"; and {len(changes) - limit} more" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more if changes else "no difference in the recorded settings"


def _check_study_settings(name: str, config: FairTuneConfig, settings: dict | None, mode: str) -> None:
    """A search must not silently start a second study in a storage that holds one of other
    settings (the settings are part of the study's name, so a changed option gives a new name):
    refuse unless ``mode == "new"``; with ``mode == "resume"`` the study must exist."""
    if config.storage is None or "://" not in config.storage:
        return
    summaries = optuna.study.get_all_study_summaries(_storage(config.storage), include_best_trial=False)
    existing = {summary.study_name: summary for summary in summaries}
    if name in existing:
        recorded = existing[name].user_attrs.get("settings")
        if settings is not None and recorded is not None and json.loads(json.dumps(settings, default=str)) != recorded:
            raise StudyMismatch(f"study {name!r} in {config.storage} was made with other settings "
                                f"({settings_difference(recorded, settings)}); rerun with its settings to resume it, "
                                "or give another --study-name")
        return
    if mode == "resume":
        known = ", ".join(sorted(existing)) or "none"
        raise StudyMismatch(f"--resume: {config.storage} holds no study {name!r} (studies there: {known}); "
                            "rerun with the settings of the study to resume, or drop --resume to start one")
    if config.study_name:
        return  # a name of the user's own choosing: a new name is a new study on purpose
    prefix = name.split("-")[:2]  # ["fairtune", "mask"]: studies of the same kind
    others = [s for s in summaries if s.study_name.split("-")[:2] == prefix]
    if mode == "auto" and others:
        latest = max(others, key=lambda s: s.datetime_start or 0)
        recorded = latest.user_attrs.get("settings")
        what = settings_difference(recorded, settings) if recorded is not None and settings is not None else "unrecorded"
        raise StudyMismatch(
            f"{config.storage} already holds the study {latest.study_name!r} ({latest.n_trials} trials), made with other "
            f"settings: {what}. Rerun with its settings to resume it, pass --new-study to start a second study in the "
            "same storage (the first is kept), or give another --storage")


def open_study(name: str, config: FairTuneConfig, direction: str, *, settings: dict | None = None,
               mode: str = "new", notice: Callable[[str], None] | None = None) -> optuna.Study:
    """Create or load the study: TPE (seeded) + successive halving (App. A.5).

    ``mode``: ``"new"`` creates the study or loads it when it exists; ``"auto"`` also refuses to
    create it beside a study of the same kind with other ``settings`` (:class:`StudyMismatch`,
    naming the differences); ``"resume"`` requires it to exist. ``settings`` are recorded on the
    study. RUNNING trials left by a killed process are marked FAILED (``notice`` hears which).
    """
    if mode not in STUDY_MODES:
        raise ValueError(f"mode must be one of {STUDY_MODES}; got {mode!r}")
    _check_study_settings(name, config, settings, mode)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=config.min_resource, reduction_factor=config.reduction_factor,
                                                    min_early_stopping_rate=0, bootstrap_count=0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress bar and tables say what happens
    for attempt in range(5):
        try:
            study = optuna.create_study(study_name=name, storage=_storage(config.storage), direction=direction, pruner=pruner,
                                        sampler=optuna.samplers.TPESampler(seed=config.seed), load_if_exists=True)
            break
        except Exception as error:  # noqa: BLE001 - sqlalchemy's errors; Optuna does not wrap them
            # Workers started together race to create a new storage's tables or the study itself;
            # the loser finds them made a moment later and loads them.
            if attempt == 4 or type(error).__name__ not in ("IntegrityError", "OperationalError", "DuplicatedStudyError"):
                raise
            time.sleep(0.5 * (attempt + 1))
    if settings is not None and "settings" not in study.user_attrs:
        study.set_user_attr("settings", json.loads(json.dumps(settings, default=str)))
    stale = fail_stale_trials(study)
    if stale and notice is not None:
        notice(f"marked {len(stale)} trial(s) left RUNNING by a process that is gone FAILED: "
               + "; ".join(stale) + " (failed trials do not count towards --trials: the search runs others)")
    # Offset the seed by the trials already there: a resumed search must not redraw the first
    # trials' random start-up samples. (Parallel workers should pass different seeds.)
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))
    return study


def _process_gone(worker: str) -> bool:
    """``worker`` ("host:pid", recorded by each trial) names a process of this host that no longer runs."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's trial: its heartbeat tells (Optuna's fail_stale_trials)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


def fail_stale_trials(study: optuna.Study) -> list[str]:
    """Mark FAILED the RUNNING trials whose process is gone: on this host, a dead PID; anywhere, a
    heartbeat older than the grace period (database storages). Returns one description per trial."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    stale = []
    for trial in running:
        worker = str(trial.user_attrs.get("worker", ""))
        if worker and _process_gone(worker):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            started = trial.datetime_start.strftime("%Y-%m-%d %H:%M") if trial.datetime_start else "?"
            stale.append(f"trial {trial.number} (process {worker}, started {started})")
    # Trials of other hosts (or without a recorded worker): Optuna's heartbeat check, a no-op on
    # storages without heartbeats (in memory).
    unresolved = {t.number for t in running} - {int(d.split()[1]) for d in stale}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since Optuna 2.9
        optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    stale += [f"trial {number} (no heartbeat for {GRACE_SECONDS} s)" for number in sorted(unresolved & failed)]
    return stale


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


TrialProgress = Callable[[int, int, str], None]  # (finished trials, trials in all, what is happening)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _epoch_reporter(study: optuna.Study, trial: optuna.Trial, total: int, epochs: int, label: str, objective: Objective,
                    progress: TrialProgress | None, notice: Callable[[str], None] | None,
                    announced: list[int]) -> Callable[[dict, float], None]:
    """``on_epoch`` for one trial: progress after every epoch (a trial can take minutes, so per-trial
    progress alone would leave a log silent for that long) and, after the search's first epoch, the
    time the search may take (a trial is at most ``epochs`` such epochs; pruning stops most earlier),
    once per search (``announced`` remembers it)."""
    started = time.perf_counter()

    def on_epoch(row: dict, value: float) -> None:
        epoch = int(row["epoch"]) + 1
        if progress is not None:
            progress(n_finished(study), total, f"{label}: trial {trial.number} epoch {epoch}/{epochs}, "
                                               f"{objective.name} {value:.4f}")
        if notice is not None and epoch == 1 and not announced:
            announced.append(trial.number)
            seconds = time.perf_counter() - started
            remaining = max(total - n_finished(study), 1)
            notice(f"the first epoch took {seconds:.0f} s: a trial of {epochs} epochs takes up to ~{_duration(seconds * epochs)}, "
                   f"{remaining} trial(s) up to ~{_duration(seconds * epochs * remaining)} (successive halving stops "
                   "unpromising trials early, so usually much less); lower --epochs or --trials to shorten it")

    return on_epoch


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _optimize(study: optuna.Study, objective_fn, total: int, *, progress: TrialProgress | None, label: str) -> None:
    """Run trials until the study holds ``total`` finished ones (also across concurrent workers);
    ``progress`` hears after every trial (the command line draws a bar from it)."""
    remaining = total - n_finished(study)
    if remaining <= 0:
        return
    callbacks: list[Callable] = [optuna.study.MaxTrialsCallback(total, states=FINISHED)]
    if progress is not None:
        progress(n_finished(study), total, label)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = ""
            try:
                best = f"best {study.best_value:.4f}"
            except ValueError:
                pass
            epochs = trial.user_attrs.get("epochs_run", "?")
            progress(n_finished(study), total, f"{label}: trial {trial.number} {trial.state.name.lower()} after {epochs} ep. {best}")

        callbacks.append(after_trial)
    study.optimize(objective_fn, n_trials=remaining, callbacks=callbacks)


# -- results -----------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The outer loop's outcome: best mask ω*, its LR α*, and the whole study."""

    study: optuna.Study
    space: SearchSpace
    objective: Objective
    spec: ExperimentSpec
    config: FairTuneConfig
    best_mask: dict[str, int]
    best_lr: float
    best_value: float
    n_train_search: int
    n_train_full: int
    seconds: float = 0.0

    @property
    def mask_bits(self) -> str:
        """The searched bits in group order, as a string (e.g. '101…')."""
        return "".join(str(self.best_mask[g]) for g in self.space.searched)

    @property
    def history(self) -> pd.DataFrame:
        """One row per trial: number, state, value, epochs run, LR, mask bits, trainable fraction."""
        return study_history(self.study, self.space)

    def final_spec(self) -> ExperimentSpec:
        """The experiment that retrains ω* with α* on all training data (FairTune §4.1)."""
        return replace(self.spec, usage="mask", usage_params={"mask": dict(self.best_mask), "others": self.config.others},
                       train={**self.spec.train, "lr": self.best_lr})

    def to_dict(self) -> dict[str, Any]:
        return {"best_mask": self.best_mask, "mask_bits": self.mask_bits, "best_lr": self.best_lr,
                "best_value": self.best_value, "objective": self.objective.name, "direction": self.objective.direction,
                "space": self.space.name, "searched_groups": list(self.space.searched), "study_name": self.study.study_name,
                "n_trials": len(self.study.trials), "n_train_search": self.n_train_search, "n_train_full": self.n_train_full,
                "config": {**asdict(self.config), "lr_range": list(self.config.lr_range)}, "spec": self.spec.to_dict()}


def study_history(study: optuna.Study, space: SearchSpace | None = None) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        intermediate = t.intermediate_values
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "last_reported": intermediate[max(intermediate)] if intermediate else np.nan,
               "epochs_run": t.user_attrs.get("epochs_run", np.nan), "lr": t.params.get("lr", np.nan),
               "trainable_fraction": t.user_attrs.get("trainable_fraction", np.nan),
               "seconds": t.duration.total_seconds() if t.duration is not None else np.nan}
        if space is not None:
            row["mask"] = "".join(str(int(t.params[g])) if g in t.params else "?" for g in space.searched)
        rows.append(row)
    return pd.DataFrame(rows)


def _as_spec(spec: ExperimentSpec | dict) -> ExperimentSpec:
    return spec if isinstance(spec, ExperimentSpec) else ExperimentSpec.from_dict(spec)


def study_settings(spec: ExperimentSpec, config: FairTuneConfig, kind: str = "mask") -> dict[str, Any]:
    """What defines a study (hashed into its default name, recorded on it): the experiment spec and
    the search settings, without the trial count, storage, name and sampler seed."""
    return {"spec": spec.to_dict(), "config": config.key(), "kind": kind}


def search(spec: ExperimentSpec | dict, config: FairTuneConfig | None = None, *, setup: SearchSetup | None = None,
           progress: TrialProgress | None = None, mode: str = "auto", notice: Callable[[str], None] | None = None) -> SearchResult:
    """FairTune's outer loop (Algorithm 1): search (ω, α) on validation ``config.objective``.

    ``mode`` (see :func:`open_study`): ``"auto"`` resumes the study of these settings and refuses to
    start one beside a study of other settings in the same storage; ``"new"`` starts it anyway;
    ``"resume"`` requires it. ``progress`` hears after every epoch of every trial, ``notice`` gets
    one-off messages (resumed trials, stale trials failed, the expected duration).
    """
    start = time.perf_counter()
    spec, config = _as_spec(spec), config or FairTuneConfig()
    objective = Objective.parse(config.objective, config.direction)
    settings = study_settings(spec, config)
    name = config.study_name or study_name_for(spec, config)
    if mode not in STUDY_MODES:
        raise ValueError(f"mode must be one of {STUDY_MODES}; got {mode!r}")
    _check_study_settings(name, config, settings, mode)  # before the data are prepared: a mistake fails at once
    setup = setup or SearchSetup(spec, objective, subsample=config.subsample, seed=spec.seed)
    space = setup.space(config.space, config.lr_range)
    study = open_study(name, config, objective.direction, settings=settings, mode=mode, notice=notice)
    study.set_user_attr("searched_groups", list(space.searched))
    study.set_user_attr("objective", objective.name)
    if notice is not None and n_finished(study):
        notice(f"resuming study {name}: {n_finished(study)} of {config.trials} trials finished")
    label = f"FairTune {space.name} ({space.n_bits} bits)"
    epochs = int(spec.train.get("epochs", TrainConfig().epochs))
    announced: list[int] = []

    def objective_fn(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _worker())  # at once: a process killed later leaves a trial we can tell is stale
        mask, lr = space.suggest(trial)
        trial.set_user_attr("mask", "".join(str(mask[g]) for g in space.searched))
        on_epoch = _epoch_reporter(study, trial, config.trials, epochs, label, objective, progress, notice, announced)
        return setup.train("mask", {"mask": mask, "others": config.others}, lr, trial=trial, on_epoch=on_epoch).value

    _optimize(study, objective_fn, config.trials, progress=progress, label=label)
    best = study.best_trial
    mask, lr = space.from_params(best.params)
    return SearchResult(study, space, objective, spec, config, mask, lr, float(best.value), len(setup.data["train"]),
                        setup.n_train_full, time.perf_counter() - start)


@dataclass
class FairTuneResult:
    search: SearchResult
    run: RunResult  # the retrained best mask, evaluated on test

    def test_row(self) -> dict[str, float]:
        return test_summary(self.run, self.search.spec.attribute)


def fairtune(spec: ExperimentSpec | dict, config: FairTuneConfig | None = None, *, trainer: Trainer | None = None) -> FairTuneResult:
    """Search, then retrain ω* with α* on all training data and evaluate on test."""
    result = search(spec, config)
    run = run_experiment(result.final_spec(), trainer=trainer)
    return FairTuneResult(result, run)


# -- baselines (Table 1) -----------------------------------------------------------------------------
def tune_lr(spec: ExperimentSpec, usage: str, config: FairTuneConfig, trials: int, *, setup: SearchSetup | None = None,
            usage_params: dict | None = None, progress: TrialProgress | None = None) -> tuple[float, optuna.Study]:
    """A baseline's LR searched on the same objective, sampler, pruner and subsample as FairTune
    (§4.1: "all competitors optimise their learning rates based on L_fair")."""
    objective = Objective.parse(config.objective, config.direction)
    setup = setup or SearchSetup(spec, objective, subsample=config.subsample, seed=spec.seed)
    name = (config.study_name + f"-lr-{usage}") if config.study_name else study_name_for(spec, config, kind=f"lr-{usage}")
    study = open_study(name, config, objective.direction, settings=study_settings(spec, config, kind=f"lr-{usage}"))
    low, high = config.lr_range

    def objective_fn(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", low, high, log=True)
        return setup.train(usage, usage_params or {}, lr, trial=trial).value

    _optimize(study, objective_fn, trials, progress=progress, label=f"LR search: {usage}")
    return float(study.best_params["lr"]), study


def test_summary(run: RunResult, attribute: str) -> dict[str, float]:
    """Table 1 columns from a run's test metrics: overall AUC, worst-group AUC, AUC gap, ES-AUC."""
    metrics, summaries = run.metrics, run.summaries
    auc = metrics[(metrics.attribute == attribute) & (metrics.metric == "auc")].set_index("group")["value"]
    s = summaries[(summaries.attribute == attribute) & (summaries.metric == "auc")].set_index("summary")["value"]
    return {"auc": float(auc["overall"]), "worst_group_auc": float(s["worst"]), "auc_gap": float(s["gap"]),
            "es_auc": float(s["es_std"]), "es_auc_mean_abs_dev": float(s["es_mean_abs_dev"])}


def compare_baselines(spec: ExperimentSpec | dict, result: FairTuneResult | SearchResult, *,
                      baselines: Sequence[str] = tuple(BASELINES), lr_trials: int | None = None,
                      trainer: Trainer | None = None, progress: TrialProgress | None = None) -> pd.DataFrame:
    """FairTune against full FT, linear readout, attention and LayerNorm tuning (Table 1) on test.

    Same budget: each baseline's LR is tuned with ``lr_trials`` trials (default: FairTune's trial
    count) on the same objective, sampler, pruner, subsample and epochs, then retrained on all
    training data. One row per method: overall AUC, worst-group AUC, AUC gap, ES-AUC, LR, the
    trainable fraction and the validation objective that chose the LR.
    """
    spec = _as_spec(spec)
    search_result = result.search if isinstance(result, FairTuneResult) else result
    run = result.run if isinstance(result, FairTuneResult) else run_experiment(search_result.final_spec(), trainer=trainer)
    config = search_result.config
    objective = search_result.objective
    setup = SearchSetup(spec, objective, subsample=config.subsample, seed=spec.seed)
    trials = config.trials if lr_trials is None else lr_trials
    rows = []
    for usage in baselines:
        lr, study = tune_lr(spec, usage, config, trials, setup=setup, progress=progress)
        baseline = run_experiment(replace(spec, usage=usage, usage_params={}, train={**spec.train, "lr": lr}), trainer=trainer)
        rows.append({"method": BASELINES.get(usage, usage), "usage": usage, "lr": lr, "val_objective": float(study.best_value),
                     "trainable_fraction": _trainable_fraction(baseline.model, spec if usage == "lp" else None),
                     **test_summary(baseline, spec.attribute)})
    rows.append({"method": "FairTune", "usage": "mask", "lr": search_result.best_lr, "val_objective": search_result.best_value,
                 "trainable_fraction": _trainable_fraction(run.model), **test_summary(run, spec.attribute)})
    table = pd.DataFrame(rows)
    table.attrs["objective"] = objective.name
    return table


def _trainable_fraction(model, lp_spec: ExperimentSpec | None = None) -> float:
    if lp_spec is not None:
        # Linear readout's model is the head on cached features: count the frozen encoder too.
        from medequity.models import create_backbone

        options = {k: v for k, v in lp_spec.model_options.items() if k != "checkpoint"}  # counting needs no weights
        encoder = create_backbone(lp_spec.model, **options).module
        head = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return float(head / (head + sum(p.numel() for p in encoder.parameters())))
    summary = getattr(model, "trainable_summary", None)
    if summary is None:
        from medequity.usages.peft_usages import trainable_summary

        summary = trainable_summary(model)
    return float(summary["fraction"])


def split_group_aucs(run: RunResult, split: str = "train") -> dict[str, float]:
    """Overall and per-group AUC of a trained run on one of its splits (FairTune Fig. 1: the
    training set is fitted for every group; the gap appears on unseen data)."""
    data = run.data[split]
    scores = Trainer().predict(run.model, run.method, data, train_config(run.spec))
    summary = group_auc_summary(data.labels, scores, data.groups, data.group_names, undefined="skip", warn=False)
    out = {"auc": summary["auc"], "worst_group_auc": summary["worst_group_auc"], "auc_gap": summary["auc_gap"]}
    out.update({f"auc[{name}]": summary[f"auc:{name}"] for name in data.group_names})
    return out


__all__ = [
    "BASELINES", "Candidate", "FairTuneConfig", "FairTuneResult", "Objective", "ObjectivePerEpoch", "SearchResult",
    "SearchSetup", "StudyMismatch", "balanced_subsample", "compare_baselines", "fail_stale_trials", "fairtune",
    "open_study", "search", "split_group_aucs", "study_history", "study_name_for", "study_settings", "test_summary",
    "tune_lr", "whole_set_metric",
]
