"""Synthetic segmentation data with known, controllable bias in achievable Dice (DATASETS.md, SEGMENTATION.md).

The companion of :mod:`medequity.data.synthetic` (classification) for segmentation: skin lesions
(``derm``, class 1 = lesion), optic disc crops (``fundus``, class 1 = rim, 2 = cup, FairSeg's
coding) and small 3D volumes (``volume``, class 1 = organ). Sensitive attributes, patients and
the patient-level split are drawn as in the classification generator; ``label`` is 1 when the
object is present (``presence``; absent objects give an empty mask).

How an image and its masks are made. Each object has a level function whose zero set is its true
boundary, turned into an approximate signed distance ``d`` in pixels. The image carries the object
as a soft-edged contrast ``s0 = factor · C · sigmoid(d / edge_width)`` along a colour direction
(darker for lesions, brighter for disc/cup and organ) over a background with texture and sensor
noise. Two masks follow:

* the **visible object**: pixels whose noise-free contrast ``s0`` reaches a fixed just-noticeable
  level — half the reference contrast ``C / 2`` (for the cup: the disc contrast plus half the cup
  contrast). At the reference contrast this is the true object. It is the best prediction any
  reader of the image can make (an observer model: contrast below the level is not seen);
* the **annotated mask** (``dataset.masks``): the true object traced with a small, smooth,
  group-independent boundary jitter (``annotation_noise`` pixels, inter-rater variability).

The **oracle Dice** of a sample is the Dice of its visible object against its annotated mask — by
construction, per sample (column ``oracle_dice``; :func:`oracle_group_dice` averages it per
group). It is below 1 even without bias (the annotators' jitter), equal across groups in
expectation, and each knob lowers it in the affected group:

* ``contrast`` (boundary contrast): ``factor = 1 − strength`` in the affected group; the soft edge
  drops below the visible level sooner, so the visible object shrinks inside the annotated one
  (at ``strength ≥ 0.5`` nothing is visible);
* ``annotation`` (annotation style): the affected group's masks are dilated (``pixels > 0``) or
  eroded (``pixels < 0``) by ``|pixels|`` (exact Euclidean morphology), relative to the object;
* ``scale`` (object size): the affected group's objects are ``1 − strength`` times as large, so
  the same boundary jitter costs more Dice;
* ``representation``: share of patients in the affected group (as in the classification
  generator); it does not change the oracle, only how much a trained model sees of each group.

Object size, shape and position are drawn independently of every attribute and of the label
(there is no disease signal that grows the mask, unlike the classification generator's lesions),
so Dice is never confounded with the label; only the ``scale`` knob changes size by group.
Pixel sizes (edge width, jitter, annotation offset) are given at 64 px (32 px height for volumes)
and scale with the image.

Every stage draws from its own child of ``np.random.SeedSequence(seed)`` (patients, split,
presence, geometry, annotation, render): with one seed, two presets that differ by a contrast,
annotation or scale knob give bit-identical images and masks for the unaffected group.

:func:`threshold_segment` is a simple segmenter that knows the contrast direction and the visible
levels (background from the image border, slight smoothing, thresholds): with no knob its
per-group Dice gap is ~0, and each knob lowers the affected group's Dice.
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
from medequity.data.synthetic import (
    _SKIN_RGB,
    ATTRIBUTES,
    MODALITY_ATTRIBUTES,
    Knob,
    RepresentationKnob,
    StrengthKnob,
    SyntheticConfigError,
    _affected_group_name,
    _assign_splits,
    _check_int,
    _check_range,
    _draw_patients,
    _in_affected_group,
    _smooth_noise,
    config_kwargs,
)
from medequity.metrics.segmentation import dice_per_sample
from medequity.registry import Registry

SEG_MODALITIES = ("derm", "fundus", "volume")
MASK_LABELS = {
    "derm": {0: "background", 1: "lesion"},
    "fundus": {0: "background", 1: "rim", 2: "cup"},
    "volume": {0: "background", 1: "organ"},
}


# --- knobs and configuration ---------------------------------------------------------------------


@dataclass
class ContrastKnob(StrengthKnob):
    """Boundary contrast: the object/background contrast is multiplied by ``1 − strength`` in the
    affected group; the visible object shrinks inside the annotated one (nothing visible at 0.5)."""


@dataclass
class AnnotationKnob(Knob):
    """Annotation style: the affected group's masks are dilated (``pixels > 0``) or eroded
    (``pixels < 0``) by ``|pixels|`` pixels (at 64 px) relative to the object."""

    pixels: float = 0.0

    @property
    def active(self) -> bool:
        return self.pixels != 0.0


@dataclass
class ScaleKnob(StrengthKnob):
    """Object scale: the affected group's objects are ``1 − strength`` times as large (linear)."""

    def strength_range(self) -> tuple[float, float]:
        return (0.0, 0.8)


SEG_KNOB_TYPES: dict[str, type[Knob]] = {
    "representation": RepresentationKnob,
    "contrast": ContrastKnob,
    "annotation": AnnotationKnob,
    "scale": ScaleKnob,
}


@dataclass
class SegmentationConfig:
    """Everything that defines a synthetic segmentation dataset; knobs default to off."""

    modality: str = "derm"
    n: int = 1000
    seed: int = 0
    image_size: int = 64  # 2D images are image_size × image_size
    volume_shape: tuple[int, int, int] = (16, 32, 32)  # depth, height, width
    max_images_per_patient: int = 3
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    presence: float = 1.0  # P(object present); label = 1 when present, empty mask otherwise
    object_contrast: float = 0.16  # reference contrast C on the [0, 1] intensity scale (per class for fundus)
    edge_width: float = 1.5  # soft-edge width in pixels (at 64 px)
    annotation_noise: float = 1.0  # s.d. of the annotators' smooth boundary jitter, pixels (at 64 px)
    pixel_noise: float = 0.03  # s.d. of sensor noise
    elongation: float = 1.4  # derm lesions: aspect ratio (long / short axis) drawn uniformly in [1, elongation]
    irregularity: float = 0.12  # derm lesions: border wobble amplitude drawn uniformly in [0, irregularity]
    representation: RepresentationKnob = field(default_factory=RepresentationKnob)
    contrast: ContrastKnob = field(default_factory=ContrastKnob)
    annotation: AnnotationKnob = field(default_factory=AnnotationKnob)
    scale: ScaleKnob = field(default_factory=ScaleKnob)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentationConfig:
        config = cls(**config_kwargs(cls, data, SEG_KNOB_TYPES, _knob, "segmentation config"))
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["volume_shape"] = list(self.volume_shape)
        return out

    def validate(self) -> None:
        if self.modality not in SEG_MODALITIES:
            raise SyntheticConfigError(f"modality {self.modality!r} is not one of {list(SEG_MODALITIES)}")
        _check_int("n", self.n, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("image_size", self.image_size, minimum=16)
        _check_int("max_images_per_patient", self.max_images_per_patient, minimum=1)
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 8:
            raise SyntheticConfigError(f"volume_shape must be 3 sizes >= 8, got {self.volume_shape}")
        _check_range("presence", self.presence, 0.0, 1.0)
        _check_range("object_contrast", self.object_contrast, 0.02, 0.3)
        _check_range("edge_width", self.edge_width, 0.1, 10.0)
        _check_range("annotation_noise", self.annotation_noise, 0.0, 10.0)
        _check_range("pixel_noise", self.pixel_noise, 0.0, 1.0)
        _check_range("elongation", self.elongation, 1.0, 4.0)
        _check_range("irregularity", self.irregularity, 0.0, 0.5)
        _check_range("representation.share", self.representation.share, 0.0, 1.0)
        _check_range("annotation.pixels", self.annotation.pixels, -20.0, 20.0)
        attributes = MODALITY_ATTRIBUTES[self.modality]
        for name in SEG_KNOB_TYPES:
            knob: Knob = getattr(self, name)
            if not knob.active:
                continue
            if knob.attribute not in attributes:
                raise SyntheticConfigError(
                    f"{name}.attribute is {knob.attribute!r}; for modality {self.modality!r} choose one of {list(attributes)}"
                )
            spec = ATTRIBUTES[knob.attribute]
            if knob.group is not None and knob.group not in (spec.other, spec.affected):
                raise SyntheticConfigError(
                    f"{name}.group is {knob.group!r}; attribute {knob.attribute!r} has groups {[spec.other, spec.affected]}"
                )
            if isinstance(knob, StrengthKnob):
                low, high = knob.strength_range()
                _check_range(f"{name}.strength", knob.strength, low, high)

    @property
    def pixel_scale(self) -> float:
        """Pixels per reference pixel: image_size / 64 (2D), height / 32 (volumes)."""
        return self.volume_shape[1] / 32 if self.modality == "volume" else self.image_size / 64


def _knob(name: str, value: Any) -> Knob:
    knob_type = SEG_KNOB_TYPES[name]
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


# --- presets -------------------------------------------------------------------------------------

SEG_PRESETS: Registry[dict[str, Any]] = Registry("synthetic segmentation preset")
register_seg_preset = SEG_PRESETS.register


def seg_preset_descriptions() -> dict[str, str]:
    """Preset name -> the first line of its docstring."""
    return {name: (SEG_PRESETS.get(name).__doc__ or "").strip().splitlines()[0] for name in SEG_PRESETS.names()}


@register_seg_preset("seg-derm-unbiased")
def seg_derm_unbiased() -> dict[str, Any]:
    """Skin-lesion segmentation, no bias: every group has the same achievable Dice.

    Skin tone is visible (the skin is painted in its Fitzpatrick tone) but lesions keep the same
    absolute contrast, size and annotation style on every tone.
    """
    return {"modality": "derm"}


@register_seg_preset("seg-derm-irregular")
def seg_derm_irregular() -> dict[str, Any]:
    """Skin lesions of irregular, elongated shape (aspect ratio up to 3, lobulated border), no bias.

    Shapes a filled bounding box fits less well than the default near-elliptical lesions (box-fill
    Dice 0.77 instead of 0.85 at 48 px), so a box-prompted segmenter must follow the border; the
    unbiased pre-training data of the demo's tiny SAM (``synthetic:seg-derm-irregular``).
    """
    return {"modality": "derm", "elongation": 3.0, "irregularity": 0.5}


@register_seg_preset("seg-derm-lesion")
def seg_derm_lesion() -> dict[str, Any]:
    """Skin-lesion segmentation, realistic mix: dark skin (IV–VI) is 25% of patients and its lesions have 25% less contrast.

    Two mechanisms at once, as in dermatology data sets: under-representation and fainter lesion
    borders on darker skin; the oracle Dice of IV–VI is lower (the contrast part of the gap).
    """
    return {
        "modality": "derm",
        "representation": {"attribute": "skin_tone", "share": 0.25},
        "contrast": {"attribute": "skin_tone", "strength": 0.25},
    }


@register_seg_preset("seg-derm-contrast")
def seg_derm_contrast() -> dict[str, Any]:
    """Skin lesions, boundary contrast: lesion/skin contrast 35% lower on skin types IV–VI.

    The soft lesion border fades below the visible level sooner on dark skin: the visible lesion
    is smaller than the annotated one, so even a perfect segmenter loses Dice there.
    """
    return {"modality": "derm", "contrast": {"attribute": "skin_tone", "strength": 0.35}}


@register_seg_preset("seg-derm-annotation")
def seg_derm_annotation() -> dict[str, Any]:
    """Skin lesions, annotation style: masks of skin types IV–VI are drawn 2 px (at 64 px) wider than the lesion."""
    return {"modality": "derm", "annotation": {"attribute": "skin_tone", "pixels": 2.0}}


@register_seg_preset("seg-derm-scale")
def seg_derm_scale() -> dict[str, Any]:
    """Skin lesions, object scale: lesions of patients over 60 are 40% smaller (linear).

    The same boundary uncertainty (annotation jitter, soft edge) costs a small object more Dice.
    """
    return {"modality": "derm", "scale": {"attribute": "age", "strength": 0.4}}


@register_seg_preset("seg-derm-representation")
def seg_derm_representation() -> dict[str, Any]:
    """Skin lesions, representation: only 15% of patients have skin types IV–VI (oracle Dice unchanged)."""
    return {"modality": "derm", "representation": {"attribute": "skin_tone", "share": 0.15}}


@register_seg_preset("seg-fundus-rimcup")
def seg_fundus_rimcup() -> dict[str, Any]:
    """Optic disc crops with rim (1) and cup (2) masks, FairSeg's coding; no bias."""
    return {"modality": "fundus"}


@register_seg_preset("seg-fundus-race-contrast")
def seg_fundus_race_contrast() -> dict[str, Any]:
    """Optic disc crops, boundary contrast: disc and cup contrast 15% lower for non-White patients.

    The cup is seen against the disc, so its visible part shrinks most (at 1/3 less contrast the
    cup would vanish: its peak no longer reaches the disc level plus half the cup contrast).
    """
    return {"modality": "fundus", "contrast": {"attribute": "race", "strength": 0.15}}


@register_seg_preset("seg-organ-3d")
def seg_organ_3d() -> dict[str, Any]:
    """Small 3D volumes (16×32×32) with one organ (class 1); no bias."""
    return {"modality": "volume"}


@register_seg_preset("seg-organ-3d-scale")
def seg_organ_3d_scale() -> dict[str, Any]:
    """Small 3D volumes, object scale: the organ is 30% smaller (linear) in women."""
    return {"modality": "volume", "scale": {"attribute": "sex", "strength": 0.3}}


def resolve_segmentation_config(preset_or_config: str | Mapping[str, Any] | SegmentationConfig = "seg-derm-unbiased",
                                **overrides: Any) -> tuple[SegmentationConfig, str | None]:
    """A validated config from a preset name, a dict or a config plus overrides (knob dicts merge)."""
    preset = None
    if isinstance(preset_or_config, str):
        preset = preset_or_config
        base = SEG_PRESETS.create(preset_or_config)
    elif isinstance(preset_or_config, SegmentationConfig):
        base = preset_or_config.to_dict()
    elif isinstance(preset_or_config, Mapping):
        base = dict(preset_or_config)
    else:
        raise SyntheticConfigError(
            f"expected a preset name, a config dict or a SegmentationConfig, got {type(preset_or_config).__name__}"
        )
    merged = dict(base)
    for key, value in overrides.items():
        if key in SEG_KNOB_TYPES and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return SegmentationConfig.from_dict(merged), preset


# --- generation ----------------------------------------------------------------------------------

_STAGES = ("patients", "split", "presence", "geometry", "annotation", "render")
_CHUNK = 256


@dataclass
class _Geometry:
    """Per-chunk object geometry: signed distances (pixels) of each class's true boundary."""

    distance: list[np.ndarray]  # one (m, *spatial) array per nested class level (outermost first)
    contrasts: list[float]  # reference contrast of each level
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def make_synthetic_segmentation(preset_or_config: str | Mapping[str, Any] | SegmentationConfig = "seg-derm-unbiased",
                                *, n: int | None = None, seed: int | None = None, image_size: int | None = None,
                                **overrides: Any) -> MedicalDataset:
    """Generate a synthetic segmentation dataset (``task="segmentation"``, in-memory images and masks).

    ``make_synthetic_segmentation("seg-derm-contrast", n=500, seed=0, image_size=64)``; overrides
    replace config keys (``contrast={"strength": 0.2}`` merges into the preset's knob). For
    volumes ``image_size`` sets height and width (depth = image_size // 2).
    """
    dataset, _ = _generate(preset_or_config, n=n, seed=seed, image_size=image_size, **overrides)
    return dataset


def _generate(preset_or_config: Any, *, n: int | None = None, seed: int | None = None, image_size: int | None = None,
              **overrides: Any) -> tuple[MedicalDataset, np.ndarray]:
    """The dataset and the visible-object class maps (the oracle predictions)."""
    if n is not None:
        overrides["n"] = n
    if seed is not None:
        overrides["seed"] = seed
    if image_size is not None:
        overrides["image_size"] = image_size
        base_modality = overrides.get("modality")
        if base_modality is None:
            probe, _ = resolve_segmentation_config(preset_or_config)
            base_modality = probe.modality
        if base_modality == "volume" and "volume_shape" not in overrides:
            overrides["volume_shape"] = (max(8, image_size // 2), image_size, image_size)
    config, preset = resolve_segmentation_config(preset_or_config, **overrides)
    streams = dict(zip(_STAGES, np.random.SeedSequence(config.seed).spawn(len(_STAGES)), strict=True))
    rng = {stage: np.random.default_rng(s) for stage, s in streams.items()}

    table = _draw_patients(config, rng["patients"])  # duck-typed: reads n, modality, representation
    table = _assign_splits(table, config, rng["split"])
    n_rows = len(table)
    present = rng["presence"].random(n_rows) < config.presence
    affected = {name: _in_affected_group(table, getattr(config, name)) & getattr(config, name).active
                for name in SEG_KNOB_TYPES}
    contrast_factor = np.where(affected["contrast"], 1.0 - config.contrast.strength, 1.0)
    size_factor = np.where(affected["scale"], 1.0 - config.scale.strength, 1.0)
    offset_px = np.where(affected["annotation"], config.annotation.pixels * config.pixel_scale, 0.0)

    render = _RENDERERS[config.modality]
    images, masks, visible, extra = render(config, table, present, contrast_factor, size_factor, offset_px, rng)

    classes = sorted(c for c in MASK_LABELS[config.modality] if c)
    oracle = dice_per_sample(visible, masks, classes=classes)
    table.insert(0, "sample_id", [f"syn-seg-{config.modality}-{i:06d}" for i in range(n_rows)])
    table.insert(2, "label", pd.array(present.astype(np.int64), dtype="Int64"))
    table["object_present"] = present
    table["contrast_factor"] = contrast_factor
    table["size_factor"] = size_factor
    table["annotation_offset_px"] = offset_px
    spatial_axes = tuple(range(1, masks.ndim))
    table["annotated_area"] = (masks > 0).sum(axis=spatial_axes)
    table["visible_area"] = (visible > 0).sum(axis=spatial_axes)
    table["oracle_dice"] = oracle.values
    if len(classes) > 1:
        for k, c in enumerate(classes):
            table[f"oracle_dice:{MASK_LABELS[config.modality][c]}"] = oracle.per_class[:, k]
    for column, values in extra.items():
        table[column] = values

    name = f"synthetic-segmentation:{preset}" if preset else "synthetic-segmentation"
    info = {
        "source": "synthetic",
        "preset": preset,
        "preset_description": seg_preset_descriptions().get(preset) if preset else None,
        "modality": config.modality,
        "config": config.to_dict(),
        "seed": config.seed,
        "mask_labels": MASK_LABELS[config.modality],
        "classes": [MASK_LABELS[config.modality][k] for k in sorted(MASK_LABELS[config.modality])],  # as the loaders
        "label_rule": "1 = the object is present (its mask is not empty)",
        "contrast_direction": _DIRECTIONS[config.modality].tolist(),
        "visibility_levels": _levels(config),
        "ground_truth_columns": ["object_present", "contrast_factor", "size_factor", "annotation_offset_px",
                                 "annotated_area", "visible_area", "oracle_dice", *extra],
        "attributes": {a: ATTRIBUTES[a].description for a in MODALITY_ATTRIBUTES[config.modality]},
        "affected_groups": {k: _affected_group_name(getattr(config, k)) for k in SEG_KNOB_TYPES if getattr(config, k).active},
        "oracle": "Dice of the visible object (noise-free contrast >= the visibility level) vs the annotated mask",
    }
    dataset = MedicalDataset(name=name, table=table, task="segmentation", images=images, masks=masks, info=info)
    return dataset, visible


@register_dataset("synthetic-segmentation")
def create_synthetic_segmentation(preset: str | None = None, config: Mapping[str, Any] | SegmentationConfig | None = None,
                                  **overrides: Any) -> MedicalDataset:
    """Registry entry: ``create_dataset("synthetic-segmentation", preset="seg-derm-contrast", n=500)``."""
    if preset is not None and config is not None:
        raise SyntheticConfigError("give either preset or config, not both (use overrides to change a preset)")
    source = config if config is not None else (preset or "seg-derm-unbiased")
    return make_synthetic_segmentation(source, **overrides)


def list_segmentation_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    return seg_preset_descriptions()


# --- rendering -----------------------------------------------------------------------------------

# Colour direction of the object contrast (mean absolute value 1): lesions darken skin (more in
# green/blue), disc and cup brighten the retina, the organ brightens the body.
_DIRECTIONS = {
    "derm": -np.array([0.8, 1.0, 1.0]) / (2.8 / 3),
    "fundus": np.array([0.55, 1.25, 1.2]),
    "volume": np.array([1.0]),
}
_FUNDUS_CUP_RATIO = 1.0  # cup contrast relative to the disc contrast


def _levels(config: SegmentationConfig) -> list[float]:
    """Visibility level of each class (nested: class k is where s0 >= level k)."""
    c = config.object_contrast
    if config.modality == "fundus":
        return [c / 2, c + _FUNDUS_CUP_RATIO * c / 2]
    return [c / 2]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _signed_distance(level: np.ndarray, spatial_axes: tuple[int, ...]) -> np.ndarray:
    """First-order signed distance (pixels) to the zero set of ``level`` (positive inside)."""
    gradients = np.gradient(level, axis=spatial_axes)
    norm = np.sqrt(sum(g.astype(np.float64) ** 2 for g in gradients))
    return level / np.maximum(norm, 1e-3)


def _morph(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Dilate (pixels > 0) or erode (pixels < 0) a binary mask by |pixels| (Euclidean)."""
    if pixels == 0 or not mask.any():
        return mask
    if pixels > 0:
        return ndimage.distance_transform_edt(~mask) <= pixels
    padded = np.pad(mask, 1, constant_values=False)  # the image border is background
    inner = ndimage.distance_transform_edt(padded) > -pixels
    return inner[(slice(1, -1),) * mask.ndim]


def _compose(config: SegmentationConfig, geometry: _Geometry, present: np.ndarray, contrast_factor: np.ndarray,
             offset_px: np.ndarray, rng_annotation: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contrast map s0 (float64), visible class map and annotated class map of one chunk."""
    px = config.pixel_scale
    width = config.edge_width * px
    spatial = geometry.distance[0].shape[1:]
    m = len(present)
    expand = (slice(None),) + (None,) * len(spatial)
    factor = (contrast_factor * present)[expand]
    s0 = np.zeros((m, *spatial))
    for distance, contrast in zip(geometry.distance, geometry.contrasts):
        s0 += contrast * _sigmoid(distance / width)
    s0 *= factor
    visible = np.zeros((m, *spatial), dtype=np.uint8)
    for k, level in enumerate(_levels(config), start=1):
        visible[s0 >= level] = k
    annotated = np.zeros((m, *spatial), dtype=np.uint8)
    outer: np.ndarray | None = None
    for k, distance in enumerate(geometry.distance, start=1):
        jitter = _smooth_noise(rng_annotation, (m, *spatial), 3.0 * px).astype(np.float64)
        traced = (distance + config.annotation_noise * px * jitter >= 0) & present[expand]
        for i in np.flatnonzero(offset_px):
            traced[i] = _morph(traced[i], float(offset_px[i]))
        if outer is not None:
            traced &= outer  # the cup lies inside the disc
        annotated[traced] = k
        outer = traced
    return s0, visible, annotated


def _finish(scene: np.ndarray, config: SegmentationConfig, rng: np.random.Generator) -> np.ndarray:
    scene += config.pixel_noise * rng.standard_normal(scene.shape, dtype=np.float32)
    return np.clip(scene * 255 + 0.5, 0, 255).astype(np.uint8)


def _grid2d(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    return np.meshgrid(axis, axis, indexing="ij")


def _render_derm(config, table, present, contrast_factor, size_factor, offset_px, rng):
    """Skin lesions on Fitzpatrick-toned skin; the mask is the lesion."""
    size = config.image_size
    n = len(table)
    px = config.pixel_scale
    yy, xx = _grid2d(size)
    # Skin tones of the classification generator, compressed away from 0 and 1 so that neither
    # the lesion nor the noise clips on any tone.
    skin_rgb = (_SKIN_RGB.astype(np.float64) * 0.9 + 0.05).astype(np.float32)
    tone = table["skin_tone"].to_numpy(dtype=np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    visible = np.empty((n, size, size), dtype=np.uint8)
    g, a, r = rng["geometry"], rng["annotation"], rng["render"]
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        cy, cx = g.uniform(-0.1, 0.1, (2, m, 1, 1))
        angle = g.uniform(0, np.pi, (m, 1, 1))
        stretch = np.sqrt(g.uniform(1.0, config.elongation, (m, 1, 1)))
        amplitude = g.uniform(0.0, config.irregularity, (m, 1, 1))
        phases = g.uniform(0, 2 * np.pi, (3, m, 1, 1))
        base = g.uniform(0.22, 0.34, (m, 1, 1)) * size_factor[sl][:, None, None]
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        w = -dx * np.sin(angle) + dy * np.cos(angle)
        rho = np.sqrt((u / stretch) ** 2 + (w * stretch) ** 2)
        theta = np.arctan2(w, u)
        wobble = (np.cos(2 * theta + phases[0]) + np.cos(3 * theta + phases[1]) + np.cos(5 * theta + phases[2])) / 3
        level = (base * (1 + amplitude * wobble) - rho) * (size / 2)
        geometry = _Geometry([_signed_distance(level, (1, 2))], [config.object_contrast])
        s0, visible[sl], masks[sl] = _compose(config, geometry, present[sl], contrast_factor[sl], offset_px[sl], a)
        texture = _smooth_noise(r, (m, size, size), 2.0 * px)[..., None]
        scene = skin_rgb[tone[sl] - 1][:, None, None, :] + 0.02 * texture
        scene = scene + (s0[..., None] * _DIRECTIONS["derm"]).astype(np.float32)
        images[sl] = _finish(scene, config, r)
    return images, masks, visible, {}


def _render_fundus(config, table, present, contrast_factor, size_factor, offset_px, rng):
    """Optic disc crops: orange retina with vessels, a bright disc with a brighter cup."""
    size = config.image_size
    n = len(table)
    px = config.pixel_scale
    yy, xx = _grid2d(size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    visible = np.empty((n, size, size), dtype=np.uint8)
    retina = np.array([0.72, 0.33, 0.16], np.float32)
    cup_to_disc = np.empty(n)
    g, a, r = rng["geometry"], rng["annotation"], rng["render"]
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        cy, cx = g.uniform(-0.1, 0.1, (2, m, 1, 1))
        disc_r = g.uniform(0.30, 0.40, (m, 1, 1)) * size_factor[sl][:, None, None]
        aspect = g.uniform(0.9, 1.1, (m, 1, 1))  # vertically elongated or flattened disc
        cdr = g.uniform(0.3, 0.65, (m, 1, 1))
        cup_shift = g.uniform(-0.1, 0.1, (2, m, 1, 1)) * disc_r * (1 - cdr)
        cup_to_disc[sl] = cdr[:, 0, 0]
        disc_rho = np.sqrt(((yy - cy) / aspect) ** 2 + (xx - cx) ** 2)
        cup_rho = np.sqrt(((yy - cy - cup_shift[0]) / aspect) ** 2 + (xx - cx - cup_shift[1]) ** 2)
        disc_level = (disc_r - disc_rho) * (size / 2)
        cup_level = (disc_r * cdr - cup_rho) * (size / 2)
        c = config.object_contrast
        geometry = _Geometry([_signed_distance(disc_level, (1, 2)), _signed_distance(cup_level, (1, 2))],
                             [c, _FUNDUS_CUP_RATIO * c])
        s0, visible[sl], masks[sl] = _compose(config, geometry, present[sl], contrast_factor[sl], offset_px[sl], a)
        bend = r.uniform(-0.8, 0.8, (2, m, 1, 1))
        vessels = np.maximum(np.exp(-(((xx - cx - bend[0] * (yy - cy) ** 2) / 0.03) ** 2)),
                             np.exp(-(((xx - cx - 0.1 - bend[1] * (yy - cy) ** 2) / 0.02) ** 2)))
        texture = _smooth_noise(r, (m, size, size), 2.0 * px)[..., None]
        scene = retina + 0.02 * texture - (0.03 * vessels[..., None]).astype(np.float32) * np.array([1.0, 1.5, 1.0], np.float32)
        scene = scene + (s0[..., None] * _DIRECTIONS["fundus"]).astype(np.float32)
        images[sl] = _finish(scene, config, r)
    return images, masks, visible, {"cup_to_disc_ratio": cup_to_disc}


def _render_volume(config, table, present, contrast_factor, size_factor, offset_px, rng):
    """Small 3D volumes: a textured body filling the field of view and one brighter organ (class 1)."""
    depth, height, width = config.volume_shape
    n = len(table)
    px = config.pixel_scale
    axes = [np.arange(k, dtype=np.float64) - (k - 1) / 2 for k in (depth, height, width)]  # voxel units
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    images = np.empty((n, depth, height, width), dtype=np.uint8)
    masks = np.empty((n, depth, height, width), dtype=np.uint8)
    visible = np.empty((n, depth, height, width), dtype=np.uint8)
    g, a, r = rng["geometry"], rng["annotation"], rng["render"]
    e = (slice(None), None, None, None)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        f = size_factor[sl][e]
        rz = g.uniform(0.20, 0.28, m)[e] * depth * f
        ry = g.uniform(0.20, 0.28, m)[e] * height * f
        rx = g.uniform(0.20, 0.28, m)[e] * width * f
        cz = g.uniform(-0.05, 0.05, m)[e] * depth
        cy = g.uniform(-0.08, 0.08, m)[e] * height
        cx = g.uniform(-0.08, 0.08, m)[e] * width
        rho = np.sqrt(((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        level = (1 - rho) * np.minimum(np.minimum(rz, ry), rx)
        geometry = _Geometry([_signed_distance(level, (1, 2, 3))], [config.object_contrast])
        s0, visible[sl], masks[sl] = _compose(config, geometry, present[sl], contrast_factor[sl], offset_px[sl], a)
        texture = _smooth_noise(r, (m, depth, height, width), 1.2 * px)
        scene = (0.35 + 0.02 * texture + s0).astype(np.float32)
        images[sl] = _finish(scene, config, r)
    return images, masks, visible, {}


_RENDERERS = {"derm": _render_derm, "fundus": _render_fundus, "volume": _render_volume}


# --- ground truth and a reference segmenter ------------------------------------------------------


def oracle_group_dice(dataset: MedicalDataset, attribute: str, *, split: str | None = None,
                      column: str = "oracle_dice") -> pd.Series:
    """Mean oracle Dice per group: the Dice a perfect segmenter (the visible object) reaches.

    ``column="oracle_dice:cup"`` (fundus) gives one class. Samples whose oracle Dice is undefined
    (no object: both masks empty) and samples with an unknown group are left out.
    """
    table = dataset.table
    if column not in table.columns:
        raise KeyError(f"dataset {dataset.name!r} has no {column!r} column: it is not synthetic segmentation data")
    if split is not None:
        table = table[table["split"] == split]
    group_column = GROUP_PREFIX + attribute
    if group_column not in table.columns:
        raise KeyError(f"dataset {dataset.name!r} has no attribute {attribute!r}; has {dataset.attributes}")
    values = table.groupby(table[group_column].astype(object), dropna=True)[column].mean()
    return values.astype(float).rename("oracle_dice").rename_axis(attribute)


def threshold_segment(dataset: MedicalDataset, *, smooth: float = 1.0) -> np.ndarray:
    """A simple reference segmenter for this generator's data: class maps shaped like ``dataset.masks``.

    Background from the median of a 2-pixel border (per channel), contrast = projection of the
    image minus background on the known contrast direction, Gaussian smoothing (``smooth``
    pixels at 64 px), then the generator's visibility levels. It knows nothing about groups.
    """
    if dataset.images is None or "visibility_levels" not in dataset.info:
        raise ValueError(f"dataset {dataset.name!r} is not synthetic segmentation data with in-memory images")
    direction = np.asarray(dataset.info["contrast_direction"], dtype=np.float32)
    levels = dataset.info["visibility_levels"]
    images = dataset.images.astype(np.float32) / 255
    if direction.size == 1:
        images = images[..., None]
    spatial = images.ndim - 2
    border = np.ones(images.shape[1:-1], dtype=bool)
    inner = (slice(None),) * (spatial - 2) + (slice(2, -2), slice(2, -2))
    border[inner] = False
    background = np.median(images[:, border, :], axis=1)  # (n, channels)
    background = background.reshape((len(images),) + (1,) * spatial + (-1,))
    contrast = ((images - background) @ direction) / float(direction @ direction)
    config = dataset.info.get("config", {})
    size = config.get("volume_shape", [0, 32])[1] / 32 if dataset.info.get("modality") == "volume" else images.shape[1] / 64
    if smooth:
        contrast = ndimage.gaussian_filter(contrast, sigma=(0,) + (smooth * size,) * spatial)
    out = np.zeros(contrast.shape, dtype=np.uint8)
    for k, level in enumerate(levels, start=1):
        out[contrast >= level] = k
    return out


__all__ = [
    "SEG_MODALITIES",
    "SEG_PRESETS",
    "AnnotationKnob",
    "ContrastKnob",
    "ScaleKnob",
    "SegmentationConfig",
    "create_synthetic_segmentation",
    "list_segmentation_presets",
    "make_synthetic_segmentation",
    "oracle_group_dice",
    "resolve_segmentation_config",
    "threshold_segment",
]
