"""Checking an :class:`~medequity.experiment.spec.ExperimentSpec` before any work starts.

Every field is checked against what will read it — the dataset loader's options, the method's and
usage's parameters, the trainer's settings — so a typo or an impossible value (``epochs: -2``,
``lr: -1``, ``batch_size: 0``) fails at once with one message naming the field and the fix, not
after minutes of data loading or pre-training, or as a ``TypeError`` deep in the trainer.
:func:`~medequity.experiment.prepare.prepare` calls :func:`validate_spec` first; the benchmark spec
(:mod:`medequity.bench.spec`) uses the same checks on every entry of its grid.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields
from typing import Any

from medequity.experiment.spec import ExperimentSpec, SpecError


def validate_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """Raise :class:`SpecError` naming the first field that cannot run, and the fix; return the spec."""
    from medequity.experiment.tasks import TASKS
    from medequity.methods import METHODS
    from medequity.usages import USAGES

    _check_int(spec.seed, "seed", minimum=None)
    _check_int(spec.split_seed, "split_seed", minimum=None)
    _check_int(spec.n_boot, "n_boot", minimum=0)
    _check_int(spec.n_permutations, "n_permutations", minimum=0)
    if spec.task not in TASKS:
        raise SpecError(f"task {spec.task!r} is unknown; valid: {TASKS.names()}")
    check_dataset_options(spec.dataset, spec.dataset_options)
    usage = _registered(USAGES, spec.usage, "usage")
    check_params(usage, spec.usage_params, f"usage {spec.usage!r}", "usage_params")
    method = _registered(METHODS, spec.method, "method")
    check_params(method, spec.method_params, f"method {spec.method!r}", "method_params")
    check_train_settings(spec.train, trains=bool(getattr(usage, "trains", True)))
    return spec


def _check_int(value: Any, field_name: str, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise SpecError(f"{field_name} must be {bound}; got {value!r}")


def _registered(registry: Any, name: str, kind: str) -> Any:
    if name not in registry:
        raise SpecError(f"unknown {kind} {name!r}; known: {registry.names()}")
    return registry.get(name)


def check_params(component: Any, params: dict[str, Any], what: str, field_name: str) -> None:
    """Parameters of a method or usage against its ``defaults``; a parameter the component has
    renamed (its ``renamed`` mapping, old -> new) says its new name."""
    defaults = getattr(component, "defaults", {})
    unknown = sorted(set(params) - set(defaults))
    if not unknown:
        return
    renamed = getattr(component, "renamed", {})
    hints = "".join(f"; {old!r} is now called {renamed[old]!r}" for old in unknown if old in renamed)
    raise SpecError(f"{what} has no parameter(s) {unknown} (in {field_name}){hints}; valid: {sorted(defaults)}")


# Training settings with a bound: (integer or number, minimum, whether the minimum itself is allowed). epochs is
# checked on its own (0 is right only for usages that train nothing).
_TRAIN_BOUNDS: dict[str, tuple[type, float, bool]] = {
    "batch_size": (int, 1, True), "eval_batch_size": (int, 1, True), "lr": (float, 0.0, False),
    "weight_decay": (float, 0.0, True), "momentum": (float, 0.0, True), "step_size": (int, 1, True),
    "gamma": (float, 0.0, False), "warmup_steps": (int, 0, True), "power": (float, 0.0, False),
    "num_workers": (int, 0, True), "seed": (int, -math.inf, True),
}


def check_train_settings(train: dict[str, Any], *, trains: bool = True, where: str = "train") -> None:
    """``train`` (fields of :class:`~medequity.training.trainer.TrainConfig`) as the trainer will need
    it: known keys, epochs >= 1 (0 allowed for evaluation-only usages), batch sizes >= 1, lr > 0, ...
    Raises :class:`SpecError` naming ``where.<key>``, the value and the valid range."""
    from medequity.training.trainer import TrainConfig

    if not isinstance(train, dict):
        raise SpecError(f"{where} must be a mapping of training settings; got {type(train).__name__}")
    valid = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(map(str, train)) - set(valid))
    if unknown:
        raise SpecError(f"unknown key(s) {unknown} in {where}; valid keys: {valid}")
    if "epochs" in train:
        epochs = train["epochs"]
        fewest = 0 if not trains else 1
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < fewest:
            why = "" if not trains else " (0 only for usages that train nothing, such as clip_zs)"
            raise SpecError(f"{where}.epochs must be an integer >= {fewest}{why}; got {epochs!r}")
    for key, (kind, low, inclusive) in _TRAIN_BOUNDS.items():
        if key not in train:
            continue
        value = train[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not (numeric and isinstance(value, int)):
            raise SpecError(f"{where}.{key} must be an integer; got {value!r}")
        if not numeric or not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise SpecError(f"{where}.{key} must be {'an integer' if kind is int else 'a number'} {bound}; got {value!r}")
    patience = train.get("patience")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 0):
        raise SpecError(f"{where}.patience must be an integer >= 0 (epochs without improvement before stopping) "
                        f"or null (never stop early); got {patience!r}")
    try:
        TrainConfig(**train)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """``options`` against what dataset ``name``'s loader accepts (its keyword parameters; the
    synthetic generators' config keys), so a typo fails before anything is loaded."""
    from medequity.data import DATASETS

    factory = _registered(DATASETS, name, "dataset")
    if not isinstance(options, dict):
        raise SpecError(f"dataset_options must be a mapping; got {type(options).__name__}")
    if name in _CONFIG_CHECKS:
        try:
            _CONFIG_CHECKS[name](dict(options))
        except (TypeError, ValueError, KeyError) as exc:
            raise SpecError(f"dataset {name!r}, dataset_options {options}: {exc}") from None
        return
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the loader passes its options on; it names a bad one itself
    valid = [p.name for p in parameters.values() if p.name != "root"
             and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(map(str, options)) - set(valid))
    if unknown:
        raise SpecError(f"dataset {name!r} has no option(s) {unknown}; valid options: {valid}")


def _check_synthetic(options: dict[str, Any]) -> None:
    from medequity.data.synthetic import resolve_config

    if options.get("preset") is not None and options.get("config") is not None:
        raise ValueError("give either preset or config, not both (use overrides to change a preset)")
    source = options.pop("config", None) or options.pop("preset", None) or "derm-unbiased"
    options.pop("preset", None)
    resolve_config(source, **options)


def _check_synthetic_segmentation(options: dict[str, Any]) -> None:
    from medequity.data.synthetic_segmentation import resolve_segmentation_config

    if options.get("preset") is not None and options.get("config") is not None:
        raise ValueError("give either preset or config, not both (use overrides to change a preset)")
    source = options.pop("config", None) or options.pop("preset", None) or "seg-derm-unbiased"
    options.pop("preset", None)
    for handled in ("n", "seed", "image_size"):  # arguments of the generator, not config keys
        options.pop(handled, None)
    resolve_segmentation_config(source, **options)


#: Datasets whose loader takes free-form config keys, checked by building (not generating) the config.
_CONFIG_CHECKS = {"synthetic": _check_synthetic, "synthetic-segmentation": _check_synthetic_segmentation}
