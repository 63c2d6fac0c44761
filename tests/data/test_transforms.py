"""Preprocessing (FairMedFM D.1.1): 2D, 2.5D, 3D transforms and the transform registry."""

import numpy as np
import pytest
import torch

from medequity.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Image2DTransform,
    Volume3DTransform,
    Volume25DTransform,
    aggregate_slice_predictions,
    build_transform,
    foreground_slice_indices,
    image_to_tensor,
    select_foreground_slices,
)

# ------------------------------------------------------------------------------------------- 2D


def test_default_2d_gives_3x224x224_float32_for_gray_and_rgb():
    gray = np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8)
    rgb = np.random.default_rng(1).integers(0, 256, (180, 120, 3), dtype=np.uint8)
    transform = build_transform("2d")
    for image in (gray, rgb):
        out = transform(image)
        assert out.shape == (3, 224, 224)
        assert out.dtype == torch.float32


def test_imagenet_normalisation_of_a_constant_image_matches_hand_computation():
    image = np.full((300, 260), 128, dtype=np.uint8)
    out = Image2DTransform()(image)
    # By hand: 128/255 = 0.50196; (0.50196 - 0.485)/0.229 = 0.07406, (… - 0.456)/0.224 = 0.20518,
    # (… - 0.406)/0.225 = 0.42649.
    expected = [0.074066, 0.205182, 0.426492]
    for channel in range(3):
        assert torch.allclose(out[channel], torch.full((224, 224), expected[channel]), atol=1e-4)


def test_custom_mean_std_and_single_channel():
    image = np.full((50, 50), 0.75, dtype=np.float32)  # float images are taken to be in [0, 1]
    out = Image2DTransform(resize=40, crop=32, mean=(0.5,), std=(0.25,), channels=1)(image)
    assert out.shape == (1, 32, 32)
    assert torch.allclose(out, torch.ones(1, 32, 32))


def test_rgb_to_one_channel_uses_luminance():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    image[..., 1] = 255  # pure green: ITU-R 601 luma weight 0.587
    out = Image2DTransform(resize=None, crop=None, mean=(0.0,), std=(1.0,), channels=1)(image)
    assert torch.allclose(out, torch.full((1, 10, 10), 0.587), atol=2e-3)


def test_centre_crop_takes_the_centre():
    rows, cols = np.meshgrid(np.arange(256), np.arange(300), indexing="ij")
    coordinates = (rows * 1000 + cols).astype(np.float32)  # each pixel encodes its own position
    transform = Image2DTransform(resize=None, crop=224, mean=(0.0,), std=(1.0,), channels=1)
    out = transform(coordinates)[0].numpy()
    # 256 → 224 drops 16 rows on each side; 300 → 224 drops 38 columns on each side.
    assert out[0, 0] == 16 * 1000 + 38
    assert out[223, 223] == 239 * 1000 + 261
    np.testing.assert_array_equal(out, coordinates[16:240, 38:262])


def test_resize_square_by_default_or_shorter_side():
    image = np.zeros((300, 400), dtype=np.uint8)
    square = Image2DTransform(crop=None)(image)
    shorter_side = Image2DTransform(crop=None, keep_aspect_ratio=True)(image)
    assert square.shape == (3, 256, 256)  # FairMedFM D.1.1: 256×256
    assert shorter_side.shape == (3, 256, 341)  # 400 · 256/300 = 341.3


def test_train_augmentation_shape_and_flip():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))  # brighter to the right
    transform = build_transform(
        {"name": "2d-train", "crop": 32, "crop_scale": [1.0, 1.0], "flip_probability": 1.0,
         "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    )
    assert transform.train
    out = transform(ramp)
    assert out.shape == (3, 32, 32)
    assert (out[0, :, 0] > out[0, :, -1]).all()  # flipped: brighter to the left now


def test_image_to_tensor_scales_by_dtype_and_drops_alpha():
    assert image_to_tensor(np.full((2, 2), 255, np.uint8)).max() == 1.0
    assert image_to_tensor(np.full((2, 2), 65535, np.uint16)).max() == 1.0
    rgba = np.zeros((4, 5, 4), np.uint8)
    assert image_to_tensor(rgba).shape == (3, 4, 5)


def test_mean_std_must_match_channels():
    with pytest.raises(ValueError, match="one value per channel"):
        Image2DTransform(channels=1)  # ImageNet mean has three values


# ----------------------------------------------------------------------------------------- 2.5D


def _ramp_volume(depth: int = 10) -> np.ndarray:
    """A volume whose slice k (last axis) is constant k·100."""
    return np.broadcast_to(np.arange(depth, dtype=np.float32) * 100, (20, 24, depth)).copy()


def test_25d_gives_32_slices_of_3x224x224():
    out = build_transform("2.5d")(np.random.default_rng(0).random((40, 36, 57), dtype=np.float32))
    assert out.shape == (32, 3, 224, 224)
    assert out.dtype == torch.float32
    assert type(out) is torch.Tensor  # a plain tensor, not MONAI's MetaTensor


def test_25d_keeps_slice_order_and_scales_volume_to_unit_range():
    transform = Volume25DTransform(
        slice_transform=Image2DTransform(resize=None, crop=None, mean=(0.0,), std=(1.0,), channels=1)
    )
    out = transform(_ramp_volume())
    assert out.shape == (32, 1, 20, 24)
    means = out.mean(dim=(1, 2, 3)).numpy()
    assert np.all(np.diff(means) >= 0)  # slice order kept
    assert means[0] == pytest.approx(0.0, abs=1e-6)  # first slice is the volume minimum
    assert means[-1] == pytest.approx(1.0, abs=1e-6)  # last slice the maximum


def test_25d_slice_axis_option_is_equivalent_to_moving_the_axis():
    volume = np.random.default_rng(1).random((8, 9, 10), dtype=np.float32)
    last = Volume25DTransform(num_slices=6)(volume)
    first = Volume25DTransform(num_slices=6, slice_axis=0)(np.moveaxis(volume, -1, 0))
    assert torch.allclose(last, first, atol=1e-5)


def test_25d_intensity_window_clips():
    volume = np.full((6, 6, 4), -2000.0, dtype=np.float32)
    volume[..., 2:] = 3000.0
    transform = Volume25DTransform(
        num_slices=4, intensity_range=(-1000, 400),
        slice_transform=Image2DTransform(resize=None, crop=None, mean=(0.0,), std=(1.0,), channels=1),
    )
    out = transform(volume)
    assert torch.allclose(out[0], torch.zeros(1, 6, 6))
    assert torch.allclose(out[-1], torch.ones(1, 6, 6))


def test_max_over_slices_aggregation():
    scores = np.array([[0.1, 0.9, 0.2], [0.3, 0.1, 0.05]])
    np.testing.assert_array_equal(aggregate_slice_predictions(scores), [0.9, 0.3])
    np.testing.assert_array_equal(aggregate_slice_predictions(scores.reshape(-1), slices_per_volume=3), [0.9, 0.3])
    per_class = torch.tensor([[[0.1, 0.8], [0.7, 0.2]]])  # 1 volume, 2 slices, 2 classes
    aggregated = aggregate_slice_predictions(per_class)
    assert isinstance(aggregated, torch.Tensor)
    assert torch.equal(aggregated, torch.tensor([[0.7, 0.8]]))
    with pytest.raises(ValueError, match="multiple"):
        aggregate_slice_predictions(np.zeros(7), slices_per_volume=3)


def test_foreground_slices():
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1, 2, 1] = 1
    mask[0:2, 0:2, 4] = 2
    np.testing.assert_array_equal(foreground_slice_indices(mask), [1, 4])
    np.testing.assert_array_equal(foreground_slice_indices(mask, min_foreground_pixels=2), [4])
    np.testing.assert_array_equal(foreground_slice_indices(mask, slice_axis=0), [0, 1])
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    slices, masks, indices = select_foreground_slices(volume, mask)
    assert slices.shape == masks.shape == (2, 4, 5)
    np.testing.assert_array_equal(slices[1], volume[:, :, 4])
    np.testing.assert_array_equal(indices, [1, 4])


# ------------------------------------------------------------------------------------------- 3D


def test_3d_transform_shape_and_range():
    volume = np.random.default_rng(2).normal(100, 50, (10, 12, 14)).astype(np.float32)
    out = Volume3DTransform(spatial_size=(16, 16, 8))(volume)
    assert out.shape == (1, 16, 16, 8)
    assert out.dtype == torch.float32 and type(out) is torch.Tensor
    assert out.min() >= 0.0 and out.max() <= 1.0
    windowed = Volume3DTransform(spatial_size=(4, 4, 4), intensity_range=(0, 10))(np.full((5, 5, 5), 50.0))
    assert torch.allclose(windowed, torch.ones(1, 4, 4, 4))


# ------------------------------------------------------------------------------------- registry


def test_registry_names_and_config_round_trip():
    assert isinstance(build_transform("2d"), Image2DTransform)
    assert isinstance(build_transform("2.5d"), Volume25DTransform)
    assert isinstance(build_transform("3d"), Volume3DTransform)
    assert isinstance(build_transform(None), Image2DTransform)
    config = build_transform({"name": "2.5d", "num_slices": 16, "slice_transform": {"crop": 112}}).config()
    assert config["num_slices"] == 16 and config["slice_transform"]["crop"] == 112
    assert build_transform(config).config() == config
    assert build_transform("2d").config()["mean"] == list(IMAGENET_MEAN)
    assert build_transform("2d").config()["std"] == list(IMAGENET_STD)
    custom = lambda image: image  # noqa: E731
    assert build_transform(custom) is custom


def test_registry_errors_name_the_choices():
    with pytest.raises(KeyError, match="2.5d"):
        build_transform("2.5D-bogus")
    with pytest.raises(ValueError, match="valid options.*crop"):
        build_transform({"name": "2d", "size": 3})
    with pytest.raises(ValueError, match="name"):
        build_transform({"crop": 3})
