"""Benchmark specs: a YAML file (data, never code) that expands into one ExperimentSpec per run.

A spec names datasets × models × usages × methods × training attributes × seeds; a method (or a
usage) may carry a hyper-parameter ``grid`` whose list values expand into one run each. Every
name is checked against its registry before anything trains, and a bad key names itself and the
valid keys. MEDFAIR showed that tuning some methods more than others fakes gains, so unequal grid
sizes are reported as a warning that is saved with the results.

Example::

    name: tiny
    datasets:
      - name: synthetic
        options: {preset: cxr-sex-prevalence, n: 300}
    models: [small_cnn]
    usages:
      - {name: lp, train: {lr: 0.01}}   # a usage may override train settings
      - ft
    methods:
      - erm
      - name: groupdro
        grid: {step_size: [0.01, 0.1]}
    attributes: [sex]
    seeds: [0]
    train: {epochs: 1}
    evaluation: {threshold: best_f1, n_boot: 20}
    selection: worst_group          # or {rule: constrained, max_gap: 0.05}

Segmentation (``task: segmentation``) lists segmenters (checked against
:data:`medequity.models.SEGMENTERS`) as models and ``seg_*`` usages: ``seg_zs`` prompts a frozen
segmenter (FairMedFM SEG-ZS; nothing is trained, so its only method is the no-op ``erm``), and
``seg_decoder``, ``seg_lora`` (SAM-family segmenters) and ``seg_ft`` (MONAI networks, 2D or 3D)
train, with every method the registry marks as segmentation-capable (``Method.tasks``: erm,
resampling, groupdro, ind, fis, febs, fairdi_seg, seg_thresholds). The grid is the product of the
lists minus the pairs that cannot run — a training method on ``seg_zs``, ``seg_ft`` on a SAM-family
model, ``seg_decoder``/``seg_lora`` on a MONAI network — and a listed entry left with no cell is an
error naming why. Runs of one setting compete on validation Dice (worst group, Pareto, DTO, …;
:mod:`medequity.bench.selection`); there is no threshold to fit (logit > 0, or the argmax of the
C + 1 channels of a trained decoder). A usage's ``prompt`` (in ``params`` or ``grid``) is a reported
setting, not a hyper-parameter: each prompt type is its own usage label (``seg_zs:bbox``) with its
own leaderboard, instead of prompt types competing in validation selection::

    name: seg
    task: segmentation
    datasets:
      - name: synthetic-segmentation
        options: {preset: seg-derm-contrast, n: 60, image_size: 48}
    models: [sam_tiny]
    usages:
      - name: seg_zs
        grid: {prompt: [bbox, center, rand, rands]}
    attributes: [skin_tone]
    seeds: [0, 1]
    evaluation: {n_boot: 20}

Decoder fine-tuning with mitigation (FEBS in both of its forms, as a grid the selection rule
decides between)::

    usages: [seg_decoder]
    methods:
      - erm
      - resampling
      - name: febs
        grid: {mode: [paper, coded]}
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medequity.experiment import ExperimentSpec
from medequity.experiment.spec import SpecError as ExperimentSpecError
from medequity.experiment.validation import check_dataset_options, check_params, check_train_settings
from medequity.metrics.selection import RULES
from medequity.utils.safe_yaml import YamlError, load_yaml

TOP_LEVEL_KEYS = ("name", "description", "datasets", "models", "usages", "methods", "attributes", "seeds", "train",
                  "evaluation", "selection", "split", "cache_dir", "task")
DATASET_KEYS = ("name", "label", "options", "root", "attributes", "transform")
MODEL_KEYS = ("name", "label", "options")
COMPONENT_KEYS = ("name", "params", "grid")  # methods
USAGE_KEYS = (*COMPONENT_KEYS, "train")  # a usage may override train settings (LP wants a higher LR than FT)
EVALUATION_KEYS = ("threshold", "n_boot", "n_permutations", "attributes", "embedding", "embedding_samples", "probe")
SELECTION_KEYS = ("rule", "max_gap")
SPLIT_KEYS = ("seed", "file")
EMBEDDINGS = ("tsne", "pca")
TASK_NAMES = ("classification", "segmentation")
#: Usages of segmentation specs are named ``seg_*`` (seg_zs: FairMedFM's SEG-ZS); the others classify.
SEGMENTATION_USAGE_PREFIX = "seg_"
#: The method of usages that train nothing (seg_zs): the no-op ERM.
NO_TRAINING_METHODS = ("erm",)
#: Segmenters seg_ft trains (MONAI networks); seg_decoder and seg_lora need a SAM-family model instead.
MONAI_TRAINABLE = ("monai_unet", "swin_unetr")
MONAI_NETWORKS = (*MONAI_TRAINABLE, "vista3d")
#: Usage parameters that name a reported setting rather than a tuned hyper-parameter: each value
#: is its own usage label (``seg_zs:bbox``), so prompt types are compared, never selected away.
SETTING_PARAMS = ("prompt",)
#: ExperimentSpec fields that change where things are kept, not what a run computes.
NOT_IN_RUN_ID = ("cache_dir",)


class SpecError(ExperimentSpecError):
    """A benchmark spec that cannot run; the message names the key and what is valid."""


@dataclass(frozen=True)
class Evaluation:
    threshold: str | float = "best_f1"
    n_boot: int = 200
    n_permutations: int = 0  # optional permutation test of max - min (p_permutation); p-values come from min-P
    attributes: tuple[str, ...] | None = None  # evaluated attributes; default: all of the dataset's
    embedding: str = "tsne"  # 2-D picture of the test representation: tsne | pca
    embedding_samples: int = 1000
    probe: bool = True  # representation fairness (attribute probe + embedding) after each run


@dataclass(frozen=True)
class Selection:
    rule: str = "worst_group"
    max_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "max_gap": self.max_gap}


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its ExperimentSpec and the labels results are grouped by."""

    spec: ExperimentSpec
    dataset: str  # the dataset's label (its name unless the spec gives one)
    model: str
    run_id: str
    usage: str = ""  # the usage's label: its name, with the setting parameters (``seg_zs:bbox``)

    @property
    def labels(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "usage": self.usage or self.spec.usage,
                "method": self.spec.method, "train_attribute": self.spec.attribute, "seed": self.spec.seed,
                "hparams": hparams_key(self.spec.method_params, self.spec.usage_params), "task": self.spec.task}


@dataclass
class BenchSpec:
    name: str
    cells: list[Cell]
    evaluation: Evaluation
    selection: Selection
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the spec as read
    text: str | None = None  # the YAML file's own text, copied verbatim to <out>/spec.yaml
    task: str = "classification"  # of every cell: classification | segmentation

    def to_yaml(self) -> str:
        return self.text if self.text is not None else yaml.safe_dump(self.raw, sort_keys=False)


# --- identifiers ------------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(spec: ExperimentSpec) -> str:
    """Short hash of the canonical JSON of the spec: the same cell always maps to the same id."""
    data = {k: v for k, v in spec.to_dict().items() if k not in NOT_IN_RUN_ID}
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:12]


def hparams_key(method_params: dict, usage_params: dict) -> str:
    """The hyper-parameter setting of a run as one canonical JSON string (selection groups by the rest)."""
    return canonical_json({"method": method_params, "usage": usage_params})


# --- loading ----------------------------------------------------------------------------------------
def load_spec(source: str | Path | dict) -> BenchSpec:
    """Read and validate a spec from a YAML file (plain data, aliases bounded:
    :func:`~medequity.utils.safe_yaml.load_yaml`) or a dict; expand its grid."""
    text = None
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            raw = load_yaml(text, source=f"spec file {str(path)!r}")
        except YamlError as exc:
            raise SpecError(str(exc)) from None
    if not isinstance(raw, dict):
        raise SpecError(f"a spec is a mapping with keys {list(TOP_LEVEL_KEYS)}; got {type(raw).__name__}")
    bench = expand(raw)
    bench.text = text
    return bench


def expand(raw: dict[str, Any]) -> BenchSpec:
    _check_keys(raw, TOP_LEVEL_KEYS, "spec")
    task = raw.get("task", "classification")
    if task not in TASK_NAMES:
        raise SpecError(f"spec key 'task' must be one of {list(TASK_NAMES)}; got {task!r}")
    segmentation = task == "segmentation"
    for required in ("datasets", "models" if segmentation else "methods"):
        if not raw.get(required):
            what = "segmenters" if required == "models" else required
            raise SpecError(f"spec key {required!r} is missing or empty; it lists the {what} to run")
    datasets = [_entry(d, DATASET_KEYS, f"datasets[{i}]") for i, d in enumerate(_as_list(raw, "datasets"))]
    models = [_entry(m, MODEL_KEYS, f"models[{i}]") for i, m in enumerate(_as_list(raw, "models", ["small_cnn"]))]
    usages = [_entry(u, USAGE_KEYS, f"usages[{i}]")
              for i, u in enumerate(_as_list(raw, "usages", ["seg_zs" if segmentation else "lp"]))]
    methods = [_entry(m, COMPONENT_KEYS, f"methods[{i}]")
               for i, m in enumerate(_as_list(raw, "methods", list(NO_TRAINING_METHODS)))]
    attributes = [str(a) for a in _as_list(raw, "attributes", ["sex"])]
    seeds = _as_list(raw, "seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"spec key 'seeds' must be a list of integers, at least one (e.g. seeds: [0, 1, 2]); got {seeds!r}")
    if not attributes:
        raise SpecError("spec key 'attributes' is empty; list the sensitive attributes to train on (e.g. attributes: [sex])")
    train = _mapping(raw, "train")
    evaluation = _evaluation(_mapping(raw, "evaluation"))
    selection = _selection(raw.get("selection", "worst_group"))
    split = _mapping(raw, "split")
    _check_keys(split, SPLIT_KEYS, "split")

    _check_names(datasets, models, usages, methods, task)
    if segmentation and "threshold" in _mapping(raw, "evaluation"):
        raise SpecError("evaluation.threshold does not apply to segmentation: a pixel is foreground where its "
                        "logit > 0 (SAM's mask threshold); remove it")
    from medequity.usages import USAGES

    for dataset in datasets:
        _check(check_dataset_options, dataset["name"], dict(dataset.get("options") or {}))
    for usage in usages:
        trains = bool(getattr(USAGES.get(usage["name"]), "trains", True))
        _check(check_train_settings, {**train, **dict(usage.get("train") or {})}, trains=trains,
               where="train" if not usage.get("train") else f"train (with usage {usage['name']!r}'s train)")
    usage_settings = {u["name"]: _settings(u, "usage") for u in usages}
    method_settings = [(m["name"], _settings(m, "method")) for m in methods]
    _labels_unique(datasets, "datasets")
    _labels_unique(models, "models")

    cells: list[Cell] = []
    seen: set[str] = set()
    for dataset, model, usage, (method, method_grid), attribute, seed in itertools.product(
            datasets, models, usages, method_settings, attributes, seeds):
        if dataset.get("attributes") and attribute not in dataset["attributes"]:
            continue  # this dataset trains on its own attribute list
        if segmentation and segmentation_pair_problem(model["name"], usage["name"], method):
            continue  # a pair that cannot run (a training method on seg_zs, ...); unused entries fail below
        for usage_params, method_params in itertools.product(usage_settings[usage["name"]], method_grid):
            spec = ExperimentSpec(
                dataset=dataset["name"], dataset_options=dict(dataset.get("options") or {}), root=dataset.get("root"),
                attribute=attribute, task=task, model=model["name"], model_options=dict(model.get("options") or {}),
                transform=dataset.get("transform"), usage=usage["name"], usage_params=usage_params, method=method,
                method_params=method_params, seed=seed, train={**train, **(usage.get("train") or {})},
                split_file=split.get("file"),
                split_seed=int(split.get("seed", 0)), threshold=evaluation.threshold, n_boot=evaluation.n_boot,
                n_permutations=evaluation.n_permutations,
                eval_attributes=list(evaluation.attributes) if evaluation.attributes else None,
                cache_dir=str(raw["cache_dir"]) if raw.get("cache_dir") else None,
            )
            cell = Cell(spec, dataset.get("label") or dataset["name"], model.get("label") or model["name"], run_id(spec),
                        usage_label(usage["name"], usage_params, usage_defaults(usage["name"])) if segmentation
                        else usage["name"])
            if cell.run_id not in seen:  # the same cell listed twice runs once
                seen.add(cell.run_id)
                cells.append(cell)
    if segmentation:
        _check_segmentation_entries_used(cells, models, usages, methods)
    for dataset in datasets:
        if dataset.get("attributes") and not any(c.dataset == (dataset.get("label") or dataset["name"]) for c in cells):
            raise SpecError(f"dataset {dataset['name']!r}: none of its attributes {dataset['attributes']} is in "
                            f"spec key 'attributes' {attributes}")
    return BenchSpec(str(raw.get("name") or "benchmark"), cells, evaluation, selection,
                     tuning_budget_warnings(method_settings), raw, task=task)


def usage_defaults(name: str) -> dict[str, Any]:
    from medequity.usages import USAGES

    return dict(getattr(USAGES.get(name), "defaults", {}))


def usage_label(name: str, usage_params: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """The usage as results group it: its name, plus each :data:`SETTING_PARAMS` value it takes
    (given or default), e.g. ``seg_zs:bbox``; a plain name for usages without such parameters."""
    defaults = defaults or {}
    values = [str(usage_params.get(key, defaults.get(key))) for key in SETTING_PARAMS if key in usage_params or key in defaults]
    return ":".join([name, *values])


def tuning_budget_warnings(method_settings: list[tuple[str, list[dict]]]) -> list[str]:
    """A warning when methods get hyper-parameter grids of different sizes (MEDFAIR: unequal tuning fakes gains)."""
    sizes = {name: len(grid) for name, grid in method_settings}
    if len(set(sizes.values())) <= 1:
        return []
    listing = ", ".join(f"{name}: {size}" for name, size in sizes.items())
    return [f"unequal tuning budget: hyper-parameter settings per method differ ({listing}); a method tuned over "
            f"more settings can look better only because it was tuned more (MEDFAIR). Give every method the same "
            f"number of settings for a fair comparison."]


# --- validation helpers -----------------------------------------------------------------------------
def _check_keys(mapping: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - set(valid))
    if unknown:
        raise SpecError(f"unknown key(s) {unknown} in {where}; valid keys: {list(valid)}")


def _as_list(raw: dict, key: str, default: list | None = None) -> list:
    value = raw.get(key)
    if value is None:
        return list(default or [])
    if isinstance(value, (str, int, dict)):
        return [value]
    if not isinstance(value, list):
        raise SpecError(f"spec key {key!r} must be a list; got {type(value).__name__}")
    return value


def _mapping(raw: dict, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(f"spec key {key!r} must be a mapping; got {type(value).__name__}")
    return value


def _entry(value: Any, valid: tuple[str, ...], where: str) -> dict:
    """``"erm"`` or ``{name: erm, ...}`` → a checked dict."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise SpecError(f"{where} must be a name or a mapping with a 'name' key; got {value!r}")
    _check_keys(value, valid, f"{where} ({value['name']})")
    for key in ("options", "params", "grid"):
        if key in value and value[key] is not None and not isinstance(value[key], dict):
            raise SpecError(f"{where}.{key} must be a mapping; got {type(value[key]).__name__}")
    return value


def _settings(entry: dict, kind: str) -> list[dict]:
    """Every hyper-parameter setting of a method/usage: fixed ``params`` × the product of ``grid`` lists."""
    from medequity.methods import METHODS
    from medequity.usages import USAGES

    registry = METHODS if kind == "method" else USAGES
    params = dict(entry.get("params") or {})
    grid = dict(entry.get("grid") or {})
    for where, keys in (("params", params), ("grid", grid)):
        _check(check_params, registry.get(entry["name"]), keys, f"{kind} {entry['name']!r}", where)
    both = sorted(set(params) & set(grid))
    if both:
        raise SpecError(f"{kind} {entry['name']!r}: {both} given in both params and grid; keep one")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    for key, values in axes.items():
        if not values:
            raise SpecError(f"{kind} {entry['name']!r}: grid {key!r} is an empty list")
    names = list(axes)
    return [{**params, **dict(zip(names, combo))} for combo in itertools.product(*(axes[n] for n in names))]


def _check_names(datasets, models, usages, methods, task: str = "classification") -> None:
    from medequity.data import DATASETS
    from medequity.methods import METHODS
    from medequity.usages import USAGES

    for kind, registry, entries in (("dataset", DATASETS, datasets), ("usage", USAGES, usages), ("method", METHODS, methods)):
        for entry in entries:
            if entry["name"] not in registry:
                raise SpecError(f"unknown {kind} {entry['name']!r}; known: {registry.names()}")
    segmentation = task == "segmentation"
    for entry in usages:
        if entry["name"].startswith(SEGMENTATION_USAGE_PREFIX) != segmentation:
            valid = [n for n in USAGES.names() if n.startswith(SEGMENTATION_USAGE_PREFIX) == segmentation]
            other = "classification" if segmentation else "segmentation"
            raise SpecError(f"usage {entry['name']!r} is a {other} usage but the spec's task is {task!r}; "
                            f"{task} usages: {valid}" + ("" if segmentation else " (or set task: segmentation)"))
    for entry in methods:
        if task not in method_tasks(entry["name"]):
            valid = [n for n in METHODS.names() if task in method_tasks(n)]
            raise SpecError(f"method {entry['name']!r} cannot run on {task}: it trains "
                            f"{' and '.join(method_tasks(entry['name']))} models; {task} methods: {valid}")
    if segmentation:
        for entry in models:
            _check_segmenter(entry["name"])
        return
    for entry in models:
        _check_backbone(entry["name"])


def method_tasks(name: str) -> tuple[str, ...]:
    """The tasks a registered method trains (its ``tasks``; classification unless it says more)."""
    from medequity.methods import METHODS

    return tuple(getattr(METHODS.get(name), "tasks", ("classification",)))


def usage_trains(name: str) -> bool:
    from medequity.usages import USAGES

    return bool(getattr(USAGES.get(name), "trains", True))


def segmentation_pair_problem(model: str, usage: str, method: str) -> str | None:
    """Why (model, usage, method) of a segmentation spec cannot run, or None when it can."""
    if not usage_trains(usage):
        if method not in NO_TRAINING_METHODS:
            return (f"usage {usage!r} trains nothing, so method {method!r} has nothing to change (its only method is "
                    f"{list(NO_TRAINING_METHODS)}; methods apply to seg_decoder, seg_lora and seg_ft)")
        if model in MONAI_TRAINABLE:
            return f"usage {usage!r} prompts a SAM-family segmenter; {model!r} is a MONAI network without prompts"
        return None
    if usage == "seg_ft" and model not in MONAI_TRAINABLE:
        return f"usage 'seg_ft' trains MONAI networks {list(MONAI_TRAINABLE)}; {model!r} is not one (use seg_decoder or seg_lora)"
    if usage != "seg_ft" and model in MONAI_NETWORKS:
        return f"usage {usage!r} adapts a SAM-family segmenter; {model!r} is a MONAI network (use seg_ft)"
    return None


def _check_segmentation_entries_used(cells: list[Cell], models: list[dict], usages: list[dict],
                                     methods: list[dict]) -> None:
    """Every listed segmenter, usage and method of a segmentation spec has a cell; otherwise the
    error says why its pairs cannot run (e.g. a training method listed with seg_zs only)."""
    used = {"model": {c.spec.model for c in cells}, "usage": {c.spec.usage for c in cells},
            "method": {c.spec.method for c in cells}}
    for kind, entries in (("method", methods), ("usage", usages), ("model", models)):
        for entry in entries:
            name = entry["name"]
            if name in used[kind]:
                continue
            pairs = [(m["name"], u["name"], k["name"]) for m in models for u in usages for k in methods
                     if {"model": m, "usage": u, "method": k}[kind]["name"] == name]
            reasons = list(dict.fromkeys(filter(None, (segmentation_pair_problem(*p) for p in pairs))))
            what = "segmenter" if kind == "model" else kind
            raise SpecError(f"{what} {name!r} has no run in this spec: " + "; ".join(reasons or ["no cell uses it"]))


def _check_segmenter(name: str) -> None:
    from medequity.models import BACKBONES, SEGMENTERS

    if name not in SEGMENTERS:
        hint = " (a classification backbone; segmentation specs list segmenters)" if name in BACKBONES else ""
        raise SpecError(f"unknown segmenter {name!r}{hint}; registered segmenters: {SEGMENTERS.names()}")


def _check_backbone(name: str) -> None:
    from medequity.models import BACKBONES

    if name in BACKBONES or name.startswith("open_clip:"):
        return
    import timm

    timm_name = name.split(":", 1)[1] if name.startswith("timm:") else name
    if not timm.is_model(timm_name):
        raise SpecError(f"unknown model {name!r}; registered: {BACKBONES.names()}, or a timm model name "
                        f"(timm:<name>), or open_clip:<name>")


def _check(check, *args, **kwargs) -> None:
    """Run one of the experiment layer's checks, its error as a :class:`SpecError`."""
    try:
        check(*args, **kwargs)
    except ExperimentSpecError as exc:
        raise SpecError(str(exc)) from None


def _evaluation(raw: dict) -> Evaluation:
    _check_keys(raw, EVALUATION_KEYS, "evaluation")
    values = dict(raw)
    if "attributes" in values and values["attributes"] is not None:
        values["attributes"] = tuple(str(a) for a in _as_list(values, "attributes"))
    if values.get("embedding", "tsne") not in EMBEDDINGS:
        raise SpecError(f"evaluation.embedding must be one of {list(EMBEDDINGS)}; got {values['embedding']!r}")
    for key in ("n_boot", "n_permutations", "embedding_samples"):
        if key in values and (not isinstance(values[key], int) or values[key] < 0):
            raise SpecError(f"evaluation.{key} must be a non-negative integer; got {values[key]!r}")
    threshold = values.get("threshold", "best_f1")
    if not isinstance(threshold, (str, int, float)):
        raise SpecError(f"evaluation.threshold must be a rule name or a number; got {threshold!r}")
    return Evaluation(**values)


def _selection(value: Any) -> Selection:
    raw = {"rule": value} if isinstance(value, str) else value
    if not isinstance(raw, dict):
        raise SpecError(f"spec key 'selection' must be a rule name or a mapping {list(SELECTION_KEYS)}; got {value!r}")
    _check_keys(raw, SELECTION_KEYS, "selection")
    rule = raw.get("rule", "worst_group")
    if rule not in RULES:
        raise SpecError(f"selection rule {rule!r} is unknown; valid: {list(RULES)}")
    if rule == "constrained" and raw.get("max_gap") is None:
        raise SpecError("selection rule 'constrained' needs max_gap, e.g. selection: {rule: constrained, max_gap: 0.05}")
    return Selection(rule, None if raw.get("max_gap") is None else float(raw["max_gap"]))


def _labels_unique(entries: list[dict], key: str) -> None:
    labels = [e.get("label") or e["name"] for e in entries]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SpecError(f"{key} {duplicates} listed more than once; give each entry its own 'label' to tell them apart")
