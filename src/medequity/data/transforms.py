"""Image preprocessing: 2D, 2.5D (3D volumes for 2D models) and 3D (FairMedFM App. D.1.1).

FairMedFM D.1.1: "For 2D datasets, we resize all images to 256×256 and then apply CenterCrop to
achieve a size of 224×224. All datasets are normalized using the ImageNet mean and standard
deviation [...]. For 3D datasets, we utilize a 2.5D loading approach. Initially, the volumes are
resized to a longitudinal axis size of 32. Subsequently, slices are processed independently through
the 2D pre-processing pipeline [...]. The final volume-wise prediction is obtained by maximizing the
predictions of all slices in the volume."

Transforms are small dataclasses: their fields are the whole configuration, so ``config()`` gives
a plain dict (for YAML configs and feature-cache keys) and ``build_transform(config)`` rebuilds the
same transform. Names in the registry: ``"2d"``, ``"2d-train"``, ``"2.5d"``, ``"3d"``.

Library choice: torchvision for 2D (its ``Resize``/``CenterCrop``/``RandomResizedCrop`` are the
reference ImageNet pipeline that the foundation models were trained with, and they work on batches
of slices at once); MONAI for volumes (``ScaleIntensity``, ``ScaleIntensityRange``, ``Resize`` with
``-1`` = "keep this axis", channel-first handling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision.transforms import v2

from medequity.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FAIRMEDFM_NUM_SLICES = 32  # D.1.1: volumes resized to 32 slices along the longitudinal axis

TRANSFORMS: Registry[Callable[..., torch.Tensor]] = Registry("transform")


# ---------------------------------------------------------------------------------------------
# Array -> tensor conversion
# ---------------------------------------------------------------------------------------------


def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 2D image as a float32 tensor (C, H, W) with intensities in [0, 1].

    Accepts what :meth:`MedicalDataset.load_image` returns: NumPy HxW (grayscale) or HxWxC
    (C = 1, 3 or 4; alpha dropped), or a tensor already laid out CxH xW / HxW. Integer images are
    divided by their type's maximum (uint8 → /255, uint16 → /65535); float images are taken to be
    in [0, 1] already (the synthetic generator's convention).

    Hand-written rather than ``v2.ToImage()`` + ``v2.ToDtype(scale=True)``: ToImage treats every
    3-D input as HxWxC, but tensors here come as CxHxW, and it warns on the read-only arrays that
    ``np.asarray(PIL image)`` gives.
    """
    if isinstance(image, torch.Tensor):
        tensor = image
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and array.shape[-1] in (1, 3, 4):
            array = np.moveaxis(array, -1, 0)
        else:
            raise ValueError(f"expected an HxW or HxWxC image, got an array of shape {array.shape}")
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # PIL-backed arrays are read-only; torch wants to own memory
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.ndim != 3:
        raise ValueError(f"expected a CxHxW tensor, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 4:  # RGBA: the alpha channel carries no image content
        tensor = tensor[:3]
    if tensor.is_floating_point():
        return tensor.to(torch.float32)
    max_value = torch.iinfo(tensor.dtype).max
    return tensor.to(torch.float32) / max_value


def volume_to_tensor(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 3D volume (X, Y, Z) as a float32 tensor with a leading channel axis: (1, X, Y, Z)."""
    if isinstance(volume, torch.Tensor):
        tensor = volume.to(torch.float32)
    else:  # asarray with a dtype also fixes the big-endian byte order some NIfTI files use
        tensor = torch.from_numpy(np.asarray(volume, dtype=np.float32))
    if tensor.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got shape {tuple(tensor.shape)}")
    return tensor.unsqueeze(0)


def _scale_intensity(volume: torch.Tensor, intensity_range: tuple[float, float] | None) -> torch.Tensor:
    """Map intensities to [0, 1]: a fixed window (e.g. CT Hounsfield units) or the volume's min–max."""
    from monai.transforms import ScaleIntensity, ScaleIntensityRange

    if intensity_range is None:
        scaler = ScaleIntensity(minv=0.0, maxv=1.0)
    else:
        low, high = intensity_range
        scaler = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return _plain_tensor(scaler(volume))


def _plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """MONAI returns ``MetaTensor``s; a plain tensor collates and serialises like any other."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


# ---------------------------------------------------------------------------------------------
# 2D
# ---------------------------------------------------------------------------------------------


@dataclass
class Image2DTransform:
    """2D pipeline: resize to ``resize`` → centre crop ``crop`` → channels → normalise (D.1.1).

    ``keep_aspect_ratio=False`` (the default) resizes to ``resize``×``resize`` as FairMedFM D.1.1
    states; ``True`` resizes the shorter side to ``resize`` (torchvision's ImageNet recipe). With
    ``train=True`` the resize + centre crop become ``RandomResizedCrop(crop, crop_scale)`` and a
    horizontal flip with probability ``flip_probability`` (set it to 0 where laterality matters,
    e.g. chest X-rays). Grayscale images are replicated to ``channels=3``; RGB images become one
    luminance channel when ``channels=1``. Output: float32 tensor (channels, crop, crop).
    """

    name: ClassVar[str] = "2d"

    resize: int | None = 256
    crop: int | None = 224
    keep_aspect_ratio: bool = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    train: bool = False
    # Milder than ImageNet's (0.08, 1): a lesion or an organ must stay in view.
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip_probability: float = 0.5
    _geometry: Callable[[torch.Tensor], torch.Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.crop_scale = tuple(float(s) for s in self.crop_scale)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean {self.mean} and std {self.std} need one value per channel ({self.channels})"
            )
        if self.train:
            if self.crop is None:
                raise ValueError("train=True needs a crop size for RandomResizedCrop")
            steps = [
                v2.RandomResizedCrop(self.crop, scale=self.crop_scale, antialias=True),
                v2.RandomHorizontalFlip(self.flip_probability),
            ]
        else:
            steps = []
            if self.resize is not None:
                size = self.resize if self.keep_aspect_ratio else (self.resize, self.resize)
                steps.append(v2.Resize(size, antialias=True))
            if self.crop is not None:
                steps.append(v2.CenterCrop(self.crop))
        self._geometry = v2.Compose(steps) if steps else v2.Identity()

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.apply_to_tensor(image_to_tensor(image))

    def apply_to_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Apply to float images in [0, 1] shaped (..., C, H, W), e.g. a stack of slices.

        Random augmentations draw once per call, so all slices of one volume get the same crop.
        """
        images = self._geometry(images)
        if self.channels == 3 and images.shape[-3] == 1:
            images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
        elif self.channels == 1 and images.shape[-3] == 3:
            images = v2.functional.rgb_to_grayscale(images)
        elif images.shape[-3] != self.channels:
            raise ValueError(f"cannot turn a {images.shape[-3]}-channel image into {self.channels} channels")
        return v2.functional.normalize(images.contiguous(), list(self.mean), list(self.std))

    def config(self) -> dict[str, Any]:
        return _config_of(self)


# ---------------------------------------------------------------------------------------------
# 2.5D: 3D volumes through a 2D model
# ---------------------------------------------------------------------------------------------


@dataclass
class Volume25DTransform:
    """2.5D loading (FairMedFM D.1.1): a volume becomes ``num_slices`` 2D images.

    The volume is scaled to [0, 1] (min–max, or the window ``intensity_range`` such as a CT lung
    window), resampled to ``num_slices`` slices along ``slice_axis`` (linear interpolation; the
    in-plane size is kept), and every slice goes through ``slice_transform`` (the 2D pipeline).
    Output: float32 tensor (num_slices, 3, 224, 224) with the defaults. Combine slice predictions
    with :func:`aggregate_slice_predictions`.

    ``slice_axis=-1`` matches NIfTI volumes read by nibabel in RAS orientation, whose last axis is
    the axial (longitudinal) one.
    """

    name: ClassVar[str] = "2.5d"

    num_slices: int = FAIRMEDFM_NUM_SLICES
    slice_axis: int = -1
    intensity_range: tuple[float, float] | None = None
    slice_transform: Image2DTransform = field(default_factory=Image2DTransform)

    def __post_init__(self) -> None:
        if isinstance(self.slice_transform, Mapping):
            self.slice_transform = Image2DTransform(**_without_name(self.slice_transform, "2d"))
        if self.intensity_range is not None:
            self.intensity_range = tuple(float(v) for v in self.intensity_range)
        if self.num_slices < 1:
            raise ValueError(f"num_slices must be positive, got {self.num_slices}")

    def __call__(self, volume: np.ndarray | torch.Tensor) -> torch.Tensor:
        from monai.transforms import Resize

        tensor = volume_to_tensor(volume)  # (1, X, Y, Z)
        tensor = torch.movedim(tensor, _channel_first_axis(self.slice_axis), -1)  # slices last
        tensor = _scale_intensity(tensor, self.intensity_range)
        # -1 keeps the in-plane size; only the slice axis is resampled.
        resampler = Resize(spatial_size=(-1, -1, self.num_slices), mode="trilinear")
        tensor = _plain_tensor(resampler(tensor))
        slices = tensor.permute(3, 0, 1, 2)  # (num_slices, 1, H, W)
        return self.slice_transform.apply_to_tensor(slices)

    def config(self) -> dict[str, Any]:
        return _config_of(self)


def aggregate_slice_predictions(
    predictions: np.ndarray | torch.Tensor, slices_per_volume: int | None = None
) -> np.ndarray | torch.Tensor:
    """Volume prediction = maximum over its slices' predictions (FairMedFM D.1.1).

    ``predictions`` is shaped (volumes, slices, ...) or, with ``slices_per_volume``, flat
    (volumes × slices, ...) in volume-major order as a DataLoader over 2.5D samples yields it after
    flattening. The maximum is taken per output (per class), so it works on probabilities and on
    logits alike (both are monotone in each other). Returns the same type it was given.
    """
    if slices_per_volume is not None:
        if predictions.shape[0] % slices_per_volume:
            raise ValueError(
                f"{predictions.shape[0]} slice predictions are not a multiple of {slices_per_volume} slices"
            )
        predictions = predictions.reshape(-1, slices_per_volume, *predictions.shape[1:])
    if predictions.ndim < 2:
        raise ValueError(f"expected predictions shaped (volumes, slices, ...), got {tuple(predictions.shape)}")
    if isinstance(predictions, torch.Tensor):
        return predictions.amax(dim=1)
    return np.max(predictions, axis=1)


def foreground_slice_indices(
    mask: np.ndarray | torch.Tensor, slice_axis: int = -1, min_foreground_pixels: int = 1
) -> np.ndarray:
    """Indices of the slices along ``slice_axis`` with at least ``min_foreground_pixels`` mask pixels.

    2D promptable segmenters on 3D volumes see only slices with ground truth (FairMedFM D.2.1),
    because prompts are generated from the mask.
    """
    mask_array = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if mask_array.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask_array.shape}")
    in_plane_axes = tuple(a for a in range(3) if a != slice_axis % 3)
    counts = np.count_nonzero(mask_array, axis=in_plane_axes)
    return np.flatnonzero(counts >= min_foreground_pixels)


def select_foreground_slices(
    volume: np.ndarray, mask: np.ndarray, slice_axis: int = -1, min_foreground_pixels: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The volume and mask slices that contain foreground, slice axis first: (K, H, W) each, plus indices."""
    volume, mask = np.asarray(volume), np.asarray(mask)
    if volume.shape != mask.shape:
        raise ValueError(f"volume shape {volume.shape} differs from mask shape {mask.shape}")
    indices = foreground_slice_indices(mask, slice_axis, min_foreground_pixels)
    volume_slices = np.moveaxis(np.take(volume, indices, axis=slice_axis), slice_axis, 0)
    mask_slices = np.moveaxis(np.take(mask, indices, axis=slice_axis), slice_axis, 0)
    return volume_slices, mask_slices, indices


# ---------------------------------------------------------------------------------------------
# 3D
# ---------------------------------------------------------------------------------------------


@dataclass
class Volume3DTransform:
    """3D pipeline for volumetric models (MONAI): channel first → intensity to [0, 1] → resize.

    ``intensity_range`` is a fixed window (e.g. ``(-1000, 400)`` Hounsfield units for CT, clipped)
    and ``None`` scales each volume's min–max. ``spatial_size`` is the output grid; ``-1`` keeps an
    axis. Output: float32 tensor (1, *spatial_size).
    """

    name: ClassVar[str] = "3d"

    spatial_size: tuple[int, int, int] = (96, 96, 96)
    intensity_range: tuple[float, float] | None = None
    interpolation: str = "trilinear"

    def __post_init__(self) -> None:
        self.spatial_size = tuple(int(s) for s in self.spatial_size)
        if len(self.spatial_size) != 3:
            raise ValueError(f"spatial_size needs three values, got {self.spatial_size}")
        if self.intensity_range is not None:
            self.intensity_range = tuple(float(v) for v in self.intensity_range)

    def __call__(self, volume: np.ndarray | torch.Tensor) -> torch.Tensor:
        from monai.transforms import Compose, EnsureType, Resize

        pipeline = Compose(
            [
                lambda v: _scale_intensity(v, self.intensity_range),
                Resize(spatial_size=self.spatial_size, mode=self.interpolation),
                EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
            ]
        )
        return pipeline(volume_to_tensor(volume))

    def config(self) -> dict[str, Any]:
        return _config_of(self)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@TRANSFORMS.register("2d")
def _build_2d(**options: Any) -> Image2DTransform:
    return Image2DTransform(**options)


@TRANSFORMS.register("2d-train")
def _build_2d_train(**options: Any) -> Image2DTransform:
    return Image2DTransform(**{"train": True, **options})


@TRANSFORMS.register("2.5d")
def _build_25d(**options: Any) -> Volume25DTransform:
    return Volume25DTransform(**options)


@TRANSFORMS.register("3d")
def _build_3d(**options: Any) -> Volume3DTransform:
    return Volume3DTransform(**options)


def build_transform(name_or_config: str | Mapping[str, Any] | Callable | None) -> Callable:
    """A transform from a registered name or a config dict ``{"name": ..., **options}``.

    ``build_transform("2d")``, ``build_transform({"name": "2.5d", "num_slices": 16})``; an already
    built transform (any callable) is returned as is, ``None`` means the default ``"2d"``. Unknown
    names list the known ones; unknown options list the valid ones.
    """
    if name_or_config is None:
        return TRANSFORMS.create("2d")
    if isinstance(name_or_config, str):
        return TRANSFORMS.create(name_or_config)
    if isinstance(name_or_config, Mapping):
        options = dict(name_or_config)
        if "name" not in options:
            raise ValueError(f"transform config needs a 'name' (one of {TRANSFORMS.names()}), got {options}")
        name = options.pop("name")
        factory = TRANSFORMS.get(name)
        try:
            return factory(**options)
        except TypeError as exc:
            valid = _option_names(factory(), exclude=("name",))
            raise ValueError(f"bad options for transform {name!r}: {exc}; valid options: {valid}") from None
    if callable(name_or_config):
        return name_or_config
    raise TypeError(f"cannot build a transform from {name_or_config!r}")


def _config_of(transform: Any) -> dict[str, Any]:
    """The dataclass fields (without private ones) plus the registry name, as plain data (lists, not tuples)."""
    config: dict[str, Any] = {"name": transform.name}
    for f in dataclasses.fields(transform):
        if not f.init or f.name.startswith("_"):
            continue
        value = getattr(transform, f.name)
        if hasattr(value, "config"):
            value = value.config()
        elif isinstance(value, tuple):
            value = list(value)  # YAML/JSON-friendly
        config[f.name] = value
    return config


def _option_names(transform: Any, exclude: Sequence[str] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(transform) if f.init and not f.name.startswith("_") and f.name not in exclude]


def _without_name(config: Mapping[str, Any], expected: str) -> dict[str, Any]:
    options = dict(config)
    name = options.pop("name", expected)
    if name != expected:
        raise ValueError(f"expected a {expected!r} transform config here, got {name!r}")
    return options


def _channel_first_axis(axis: int) -> int:
    """Position of a volume axis (given for X, Y, Z) once a channel axis is put in front."""
    if not -3 <= axis <= 2:
        raise ValueError(f"slice_axis must be in [-3, 2] for a 3D volume, got {axis}")
    return axis % 3 + 1
