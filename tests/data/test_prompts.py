"""Prompts from ground-truth masks (SEGMENTATION.md, FairMedFM's rand / rands / center / bbox)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from medequity.data.prompts import (
    PROMPT_KINDS,
    Prompt,
    bounding_box,
    inside_rate,
    make_prompt_batch,
    make_prompts,
    stable_hash,
)


def ring(size: int = 32, outer: float = 12, inner: float = 6, center=(16, 16)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - center[0], xx - center[1])
    return ((r <= outer) & (r > inner)).astype(np.uint8)


def two_class_masks(n: int = 12, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size - 10, 2)
        m[y:y + 8, x:x + 8] = 1
        m[y + 2:y + 5, x + 2:x + 5] = 2
        masks.append(m)
    return masks


# --- coordinates and conventions -----------------------------------------------------------------


def test_points_are_xy_column_row_with_label_one():
    mask = np.zeros((10, 20), np.uint8)
    mask[2, 15] = 1  # row 2, column 15: a single pixel
    for kind in ("center", "rand", "rands"):
        prompt = make_prompts(mask, kind, seed=0, sample_id="a")[1]
        assert prompt is not None
        assert prompt.points.dtype == np.int64 and prompt.points.shape[1] == 2
        assert (prompt.points == [15, 2]).all(), kind
        assert (prompt.labels == 1).all() and prompt.box is None and prompt.inside
    box = make_prompts(mask, "bbox", seed=0, sample_id="a")[1]
    assert box is not None and box.box.tolist() == [15, 2, 15, 2] and box.points.shape == (0, 2) and box.inside is None


def test_tight_box_is_inclusive_and_bbox_center_uses_floor_division():
    mask = np.zeros((30, 30), np.uint8)
    mask[4:11, 7:20] = 1  # rows 4..10, columns 7..19
    assert make_prompts(mask, "bbox", seed=0, sample_id=0)[1].box.tolist() == [7, 4, 19, 10]
    center = make_prompts(mask, "center", seed=0, sample_id=0)[1]
    assert center.points.tolist() == [[(7 + 19) // 2, (4 + 10) // 2]] and center.mode == "bbox_center"


def test_3d_masks_give_xyz_points_and_six_number_boxes():
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[1:3, 2:5, 6:9] = 1  # z 1..2, y 2..4, x 6..8
    assert make_prompts(mask, "bbox", seed=0, sample_id="v")[1].box.tolist() == [6, 2, 1, 8, 4, 2]
    point = make_prompts(mask, "center", seed=0, sample_id="v", mode="interior")[1]
    x, y, z = point.points[0]
    assert mask[z, y, x] == 1 and point.inside


def test_classes_default_to_present_ones_and_boolean_masks_are_class_one():
    masks = two_class_masks(1)
    assert sorted(make_prompts(masks[0], "rand", seed=0, sample_id=1)) == [1, 2]
    assert list(make_prompts(masks[0] > 0, "rand", seed=0, sample_id=1)) == [1]


# --- empty classes -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_absent_class_gives_none_not_a_crash_or_a_zero_point(kind):
    mask = np.zeros((16, 16), np.uint8)
    mask[3:6, 3:6] = 1
    prompts = make_prompts(mask, kind, seed=0, sample_id="x", classes=[1, 2])
    assert prompts[2] is None and isinstance(prompts[1], Prompt)
    assert make_prompts(np.zeros((16, 16), np.uint8), kind, seed=0, sample_id="x") == {}
    assert make_prompts(np.zeros((16, 16), np.uint8), kind, seed=0, sample_id="x", classes=[1]) == {1: None}


def test_bad_arguments_name_the_valid_choices():
    mask = ring()
    with pytest.raises(ValueError, match="bbox_center"):
        make_prompts(mask, "center", seed=0, sample_id=0, mode="middle")
    with pytest.raises(TypeError, match="jitter"):
        make_prompts(mask, "bbox", seed=0, sample_id=0, k=3)
    with pytest.raises(ValueError, match="rands"):
        make_prompts(mask, "points", seed=0, sample_id=0)
    with pytest.raises(ValueError, match="background"):
        make_prompts(mask, "rand", seed=0, sample_id=0, classes=[0])


# --- reproducibility ------------------------------------------------------------------------------


def test_stable_hash_is_fixed_across_processes():
    # Pinned values: a change would silently change every published prompt.
    assert stable_hash("a") == 0x2F42665B399EF840
    assert stable_hash("ISIC_0000000") == 0xB731211D8A4A4B9C
    assert stable_hash(5) == stable_hash("5")


@pytest.mark.parametrize("kind,options", [("rand", {}), ("rands", {}), ("rands", {"replace": False}),
                                          ("bbox", {"jitter": 4}), ("center", {"mode": "interior"})])
def test_prompts_do_not_depend_on_order_or_batching(kind, options):
    masks = two_class_masks(12)
    ids = [f"img-{i}" for i in range(len(masks))]
    one_by_one = [make_prompts(m, kind, seed=7, sample_id=s, **options) for m, s in zip(masks, ids)]
    order = np.random.default_rng(1).permutation(len(masks))
    shuffled = make_prompt_batch([masks[i] for i in order], kind, seed=7, sample_ids=[ids[i] for i in order], **options)
    halves = (make_prompt_batch(masks[:5], kind, seed=7, sample_ids=ids[:5], **options)
              + make_prompt_batch(masks[5:], kind, seed=7, sample_ids=ids[5:], **options))
    for position, i in enumerate(order):
        for c in (1, 2):
            a, b, h = one_by_one[i][c], shuffled[position][c], halves[i][c]
            assert np.array_equal(a.points, b.points) and np.array_equal(a.points, h.points)
            assert (a.box is None and b.box is None) or np.array_equal(a.box, b.box)
    # Class order does not matter either, and another seed or id changes the draw.
    reversed_classes = make_prompts(masks[0], kind, seed=7, sample_id=ids[0], classes=[2, 1], **options)
    assert np.array_equal(reversed_classes[1].points, one_by_one[0][1].points)


def test_seed_sample_and_class_each_change_random_prompts():
    mask = np.ones((40, 40), np.uint8)
    base = make_prompts(mask, "rands", seed=0, sample_id="a")[1].points
    assert not np.array_equal(base, make_prompts(mask, "rands", seed=1, sample_id="a")[1].points)
    assert not np.array_equal(base, make_prompts(mask, "rands", seed=0, sample_id="b")[1].points)
    assert not np.array_equal(base, make_prompts(mask * 3, "rands", seed=0, sample_id="a")[3].points)
    # rand is not simply the first of rands: each kind has its own stream.
    rand_points = [make_prompts(mask, "rand", seed=0, sample_id=i)[1].points[0].tolist() for i in range(20)]
    rands_first = [make_prompts(mask, "rands", seed=0, sample_id=i)[1].points[0].tolist() for i in range(20)]
    assert rand_points != rands_first


# --- centre points --------------------------------------------------------------------------------


def test_bbox_center_falls_in_a_rings_hole_and_says_so():
    mask = ring()
    prompt = make_prompts(mask, "center", seed=0, sample_id=0)[1]
    assert prompt.points.tolist() == [[16, 16]] and prompt.inside is False
    interior = make_prompts(mask, "center", seed=0, sample_id=0, mode="interior")[1]
    x, y = interior.points[0]
    assert mask[y, x] == 1 and interior.inside is True
    assert inside_rate([prompt, None]) == 0.0 and inside_rate([prompt, interior]) == 0.5
    assert np.isnan(inside_rate([None]))


def test_interior_is_the_deepest_pixel_and_ties_go_to_the_centroid():
    mask = np.zeros((21, 41), np.uint8)
    mask[5:16, 5:36] = 1  # 11 rows x 31 columns: a ridge of equally deep pixels along row 10
    prompt = make_prompts(mask, "center", seed=0, sample_id=0, mode="interior")[1]
    assert prompt.points.tolist() == [[20, 10]]  # the middle of the ridge, not its left end


def blobs(draw_seed: int, size: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(draw_seed)
    if kind == "ring":
        outer = rng.uniform(3, size / 2 - 1)
        inner = rng.uniform(0.3, 0.8) * outer
        c = rng.uniform(outer, size - outer, 2)
        return ring(size, outer, inner, c)
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(1, 4))
    return (noise > np.quantile(noise, rng.uniform(0.5, 0.97))).astype(np.uint8)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 48), st.sampled_from(["ring", "blob"]))
def test_interior_point_is_always_inside(draw_seed, size, kind):
    mask = blobs(draw_seed, size, kind)
    if not mask.any():
        return
    prompt = make_prompts(mask, "center", seed=0, sample_id=draw_seed, mode="interior")[1]
    x, y = prompt.points[0]
    assert mask[y, x] == 1 and prompt.inside
    bbox_prompt = make_prompts(mask, "center", seed=0, sample_id=draw_seed)[1]
    bx, by = bbox_prompt.points[0]
    assert bbox_prompt.inside == bool(mask[by, bx])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 48), st.sampled_from(["ring", "blob"]), st.integers(0, 6))
def test_random_points_and_boxes_on_random_blobs(draw_seed, size, kind, jitter):
    mask = blobs(draw_seed, size, kind)
    if not mask.any():
        return
    for prompt_kind in ("rand", "rands"):
        prompt = make_prompts(mask, prompt_kind, seed=3, sample_id=draw_seed)[1]
        assert prompt.n_points == (1 if prompt_kind == "rand" else 5)
        assert (mask[prompt.points[:, 1], prompt.points[:, 0]] == 1).all() and prompt.inside
    tight = bounding_box(mask > 0)
    box = make_prompts(mask, "bbox", seed=3, sample_id=draw_seed, jitter=jitter)[1].box
    assert (np.abs(box - tight) <= jitter).all()
    assert (box >= 0).all() and (box[[2, 3]] <= size - 1).all() and (box[:2] <= box[2:]).all()


# --- random points --------------------------------------------------------------------------------


def test_rands_draw_uniformly_with_replacement():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 2:5] = 1  # 6 pixels: 5 draws with replacement repeat a pixel with prob 1 - 6!/(1!·6^5)
    draws = [make_prompts(mask, "rands", seed=0, sample_id=i)[1].points for i in range(2000)]
    repeated = np.mean([len({tuple(p) for p in d}) < 5 for d in draws])
    expected = 1 - (6 * 5 * 4 * 3 * 2) / 6**5
    assert abs(repeated - expected) < 4 * np.sqrt(expected * (1 - expected) / 2000)
    counts = np.zeros((10, 10))
    for d in draws:
        np.add.at(counts, (d[:, 1], d[:, 0]), 1)
    assert counts[mask == 0].sum() == 0
    assert stats.chisquare(counts[mask == 1]).pvalue > 0.001  # uniform over the 6 pixels


def test_rands_without_replacement_are_distinct_and_capped_by_the_object_size():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 2:5] = 1
    for i in range(200):
        points = make_prompts(mask, "rands", seed=0, sample_id=i, replace=False)[1].points
        assert len({tuple(p) for p in points}) == 5
    small = np.zeros((10, 10), np.uint8)
    small[5, 5:8] = 1
    points = make_prompts(small, "rands", seed=0, sample_id=0, replace=False, k=5)[1].points
    assert sorted(map(tuple, points.tolist())) == [(5, 5), (6, 5), (7, 5)]
    assert make_prompts(mask, "rands", seed=0, sample_id=0, k=9)[1].n_points == 9


# --- boxes ---------------------------------------------------------------------------------------


def test_box_jitter_stays_within_bounds_reaches_them_and_is_clipped():
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 12:22] = 1
    tight = np.array([12, 10, 21, 19])
    boxes = np.array([make_prompts(mask, "bbox", seed=0, sample_id=i, jitter=3)[1].box for i in range(400)])
    offsets = boxes - tight
    assert (np.abs(offsets) <= 3).all() and offsets.min() == -3 and offsets.max() == 3
    # The four sides move independently.
    corr = np.corrcoef(offsets.T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.2
    outward = np.array([make_prompts(mask, "bbox", seed=0, sample_id=i, jitter=3, jitter_direction="outward")[1].box
                        for i in range(200)])
    assert (outward[:, :2] <= tight[:2]).all() and (outward[:, 2:] >= tight[2:]).all()
    corner = np.zeros((32, 32), np.uint8)
    corner[0:3, 29:32] = 1
    clipped = np.array([make_prompts(corner, "bbox", seed=0, sample_id=i, jitter=5)[1].box for i in range(100)])
    assert clipped.min() >= 0 and clipped[:, [2, 3]].max() <= 31
    tiny = np.zeros((32, 32), np.uint8)
    tiny[15, 15] = 1
    crossed = np.array([make_prompts(tiny, "bbox", seed=0, sample_id=i, jitter=4)[1].box for i in range(100)])
    assert (crossed[:, :2] <= crossed[:, 2:]).all() and (np.abs(crossed - 15) <= 4).all()
