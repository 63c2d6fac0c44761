"""Synthetic medical images with known, controllable bias (DATASETS.md "Synthetic data with known bias").

The generator follows the causal picture of Fair Diagnosis (Fig. 1, Definitions 2–3):

* S, the sensitive attributes (sex, age, skin tone or race), are drawn per *patient*;
* Y, the true label, depends on S only through the ``prevalence`` knob — the *indirect* path
  S→Y→X, which a fair model may use;
* the latent disease severity (``true_signal``) depends on Y only; the ``difficulty`` knob weakens
  and blurs how much of it reaches the image in one group (``image_signal``);
* X, the image, is painted from ``image_signal`` plus anatomy and noise that ignore S; the
  ``shortcut`` knob (a group-linked marker correlated with Y in training only) and the
  ``acquisition`` knob (a group-linked style) add the *direct* path S→X→Ŷ;
* the observed ``label`` is ``true_label`` with group-dependent flips (``label_noise``).

With every knob off, X ⊥ S | Y and no group differs in difficulty, so no model should show a
significant gap. Each sample's rendered signal is stored, so :func:`oracle_group_auc` gives the
per-group AUC a perfect reader of the disease signal would reach — the part of a gap that no model
can remove.

Every stage draws from its own child of ``np.random.SeedSequence(seed)``, so the same seed gives
identical arrays, and turning one knob leaves the other stages' draws (patients, labels, anatomy)
unchanged — the datasets of two presets differ only by the mechanism the knob names.

The ``split`` column (patient-level train/val/test) is part of the design: the shortcut is
planted in train/val only, so re-splitting a shortcut dataset with another splitter would mix
biased and decorrelated rows; keep the built-in split for shortcut presets.

Images are uint8 like real files (``read_image``): ``derm`` and ``fundus`` N×H×W×3, ``cxr`` N×H×W,
``volume`` N×D×H×W. Masks (uint8): derm 1 = lesion; cxr 1 = lung; fundus 1 = disc, 2 = cup;
volume 1 = lesion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from medequity.data.base import GROUP_PREFIX, MedicalDataset, register_dataset
from medequity.data.synthetic_presets import PRESETS, preset_descriptions
from medequity.data.zero_shot import synthetic_prompts

MODALITIES = ("derm", "cxr", "fundus", "volume")
SPLITS = ("train", "val", "test")


# --- sensitive attributes --------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeSpec:
    """A sensitive attribute: its two groups (``other``, ``affected``) and how raw values are drawn.

    ``affected`` is the group a knob acts on unless the knob names ``group``.
    """

    other: str
    affected: str
    description: str


ATTRIBUTES: dict[str, AttributeSpec] = {
    "sex": AttributeSpec("male", "female", "raw 'male'/'female'"),
    "age": AttributeSpec("<=60", ">60", "raw age in years (18-90); group '>60' is age > 60"),
    "skin_tone": AttributeSpec(
        "I-III", "IV-VI", "raw Fitzpatrick type 1-6; groups I-III vs IV-VI (MEDFAIR's <=2 vs >2 of type-1)"
    ),
    "race": AttributeSpec("White", "non-White", "raw 'White'/'Black'/'Asian'/'Other'; White vs non-White"),
}

MODALITY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "derm": ("sex", "age", "skin_tone"),
    "cxr": ("sex", "age", "race"),
    "fundus": ("sex", "age", "race"),
    "volume": ("sex", "age", "race"),
}

NON_WHITE_RACES = ("Black", "Asian", "Other")


# --- configuration -------------------------------------------------------------------------------


class SyntheticConfigError(ValueError):
    """A synthetic-data config is invalid; the message names the key and lists the valid ones."""


@dataclass
class Knob:
    """One bias mechanism aimed at one attribute.

    ``attribute``: the sensitive attribute it acts on; ``group``: which of its two groups is
    affected (default :attr:`AttributeSpec.affected`, e.g. female, >60, IV-VI, non-White).
    """

    attribute: str | None = None
    group: str | None = None

    @property
    def active(self) -> bool:
        raise NotImplementedError


@dataclass
class RepresentationKnob(Knob):
    """Share of patients in the affected group (``share``; 0.5 = balanced, the unbiased value).

    Every other attribute is split 50/50.
    """

    share: float = 0.5

    @property
    def active(self) -> bool:
        return self.share != 0.5


@dataclass
class StrengthKnob(Knob):
    """A knob with a ``strength``; 0 turns it off."""

    strength: float = 0.0

    @property
    def active(self) -> bool:
        return self.strength != 0.0

    def strength_range(self) -> tuple[float, float]:
        return (0.0, 1.0)


@dataclass
class PrevalenceKnob(StrengthKnob):
    """Indirect path S→Y: P(y=1 | affected) − P(y=1 | other) = ``strength``, centred on ``base_prevalence``."""

    def strength_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)


@dataclass
class ShortcutKnob(StrengthKnob):
    """Direct path S→X→Ŷ: a visual marker on the affected group, tied to the label in training only.

    In the train (and, with ``val_like_train``, val) split the marker is painted on a fraction
    ``strength`` of the affected group's positives and on none of its negatives; the other group
    never has it. In the test split the marker keeps its frequency in the affected group but is
    ``"decorrelated"`` from the label (independent of it) or ``"reversed"`` (on negatives only).
    Markers: derm a ruler, cxr a corner "L" tag, fundus a corner text box, volume a bright rod.
    """

    test: str = "decorrelated"
    val_like_train: bool = True


@dataclass
class DifficultyKnob(StrengthKnob):
    """A weaker, noisier disease signal in the affected group.

    The rendered signal is ``gain * true_signal + noise``; in the affected group ``gain`` is
    multiplied by ``1 - strength`` and the noise s.d. by ``1 + strength``. Only the lesion changes,
    so the group is not otherwise visible in the image.
    """


@dataclass
class LabelNoiseKnob(StrengthKnob):
    """Annotation bias: observed labels flipped with probability ``strength`` in the affected group.

    ``other_rate`` is the flip rate of the other group (default 0). ``direction``: ``"both"``
    (symmetric flips), ``"positive_to_negative"`` (under-diagnosis: only positives can flip) or
    ``"negative_to_positive"``. ``true_label`` keeps the label before noise.
    """

    other_rate: float = 0.0
    direction: str = "both"

    @property
    def active(self) -> bool:
        return self.strength != 0.0 or self.other_rate != 0.0


@dataclass
class AcquisitionKnob(StrengthKnob):
    """A group-linked acquisition style that makes S predictable from X without touching Y.

    With strength s the affected group's images are brighter (+0.1·s), flatter (contrast
    ×(1−0.3·s)) and blurred (σ = 1.2·s px at 64 px): a direct-path shortcut in waiting.
    """


KNOB_TYPES: dict[str, type[Knob]] = {
    "representation": RepresentationKnob,
    "prevalence": PrevalenceKnob,
    "shortcut": ShortcutKnob,
    "difficulty": DifficultyKnob,
    "label_noise": LabelNoiseKnob,
    "acquisition": AcquisitionKnob,
}


def config_kwargs(config_class: type, data: Mapping[str, Any], knob_keys, make_knob, what: str) -> dict[str, Any]:
    """A generator config's constructor arguments from a plain dict (shared by the classification and
    segmentation generators): unknown keys raise, listing the valid ones; knobs, volume shapes and
    split fractions are parsed from their YAML forms."""
    if not isinstance(data, Mapping):
        raise SyntheticConfigError(f"{what} must be a mapping, got {type(data).__name__}")
    valid = [f.name for f in dataclasses.fields(config_class)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            raise SyntheticConfigError(f"unknown {what} key {key!r}; valid keys: {', '.join(valid)}")
        if key in knob_keys:
            kwargs[key] = make_knob(key, value)
        elif key == "volume_shape":
            kwargs[key] = tuple(int(v) for v in value)
        elif key in ("severity_negative", "severity_positive"):
            kwargs[key] = _beta_parameters(key, value)
        elif key == "split_fractions":
            kwargs[key] = _split_fractions(value)
        else:
            kwargs[key] = value
    return kwargs


@dataclass
class SyntheticConfig:
    """Everything that defines a synthetic dataset; ``SyntheticConfig.from_dict`` reads YAML/JSON dicts.

    Knobs default to off, so ``SyntheticConfig()`` is an unbiased derm dataset.
    """

    modality: str = "derm"
    n: int = 2000
    seed: int = 0
    image_size: int = 64  # 2D images are image_size × image_size
    volume_shape: tuple[int, int, int] = (16, 32, 32)  # depth, height, width
    max_images_per_patient: int = 3  # each patient has 1..max images, uniformly
    split_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )  # of patients (DATASETS.md: 80/10/10 by patient)
    base_prevalence: float = 0.5
    signal_noise: float = 0.1  # s.d. of the noise between latent severity and rendered signal
    # Beta(a, b) of the latent severity by true label: how far apart the classes are (oracle AUC
    # about 0.88 with the defaults and signal_noise 0.1; 0.94 with positive (5, 2)).
    severity_negative: tuple[float, float] = (2.0, 5.0)
    severity_positive: tuple[float, float] = (4.0, 2.5)
    pixel_noise: float = 0.03  # s.d. of sensor noise on the [0, 1] intensity scale
    representation: RepresentationKnob = field(default_factory=RepresentationKnob)
    prevalence: PrevalenceKnob = field(default_factory=PrevalenceKnob)
    shortcut: ShortcutKnob = field(default_factory=ShortcutKnob)
    difficulty: DifficultyKnob = field(default_factory=DifficultyKnob)
    label_noise: LabelNoiseKnob = field(default_factory=LabelNoiseKnob)
    acquisition: AcquisitionKnob = field(default_factory=AcquisitionKnob)

    # -- dict round trip ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyntheticConfig:
        """Build and validate a config from a plain dict; unknown keys raise, listing the valid ones."""
        config = cls(**config_kwargs(cls, data, KNOB_TYPES, _knob_from_value, "synthetic config"))
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-able dict that ``from_dict`` turns back into this config."""
        out = dataclasses.asdict(self)
        out["volume_shape"] = list(self.volume_shape)
        out["severity_negative"], out["severity_positive"] = list(self.severity_negative), list(self.severity_positive)
        return out

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> None:
        if self.modality not in MODALITIES:
            raise SyntheticConfigError(f"modality {self.modality!r} is not one of {list(MODALITIES)}")
        _check_int("n", self.n, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("image_size", self.image_size, minimum=16)
        _check_int("max_images_per_patient", self.max_images_per_patient, minimum=1)
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 4:
            raise SyntheticConfigError(f"volume_shape must be 3 sizes >= 4, got {self.volume_shape}")
        _check_range("base_prevalence", self.base_prevalence, 0.0, 1.0)
        _check_range("signal_noise", self.signal_noise, 0.0, 10.0)
        _check_range("pixel_noise", self.pixel_noise, 0.0, 1.0)
        self.severity_negative = _beta_parameters("severity_negative", self.severity_negative)
        self.severity_positive = _beta_parameters("severity_positive", self.severity_positive)
        attributes = MODALITY_ATTRIBUTES[self.modality]
        for name in KNOB_TYPES:
            knob: Knob = getattr(self, name)
            if not knob.active:
                continue
            if knob.attribute not in attributes:
                raise SyntheticConfigError(
                    f"{name}.attribute is {knob.attribute!r}; for modality {self.modality!r} "
                    f"choose one of {list(attributes)}"
                )
            spec = ATTRIBUTES[knob.attribute]
            if knob.group is not None and knob.group not in (spec.other, spec.affected):
                raise SyntheticConfigError(
                    f"{name}.group is {knob.group!r}; attribute {knob.attribute!r} has groups "
                    f"{[spec.other, spec.affected]}"
                )
            if isinstance(knob, StrengthKnob):
                low, high = knob.strength_range()
                _check_range(f"{name}.strength", knob.strength, low, high)
        _check_range("representation.share", self.representation.share, 0.0, 1.0)
        if self.shortcut.test not in ("decorrelated", "reversed"):
            raise SyntheticConfigError(
                f"shortcut.test is {self.shortcut.test!r}; valid: 'decorrelated', 'reversed'"
            )
        _check_range("label_noise.other_rate", self.label_noise.other_rate, 0.0, 1.0)
        directions = ("both", "positive_to_negative", "negative_to_positive")
        if self.label_noise.direction not in directions:
            raise SyntheticConfigError(
                f"label_noise.direction is {self.label_noise.direction!r}; valid: {list(directions)}"
            )
        half = self.prevalence.strength / 2
        if self.prevalence.active and not (
            0 <= self.base_prevalence - half <= 1 and 0 <= self.base_prevalence + half <= 1
        ):
            raise SyntheticConfigError(
                f"prevalence.strength {self.prevalence.strength} around base_prevalence "
                f"{self.base_prevalence} gives a probability outside [0, 1]"
            )


def _knob_from_value(name: str, value: Any) -> Knob:
    knob_type = KNOB_TYPES[name]
    if value is None:
        return knob_type()
    if isinstance(value, Knob):
        return value
    if not isinstance(value, Mapping):
        raise SyntheticConfigError(f"{name} must be a mapping like {{attribute: sex, strength: 0.3}} or null")
    valid = [f.name for f in dataclasses.fields(knob_type)]
    for key in value:
        if key not in valid:
            raise SyntheticConfigError(f"unknown key {name}.{key}; valid keys of {name}: {', '.join(valid)}")
    return knob_type(**value)


def _beta_parameters(name: str, value: Any) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SyntheticConfigError(f"{name} must be two Beta parameters [a, b], got {value!r}") from None
    if not (a > 0 and b > 0):
        raise SyntheticConfigError(f"{name} must be two positive Beta parameters [a, b], got {value!r}")
    return a, b


def _split_fractions(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in SPLITS]
        if unknown:
            raise SyntheticConfigError(f"unknown split_fractions key {unknown[0]!r}; valid keys: {', '.join(SPLITS)}")
        fractions = {s: float(value.get(s, 0.0)) for s in SPLITS}
    else:
        values = list(value)
        if len(values) != 3:
            raise SyntheticConfigError(f"split_fractions needs 3 numbers (train, val, test), got {values}")
        fractions = dict(zip(SPLITS, map(float, values), strict=True))
    if min(fractions.values()) < 0 or abs(sum(fractions.values()) - 1) > 1e-6:
        raise SyntheticConfigError(f"split_fractions must be >= 0 and sum to 1, got {fractions}")
    return fractions


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SyntheticConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not low <= value <= high:
        raise SyntheticConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def resolve_config(preset_or_config: str | Mapping[str, Any] | SyntheticConfig = "derm-unbiased",
                   **overrides: Any) -> tuple[SyntheticConfig, str | None]:
    """Turn a preset name, a dict or a config plus overrides into a validated config.

    A knob override given as a dict is merged into the base knob, so
    ``shortcut={"strength": 0.5}`` keeps the preset's attribute; ``shortcut=None`` turns it off.
    """
    preset = None
    if isinstance(preset_or_config, str):
        preset = preset_or_config
        base = PRESETS.create(preset_or_config)
    elif isinstance(preset_or_config, SyntheticConfig):
        base = preset_or_config.to_dict()
    elif isinstance(preset_or_config, Mapping):
        base = dict(preset_or_config)
    else:
        raise SyntheticConfigError(
            f"expected a preset name, a config dict or a SyntheticConfig, got {type(preset_or_config).__name__}"
        )
    merged = dict(base)
    for key, value in overrides.items():
        if key in KNOB_TYPES and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return SyntheticConfig.from_dict(merged), preset


# --- generation ----------------------------------------------------------------------------------

# Independent random streams, one per stage (see the module docstring).
_STAGES = ("patients", "split", "labels", "signal", "shortcut", "label_noise", "render")


def make_synthetic(preset_or_config: str | Mapping[str, Any] | SyntheticConfig = "derm-unbiased",
                   n: int | None = None, seed: int | None = None, **overrides: Any) -> MedicalDataset:
    """Generate a synthetic dataset with in-memory images from a preset name, a dict or a config.

    ``make_synthetic("cxr-sex-prevalence", n=2000, seed=0)``;
    ``make_synthetic({"modality": "fundus", "difficulty": {"attribute": "race", "strength": 0.5}})``;
    overrides replace config keys (``image_size=32``, ``shortcut={"strength": 0.5}``).
    """
    if n is not None:
        overrides["n"] = n
    if seed is not None:
        overrides["seed"] = seed
    config, preset = resolve_config(preset_or_config, **overrides)
    streams = dict(zip(_STAGES, np.random.SeedSequence(config.seed).spawn(len(_STAGES)), strict=True))
    rng = {stage: np.random.default_rng(s) for stage, s in streams.items()}

    table = _draw_patients(config, rng["patients"])
    table = _assign_splits(table, config, rng["split"])
    affected = {name: _in_affected_group(table, getattr(config, name)) for name in KNOB_TYPES}

    true_label = _draw_labels(config, affected["prevalence"], rng["labels"])
    true_signal, image_signal = _draw_signal(config, true_label, affected["difficulty"], rng["signal"])
    marker = _draw_shortcut_marker(config, table["split"].to_numpy(), true_label,
                                   affected["shortcut"], rng["shortcut"])
    label = _apply_label_noise(config, true_label, affected["label_noise"], rng["label_noise"])
    acquisition = affected["acquisition"] & config.acquisition.active

    render = _RENDERERS[config.modality]
    images, masks, extra_columns = render(config, table, image_signal, marker, acquisition, rng["render"])

    n_rows = len(table)
    table.insert(0, "sample_id", [f"syn-{config.modality}-{i:06d}" for i in range(n_rows)])
    table.insert(2, "label", pd.array(label, dtype="Int64"))
    table["true_label"] = pd.array(true_label, dtype="Int64")
    table["true_signal"] = true_signal
    table["image_signal"] = image_signal
    table["shortcut_marker"] = marker
    table["acquisition_shifted"] = acquisition
    for column, values in extra_columns.items():
        table[column] = values

    name = f"synthetic:{preset}" if preset else "synthetic"
    info = {
        "source": "synthetic",
        "preset": preset,
        "preset_description": preset_descriptions().get(preset) if preset else None,
        "modality": config.modality,
        "config": config.to_dict(),
        "seed": config.seed,
        "ground_truth_columns": ["true_label", "true_signal", "image_signal", "shortcut_marker",
                                 "acquisition_shifted", *extra_columns],
        "attributes": {a: ATTRIBUTES[a].description for a in MODALITY_ATTRIBUTES[config.modality]},
        "affected_groups": {
            k: _affected_group_name(getattr(config, k)) for k in KNOB_TYPES if getattr(config, k).active
        },
        "mask_labels": _MASK_LABELS[config.modality],
        "label_rule": _LABEL_RULES[config.modality],
        "zero_shot": synthetic_prompts(config.modality),
    }
    return MedicalDataset(name=name, table=table, images=images, masks=masks, info=info)


@register_dataset("synthetic")
def create_synthetic(preset: str | None = None, config: Mapping[str, Any] | SyntheticConfig | None = None,
                     n: int | None = None, seed: int | None = None, **overrides: Any) -> MedicalDataset:
    """Registry entry: ``create_dataset("synthetic", preset="cxr-sex-prevalence", n=2000, seed=0)``.

    Give a ``preset`` name or a ``config`` (dict or :class:`SyntheticConfig`), not both; with
    neither, the ``derm-unbiased`` preset.
    """
    if preset is not None and config is not None:
        raise SyntheticConfigError("give either preset or config, not both (use overrides to change a preset)")
    source = config if config is not None else (preset or "derm-unbiased")
    return make_synthetic(source, n=n, seed=seed, **overrides)


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    return preset_descriptions()


# --- stages: who, which split, which label, how much signal ---------------------------------------


def _draw_patients(config: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Patients with constant attributes, each with 1..max images, until there are ``n`` images."""
    n = config.n
    counts = rng.integers(1, config.max_images_per_patient + 1, size=n)
    n_patients = int(np.searchsorted(np.cumsum(counts), n) + 1)
    counts = counts[:n_patients]
    counts[-1] -= counts.sum() - n  # trim the last patient so the total is exactly n

    patients = pd.DataFrame({"patient_id": [f"syn-p{i:06d}" for i in range(n_patients)]})
    for attribute in MODALITY_ATTRIBUTES[config.modality]:
        spec = ATTRIBUTES[attribute]
        knob = config.representation
        share_affected = 0.5
        if knob.active and knob.attribute == attribute:
            group = knob.group or spec.affected
            share_affected = knob.share if group == spec.affected else 1 - knob.share
        in_affected = rng.random(n_patients) < share_affected
        raw = _raw_attribute_values(attribute, in_affected, rng)
        patients[attribute] = raw
        patients[GROUP_PREFIX + attribute] = pd.array(
            np.where(in_affected, spec.affected, spec.other), dtype="string"
        )
    return patients.loc[patients.index.repeat(counts)].reset_index(drop=True)


def _raw_attribute_values(attribute: str, in_affected: np.ndarray, rng: np.random.Generator) -> Any:
    n = len(in_affected)
    if attribute == "sex":
        return pd.array(np.where(in_affected, "female", "male"), dtype="string")
    if attribute == "age":
        return np.where(in_affected, rng.integers(61, 91, n), rng.integers(18, 61, n)).astype(np.int64)
    if attribute == "skin_tone":
        return np.where(in_affected, rng.integers(4, 7, n), rng.integers(1, 4, n)).astype(np.int64)
    if attribute == "race":
        non_white = np.asarray(NON_WHITE_RACES)[rng.integers(0, len(NON_WHITE_RACES), n)]
        return pd.array(np.where(in_affected, non_white, "White"), dtype="string")
    raise AssertionError(attribute)


def _assign_splits(table: pd.DataFrame, config: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Patient-level train/val/test by patient fractions: no patient is in two splits."""
    patients = table["patient_id"].unique()
    order = rng.permutation(len(patients))
    cut_train = round(config.split_fractions["train"] * len(patients))
    cut_val = cut_train + round(config.split_fractions["val"] * len(patients))
    split_of_rank = np.where(np.arange(len(patients)) < cut_train, "train",
                             np.where(np.arange(len(patients)) < cut_val, "val", "test"))
    split_of_patient = dict(zip(patients[order], split_of_rank, strict=True))
    table = table.copy()
    table["split"] = pd.array(table["patient_id"].map(split_of_patient).to_numpy(), dtype="string")
    return table


def _affected_group_name(knob: Knob) -> str | None:
    if knob.attribute is None:
        return None
    return knob.group or ATTRIBUTES[knob.attribute].affected


def _in_affected_group(table: pd.DataFrame, knob: Knob) -> np.ndarray:
    """Rows in the knob's affected group (all False without an attribute); a knob at 0 changes nothing."""
    if knob.attribute is None:
        return np.zeros(len(table), dtype=bool)
    column = table[GROUP_PREFIX + knob.attribute]
    return (column == _affected_group_name(knob)).to_numpy(dtype=bool)


def _draw_labels(config: SyntheticConfig, affected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True labels; the prevalence knob shifts P(y=1) up in the affected group and down elsewhere."""
    half = config.prevalence.strength / 2 if config.prevalence.active else 0.0
    p = np.where(affected, config.base_prevalence + half, config.base_prevalence - half)
    return (rng.random(len(affected)) < p).astype(np.int64)


def _draw_signal(config: SyntheticConfig, true_label: np.ndarray, affected: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Latent severity in [0, 1] (overlapping by label) and the signal actually rendered.

    Severity ~ Beta(2, 5) for negatives, Beta(4, 2.5) for positives by default (oracle AUC about
    0.88 with the default ``signal_noise``; ``severity_negative``/``severity_positive`` change
    them). The difficulty knob scales the gain down and the noise up in the affected group,
    lowering that group's oracle AUC.
    """
    n = len(true_label)
    negative = rng.beta(*config.severity_negative, n)
    positive = rng.beta(*config.severity_positive, n)
    true_signal = np.where(true_label == 1, positive, negative)
    noise = rng.standard_normal(n)
    strength = config.difficulty.strength if config.difficulty.active else 0.0
    gain = np.where(affected, 1.0 - strength, 1.0)
    noise_sd = config.signal_noise * np.where(affected, 1.0 + strength, 1.0)
    # Rendered amplitudes cannot be negative; clipping is monotone, so ranks (AUC) barely change.
    image_signal = np.clip(gain * true_signal + noise_sd * noise, 0.0, 1.5)
    return true_signal, image_signal


def _draw_shortcut_marker(config: SyntheticConfig, split: np.ndarray, true_label: np.ndarray,
                          affected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    knob = config.shortcut
    u = rng.random(len(split))
    if not knob.active:
        return np.zeros(len(split), dtype=bool)
    biased_splits = ["train", "val"] if knob.val_like_train else ["train"]
    in_biased = np.isin(split, biased_splits)
    positive = true_label == 1
    # Training: the marker flags a fraction `strength` of the affected group's positives.
    train_marker = positive & (u < knob.strength)
    if knob.test == "decorrelated":
        # Same marker frequency in the affected group as in training, independent of the label.
        p_marker = knob.strength * _affected_prevalence(config)
        test_marker = u < p_marker
    else:  # reversed: the marker now flags negatives
        test_marker = ~positive & (u < knob.strength)
    return affected & np.where(in_biased, train_marker, test_marker)


def _affected_prevalence(config: SyntheticConfig) -> float:
    """P(y=1) in the shortcut's affected group (accounts for a prevalence knob on the same group)."""
    prevalence, shortcut = config.prevalence, config.shortcut
    if not prevalence.active or prevalence.attribute != shortcut.attribute:
        return config.base_prevalence
    same = _affected_group_name(prevalence) == _affected_group_name(shortcut)
    half = prevalence.strength / 2
    return config.base_prevalence + (half if same else -half)


def _apply_label_noise(config: SyntheticConfig, true_label: np.ndarray, affected: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    knob = config.label_noise
    u = rng.random(len(true_label))
    if not knob.active:
        return true_label.copy()
    rate = np.where(affected, knob.strength, knob.other_rate)
    can_flip = {
        "both": np.ones(len(true_label), dtype=bool),
        "positive_to_negative": true_label == 1,
        "negative_to_positive": true_label == 0,
    }[knob.direction]
    flip = can_flip & (u < rate)
    return np.where(flip, 1 - true_label, true_label)


# --- rendering -------------------------------------------------------------------------------------

_CHUNK = 256  # images rendered together: vectorised, and bounded memory

_MASK_LABELS = {
    "derm": {0: "background", 1: "lesion"},
    "cxr": {0: "background", 1: "lung"},
    "fundus": {0: "background", 1: "disc", 2: "cup"},
    "volume": {0: "background", 1: "lesion"},
}
_LABEL_RULES = {
    "derm": "1 = malignant: larger, darker, irregular and asymmetric lesion",
    "cxr": "1 = disease: a lung opacity",
    "fundus": "1 = glaucoma: larger cup-to-disc ratio",
    "volume": "1 = disease: a brighter lesion blob",
}

# Fitzpatrick-like RGB skin colours for types 1..6 (darkest channel >= 0.29 so that lesions keep
# the same absolute contrast on every tone: no tone is "harder" unless a knob says so).
_SKIN_RGB = np.array([
    [0.96, 0.84, 0.76],
    [0.90, 0.74, 0.63],
    [0.80, 0.62, 0.50],
    [0.68, 0.51, 0.40],
    [0.56, 0.41, 0.33],
    [0.46, 0.34, 0.29],
], dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: (yy, xx), each size × size."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(axis, axis, indexing="ij")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-s.d. low-frequency texture, smoothed over all but the first (batch) axis."""
    white = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(white, sigma=(0,) + (sigma,) * (len(shape) - 1), mode="wrap")
    return smooth / (smooth.std() + 1e-8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _acquire(scene: np.ndarray, shifted: np.ndarray, strength: float, blur_px: float,
             pixel_noise: float, rng: np.random.Generator, channel_axis: bool) -> np.ndarray:
    """Apply the acquisition style to the shifted rows, then sensor noise; return uint8."""
    if strength and shifted.any():
        rows = scene[shifted]
        rows = 0.5 + (rows - 0.5) * (1 - 0.3 * strength) + 0.1 * strength
        spatial = rows.ndim - 1 - int(channel_axis)
        sigma = (0,) + (blur_px * strength,) * spatial + ((0,) if channel_axis else ())
        scene[shifted] = ndimage.gaussian_filter(rows, sigma=sigma, mode="nearest")
    scene += pixel_noise * rng.standard_normal(scene.shape, dtype=np.float32)
    return np.clip(scene * 255 + 0.5, 0, 255).astype(np.uint8)


def _chunks(n: int):
    for start in range(0, n, _CHUNK):
        yield slice(start, min(start + _CHUNK, n))


def _render_derm(config, table, image_signal, marker, acquisition, rng):
    """Skin lesions on Fitzpatrick-toned skin; malignancy = larger, darker, irregular, asymmetric."""
    size = config.image_size
    n = len(image_signal)
    skin_tone = table["skin_tone"].to_numpy(dtype=np.int64)
    yy, xx = _grid(size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    px = size / 64
    for sl in _chunks(n):
        m = sl.stop - sl.start
        v = image_signal[sl].astype(np.float32)[:, None, None]
        cy, cx = (rng.uniform(-0.08, 0.08, (2, m, 1, 1))).astype(np.float32)
        angle = rng.uniform(0, np.pi, (m, 1, 1)).astype(np.float32)
        # Asymmetry: a malignant lesion is stretched along a random axis.
        stretch = np.sqrt(1 + 0.5 * v * rng.uniform(0.5, 1.0, (m, 1, 1)).astype(np.float32))
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        w = -dx * np.sin(angle) + dy * np.cos(angle)
        rho = np.sqrt((u / stretch) ** 2 + (w * stretch) ** 2)
        theta = np.arctan2(w, u)
        # Irregular border: low harmonics whose amplitude grows with the signal.
        phases = rng.uniform(0, 2 * np.pi, (3, m, 1, 1)).astype(np.float32)
        wobble = (np.cos(2 * theta + phases[0]) + np.cos(3 * theta + phases[1]) + np.cos(5 * theta + phases[2])) / 3
        radius = (0.26 + 0.12 * v) * (1 + (0.04 + 0.3 * v) * wobble)
        inside = _sigmoid((radius - rho) / 0.03)
        # A darker eccentric core for malignant lesions.
        core = np.exp(-(((u - 0.08 * v) ** 2 + (w - 0.05) ** 2) / 0.02)) * inside
        darkening = (0.08 + 0.10 * v) * inside + 0.05 * v * core
        skin = _SKIN_RGB[skin_tone[sl] - 1][:, None, None, :]
        texture = _smooth_noise(rng, (m, size, size), 2.0 * px)[..., None]
        scene = skin * (1 + 0.03 * texture) - darkening[..., None] * np.array([0.8, 1.0, 1.0], np.float32)
        ruler = marker[sl]
        if ruler.any():  # a dark ruler with ticks along the bottom edge
            r0, r1 = size - round(8 * px), size - round(4 * px)
            c0, c1 = round(0.12 * size), round(0.88 * size)
            scene[ruler, r0:r1, c0:c1, :] = np.array([0.12, 0.12, 0.18], np.float32)
            scene[ruler, r0 - round(2 * px):r0, c0:c1:max(1, round(4 * px)), :] = 0.12
        images[sl] = _acquire(scene, acquisition[sl], config.acquisition.strength, 1.2 * px,
                              config.pixel_noise, rng, channel_axis=True)
        masks[sl] = inside > 0.5
    return images, masks, {}


def _render_cxr(config, table, image_signal, marker, acquisition, rng):
    """Chest-radiograph-like: dark lung fields, rib bands, bright mediastinum; disease = opacity."""
    size = config.image_size
    n = len(image_signal)
    yy, xx = _grid(size)
    images = np.empty((n, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    px = size / 64
    opacity_side = np.empty(n, dtype=np.int64)
    for sl in _chunks(n):
        m = sl.stop - sl.start
        v = image_signal[sl].astype(np.float32)[:, None, None]
        scale = rng.uniform(0.94, 1.06, (m, 1, 1)).astype(np.float32)  # anatomy varies per image
        shift = rng.uniform(-0.04, 0.04, (m, 1, 1)).astype(np.float32)
        body = 0.30 + 0.30 * np.exp(-((xx / 0.85) ** 4))
        lungs = np.zeros((m, size, size), dtype=np.float32)
        for side in (-1, 1):
            ellipse = ((xx - side * 0.40 * scale - shift) / (0.27 * scale)) ** 2 + ((yy + 0.05) / (0.55 * scale)) ** 2
            lungs = np.maximum(lungs, _sigmoid((1 - ellipse) / 0.08))
        rib_phase = rng.uniform(0, 2 * np.pi, (m, 1, 1)).astype(np.float32)
        ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (4.5 * yy + 0.8 * xx**2) + rib_phase)
        texture = _smooth_noise(rng, (m, size, size), 1.5 * px)
        scene = body - 0.30 * lungs + 0.07 * ribs * lungs + 0.025 * texture
        # Opacity in the lower zone of one lung, brighter with the signal.
        side = rng.choice(np.array([-1, 1]), m)
        opacity_side[sl] = side
        oy = rng.uniform(0.05, 0.3, (m, 1, 1)).astype(np.float32)
        ox = (side[:, None, None] * 0.40 + rng.uniform(-0.05, 0.05, (m, 1, 1))).astype(np.float32)
        blob = np.exp(-(((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * 0.16**2)))
        scene = scene + 0.32 * v * blob * lungs
        tag = marker[sl]
        if tag.any():  # a bright "L" side tag in the top-left corner
            a, b, t = round(3 * px), round(12 * px), max(1, round(2 * px))
            scene[tag, a:b, a:a + t] = 1.0
            scene[tag, b - t:b, a:a + round(6 * px)] = 1.0
        images[sl] = _acquire(scene, acquisition[sl], config.acquisition.strength, 1.2 * px,
                              config.pixel_noise, rng, channel_axis=False)
        masks[sl] = lungs > 0.5
    side_names = np.where(opacity_side < 0, "left_of_image", "right_of_image")
    return images, masks, {"opacity_side": pd.array(side_names, dtype="string")}


def _render_fundus(config, table, image_signal, marker, acquisition, rng):
    """Fundus-like: orange retina, vessels, optic disc with cup; glaucoma = larger cup-to-disc ratio."""
    size = config.image_size
    n = len(image_signal)
    yy, xx = _grid(size)
    r = np.sqrt(yy**2 + xx**2)
    field_of_view = _sigmoid((0.93 - r) / 0.02)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    px = size / 64
    # Cup-to-disc ratio: 0.25 for no signal, about 0.6 for a typical glaucoma signal.
    cdr = np.clip(0.25 + 0.5 * image_signal, 0.1, 0.9)
    eye = rng.choice(np.array(["OD", "OS"]), n)
    for sl in _chunks(n):
        m = sl.stop - sl.start
        side = np.where(eye[sl] == "OD", 1.0, -1.0).astype(np.float32)[:, None, None]
        cy = rng.uniform(-0.06, 0.06, (m, 1, 1)).astype(np.float32)
        cx = (side * 0.40 + rng.uniform(-0.04, 0.04, (m, 1, 1))).astype(np.float32)
        disc_r = (0.20 * rng.uniform(0.92, 1.08, (m, 1, 1))).astype(np.float32)
        cup_r = disc_r * cdr[sl].astype(np.float32)[:, None, None]
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        texture = _smooth_noise(rng, (m, size, size), 2.0 * px)[..., None]
        retina = np.array([0.80, 0.33, 0.15], np.float32) * (1 - 0.35 * r[..., None] ** 2) * (1 + 0.05 * texture)
        # Four vessel arcs leaving the disc towards the macula.
        vessels = np.zeros((m, size, size), dtype=np.float32)
        for bend in (-1.2, -0.5, 0.5, 1.2):
            curve = cy + bend * (xx - cx) ** 2 * rng.uniform(0.8, 1.2, (m, 1, 1)).astype(np.float32)
            vessels = np.maximum(vessels, np.exp(-(((yy - curve) / 0.022) ** 2)))
        scene = retina * (1 - 0.45 * vessels[..., None])
        disc = _sigmoid((disc_r - d) / 0.012)[..., None]
        cup = _sigmoid((cup_r - d) / 0.010)[..., None]
        scene = scene * (1 - disc) + np.array([0.92, 0.62, 0.32], np.float32) * disc
        scene = scene * (1 - cup) + np.array([1.0, 0.95, 0.80], np.float32) * cup
        scene = scene * field_of_view[..., None]
        tag = marker[sl]
        if tag.any():  # a white annotation box in the bottom-right corner (outside the retina)
            a, b = size - round(9 * px), size - round(3 * px)
            scene[tag, a:b, size - round(14 * px):size - round(3 * px), :] = 0.95
        images[sl] = _acquire(scene, acquisition[sl], config.acquisition.strength, 1.2 * px,
                              config.pixel_noise, rng, channel_axis=True)
        masks[sl] = np.where(d < cup_r, 2, np.where(d < disc_r, 1, 0))
    return images, masks, {"eye": pd.array(eye, dtype="string"), "cup_to_disc_ratio": cdr}


def _render_volume(config, table, image_signal, marker, acquisition, rng):
    """Small 3D volumes: body and organ ellipsoids with texture; disease = brighter lesion blob."""
    depth, height, width = config.volume_shape
    n = len(image_signal)
    axes = [(np.arange(k, dtype=np.float32) + 0.5) / k * 2 - 1 for k in (depth, height, width)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    body = _sigmoid((1 - ((zz / 0.95) ** 2 + (yy / 0.85) ** 2 + (xx / 0.85) ** 2)) / 0.08)
    organ = _sigmoid((1 - ((zz / 0.65) ** 2 + ((yy - 0.1) / 0.45) ** 2 + ((xx + 0.15) / 0.45) ** 2)) / 0.08)
    images = np.empty((n, depth, height, width), dtype=np.uint8)
    masks = np.empty((n, depth, height, width), dtype=np.uint8)
    px = height / 32
    for sl in _chunks(n):
        m = sl.stop - sl.start
        v = image_signal[sl].astype(np.float32)[:, None, None, None]
        center = rng.uniform(-0.2, 0.2, (3, m, 1, 1, 1)).astype(np.float32)
        blob = np.exp(-(((zz - center[0]) ** 2 + (yy - 0.1 - center[1]) ** 2 + (xx + 0.15 - center[2]) ** 2)
                        / (2 * 0.15**2)))
        texture = _smooth_noise(rng, (m, depth, height, width), 1.2 * px)
        scene = 0.10 + 0.35 * body + 0.12 * organ + 0.03 * texture * body + 0.35 * v * blob
        rod = marker[sl]
        if rod.any():  # a bright rod in one corner through all slices (like a fiducial marker)
            a, b = round(1 * px), round(4 * px)
            scene[rod, :, a:b, a:b] = 1.0
        images[sl] = _acquire(scene, acquisition[sl], config.acquisition.strength, 1.2 * px,
                              config.pixel_noise, rng, channel_axis=False)
        masks[sl] = blob > 0.5
    return images, masks, {}


_RENDERERS = {
    "derm": _render_derm,
    "cxr": _render_cxr,
    "fundus": _render_fundus,
    "volume": _render_volume,
}


# --- ground truth ----------------------------------------------------------------------------------


def oracle_group_auc(dataset: MedicalDataset, attribute: str, *, split: str | None = None,
                     label: str = "true_label") -> pd.Series:
    """Per-group AUC of the disease signal as rendered in the image (``image_signal``) — the oracle.

    This is the AUC a reader who perfectly measures the lesion would reach in each group, i.e. the
    gap that remains with a perfect model (DATASETS.md); a model's gap beyond it is the model's.
    ``label="label"`` scores against the observed (possibly noisy) labels instead. Groups with one
    class only give NaN; samples with an unknown group are left out.
    """
    from sklearn.metrics import roc_auc_score

    table = dataset.table
    if "image_signal" not in table.columns:
        raise KeyError(f"dataset {dataset.name!r} has no 'image_signal' column: it is not synthetic")
    if split is not None:
        table = table[table["split"] == split]
    groups = table[GROUP_PREFIX + attribute] if GROUP_PREFIX + attribute in table.columns else None
    if groups is None:
        raise KeyError(f"dataset {dataset.name!r} has no attribute {attribute!r}; has {dataset.attributes}")
    result = {}
    for group in sorted(groups.dropna().unique()):
        rows = table[(groups == group).fillna(False).to_numpy(dtype=bool)]
        y = rows[label].to_numpy(dtype=np.int64)
        result[group] = roc_auc_score(y, rows["image_signal"]) if 0 < y.sum() < len(y) else np.nan
    return pd.Series(result, name="oracle_auc", dtype=float).rename_axis(attribute)
