"""HD95 and NSD per sample: hand cases, MONAI 1.6 agreement (2D/3D, spacing, multi-class), empty-mask
conventions, bad input, symmetry properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from medequity.metrics import hd95_per_sample, nsd_per_sample, surface_distances
from medequity.metrics.surface import boundary

# MONAI returns its distances in float32; ours are float64. Agreement is to float32 rounding.
FLOAT32_RTOL = 2e-6


def _points(shape, *pixels):
    mask = np.zeros(shape, dtype=int)
    for pixel in pixels:
        mask[pixel] = 1
    return mask[None]


def test_single_pixels_hand_distance_with_spacing():
    pred, true = _points((6, 6), (0, 0)), _points((6, 6), (3, 4))
    assert hd95_per_sample(pred, true).values[0] == pytest.approx(5.0)
    assert hd95_per_sample(pred, true, spacing=(2.0, 1.0)).values[0] == pytest.approx(np.sqrt(36 + 16))
    assert nsd_per_sample(pred, true, tolerance=5.0).values[0] == 1.0  # d <= tolerance counts
    assert nsd_per_sample(pred, true, tolerance=4.99).values[0] == 0.0


def test_identical_masks_are_perfect():
    mask = np.zeros((1, 9, 9), int)
    mask[0, 2:7, 3:8] = 1
    mask[0, 4, 4] = 2
    assert np.all(hd95_per_sample(mask, mask).per_class == 0)
    assert np.all(nsd_per_sample(mask, mask, tolerance=0.0).per_class == 1)


def test_shifted_square_hand_case():
    # 4x4 squares, prediction shifted right by 2 columns: every boundary pixel is within 2 of the
    # other boundary; the left column of the truth is exactly 2 away, so HD = 2 and NSD(1) counts
    # the pixels at distance <= 1.
    true = np.zeros((1, 10, 10), int)
    true[0, 2:6, 2:6] = 1
    pred = np.roll(true, 2, axis=2)
    to_true, to_pred = surface_distances(pred[0] == 1, true[0] == 1)
    assert to_true.size == to_pred.size == 12  # 4x4 ring
    assert to_true.max() == to_pred.max() == 2.0
    assert hd95_per_sample(pred, true, percentile=100).values[0] == 2.0
    within = np.sum(to_true <= 1) + np.sum(to_pred <= 1)
    assert nsd_per_sample(pred, true, tolerance=1.0).values[0] == pytest.approx(within / 24)
    assert 0 < within < 24


def test_boundary_counts_image_border():
    mask = np.ones((4, 5), bool)
    edge = boundary(mask)
    assert edge.sum() == 4 * 5 - 2 * 3 and not edge[1:-1, 1:-1].any()


def test_percentile_100_is_the_hausdorff_distance():
    rng = np.random.default_rng(3)
    spacing = np.array([0.7, 1.9])
    for _ in range(5):
        pred = ndimage.binary_dilation(rng.random((20, 24)) < 0.03, iterations=2)
        true = ndimage.binary_dilation(rng.random((20, 24)) < 0.03, iterations=2)
        a = np.argwhere(boundary(pred)) * spacing
        b = np.argwhere(boundary(true)) * spacing
        expected = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
        got = hd95_per_sample(pred[None].astype(int), true[None].astype(int), spacing=spacing, percentile=100).values[0]
        assert got == pytest.approx(expected, rel=1e-12)


def _blobs(rng, shape, n_classes=2, density=0.06):
    mask = np.zeros(shape, dtype=int)
    for c in range(1, n_classes + 1):
        mask[ndimage.binary_dilation(rng.random(shape) < density, iterations=1)] = c
    return mask


def _one_hot(labels, n_classes):
    import torch

    return torch.from_numpy(np.stack([labels == c for c in range(n_classes + 1)], axis=1).astype(np.float32))


@pytest.mark.parametrize(
    "shape, spacing",
    [((3, 22, 27), None), ((3, 22, 27), (0.7, 1.3)), ((2, 11, 13, 9), (1.0, 0.5, 2.5)), ((2, 10, 12, 8), 1.7)],
)
def test_hd95_and_nsd_agree_with_monai(shape, spacing):
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(sum(shape))
    pred, true = _blobs(rng, shape), _blobs(rng, shape)
    true[0][true[0] == 2] = 0  # class 2 missing from one truth: one-sided empty
    pred[-1][pred[-1] == 2] = 0
    true[-1][true[-1] == 2] = 0  # and from both masks of another sample: both empty
    monai_spacing = list(np.broadcast_to(spacing, len(shape) - 1)) if spacing is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks
        ref_hd = metrics.compute_hausdorff_distance(_one_hot(pred, 2), _one_hot(true, 2), percentile=95, spacing=monai_spacing).numpy()
        ref_nsd = metrics.compute_surface_dice(_one_hot(pred, 2), _one_hot(true, 2), class_thresholds=[1.0, 2.2],
                                               spacing=monai_spacing).numpy()
    # MONAI: NaN for HD95 when exactly one mask is empty — our one_empty="nan".
    ours_hd = hd95_per_sample(pred, true, spacing=spacing, classes=[1, 2], one_empty="nan").per_class
    ours_nsd = nsd_per_sample(pred, true, tolerance=[1.0, 2.2], spacing=spacing, classes=[1, 2]).per_class
    np.testing.assert_array_equal(np.isnan(ours_hd), np.isnan(ref_hd))
    np.testing.assert_allclose(ours_hd, ref_hd, rtol=FLOAT32_RTOL, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(ours_nsd), np.isnan(ref_nsd))
    np.testing.assert_allclose(ours_nsd, ref_nsd, rtol=0, atol=1e-6)
    assert np.isnan(ours_hd[-1, 1]) and np.isnan(ours_nsd[-1, 1])  # both empty
    assert ours_nsd[0, 1] == 0.0  # prediction on an empty truth


def test_empty_mask_conventions_and_counts():
    empty = np.zeros((1, 6, 8), int)
    blob = empty.copy()
    blob[0, 1:3, 1:3] = 1
    pred = np.concatenate([empty, blob, empty])
    true = np.concatenate([empty, empty, blob])  # both empty / FP on empty truth / missed object
    default = hd95_per_sample(pred, true)
    assert np.isnan(default.values[0]) and np.isinf(default.values[1]) and np.isinf(default.values[2])
    assert default.n_empty == 1 and default.n_one_empty == 2
    assert default.settings()["one_empty"] == "inf" and default.settings()["empty"] == "nan"
    spacing = (0.5, 2.0)
    diagonal = hd95_per_sample(pred, true, spacing=spacing, empty="zero", one_empty="diagonal")
    np.testing.assert_allclose(diagonal.values, [0.0, np.hypot(6 * 0.5, 8 * 2.0), np.hypot(6 * 0.5, 8 * 2.0)])
    assert np.all(np.isnan(hd95_per_sample(pred, true, one_empty="nan").values))
    nsd = nsd_per_sample(pred, true, tolerance=1.0)
    assert np.isnan(nsd.values[0]) and nsd.values[1] == 0.0 and nsd.values[2] == 0.0
    for convention, value in (("zero", 0.0), ("one", 1.0)):
        assert nsd_per_sample(pred, true, tolerance=1.0, empty=convention).values[0] == value


def test_multiclass_mean_over_defined_classes():
    pred = np.zeros((1, 8, 8), int)
    true = pred.copy()
    true[0, 1, 1] = 1
    pred[0, 1, 4] = 1  # class 1: distance 3
    result = hd95_per_sample(pred, true, classes=[1, 2])
    assert result.per_class[0, 0] == 3.0 and np.isnan(result.per_class[0, 1])
    assert result.values[0] == 3.0 and result.classes == (1, 2)


def test_per_sample_spacing_equals_separate_calls():
    rng = np.random.default_rng(7)
    pred, true = _blobs(rng, (3, 12, 12), 1, 0.1), _blobs(rng, (3, 12, 12), 1, 0.1)
    spacings = np.array([[1.0, 1.0], [0.5, 2.0], [3.0, 0.25]])
    joint = hd95_per_sample(pred, true, spacing=spacings).values
    separate = [hd95_per_sample(pred[i : i + 1], true[i : i + 1], spacing=spacings[i]).values[0] for i in range(3)]
    np.testing.assert_allclose(joint, separate)


def test_pooled_percentile_is_medpy_style():
    pred, true = _points((8, 8), (0, 0), (0, 1)), _points((8, 8), (0, 0), (7, 0))
    to_true, to_pred = surface_distances(pred[0] == 1, true[0] == 1)
    pooled = hd95_per_sample(pred, true, pooling="pooled").values[0]
    assert pooled == pytest.approx(np.percentile(np.concatenate([to_true, to_pred]), 95))
    assert pooled <= hd95_per_sample(pred, true).values[0]


def test_bad_input_names_the_problem():
    masks = np.zeros((2, 5, 5), int)
    with pytest.raises(ValueError, match="spacing has 3 values but the masks have 2 spatial"):
        hd95_per_sample(masks, masks, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spacing must be finite and positive"):
        hd95_per_sample(masks, masks, spacing=(1, -1))
    with pytest.raises(ValueError, match="spacing per sample"):
        hd95_per_sample(masks, masks, spacing=np.ones((3, 2)))
    with pytest.raises(ValueError, match="same shape"):
        hd95_per_sample(masks, masks[:, :4])
    with pytest.raises(ValueError, match="integer label mask.*0.5"):
        nsd_per_sample(masks + 0.5, masks, tolerance=1)
    with pytest.raises(ValueError, match="negative labels"):
        hd95_per_sample(-masks - 1, masks)
    with pytest.raises(ValueError, match="spatial dimensions"):
        hd95_per_sample(np.zeros((2, 5), int), np.zeros((2, 5), int))
    with pytest.raises(ValueError, match="tolerance"):
        nsd_per_sample(masks, masks, tolerance=None)
    with pytest.raises(ValueError, match="tolerance"):
        nsd_per_sample(masks, masks, tolerance=[1, 2], classes=[1])
    with pytest.raises(ValueError, match="tolerance"):
        nsd_per_sample(masks, masks, tolerance=-1)
    with pytest.raises(ValueError, match="one_empty"):
        hd95_per_sample(masks, masks, one_empty="max")
    with pytest.raises(ValueError, match="empty"):
        hd95_per_sample(masks, masks, empty="one")
    with pytest.raises(ValueError, match="percentile"):
        hd95_per_sample(masks, masks, percentile=101)
    with pytest.raises(ValueError, match="background"):
        hd95_per_sample(masks, masks, classes=[0, 1])
    # integral floats and bools are label masks
    assert np.isnan(hd95_per_sample(masks.astype(float), masks.astype(bool)).values).all()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([(7, 9), (5, 6, 4)]),
    st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0), st.floats(0.2, 3.0)),
    st.floats(0.0, 4.0),
)
def test_symmetry_and_range_properties(seed, shape, spacing3, tolerance):
    rng = np.random.default_rng(seed)
    pred = (rng.random((2, *shape)) < 0.3).astype(int)
    true = (rng.random((2, *shape)) < 0.3).astype(int)
    spacing = spacing3[: len(shape)]
    hd = hd95_per_sample(pred, true, spacing=spacing, one_empty="nan").per_class
    np.testing.assert_allclose(hd, hd95_per_sample(true, pred, spacing=spacing, one_empty="nan").per_class)
    nsd = nsd_per_sample(pred, true, tolerance=tolerance, spacing=spacing).per_class
    np.testing.assert_allclose(nsd, nsd_per_sample(true, pred, tolerance=tolerance, spacing=spacing).per_class)
    assert np.all(np.isnan(hd) | (hd >= 0))
    assert np.all(np.isnan(nsd) | ((nsd >= 0) & (nsd <= 1)))
    # a larger tolerance never lowers NSD
    wider = nsd_per_sample(pred, true, tolerance=tolerance + 1.0, spacing=spacing).per_class
    assert np.all(np.isnan(nsd) | (wider >= nsd))
