"""Mask and box post-processing of bundle.decisions against hand-made probability maps and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bundle.decisions import (
    BoxPostprocessing,
    MaskPostprocessing,
    box_iou,
    nms,
    postprocess_boxes,
    postprocess_mask,
    resize_bilinear,
    scale_boxes,
)


def lungs_with_noise() -> tuple[np.ndarray, np.ndarray]:
    """A (W, H) = (64, 48) probability map with two 'lungs' (each with a hole), a third mid-sized blob, small
    islands; and the mask expected after fill holes + min area 20 px + keep the 2 largest."""
    prob = np.full((64, 48), 0.1)
    expected = np.zeros((64, 48), bool)
    for x0 in (4, 36):  # two lungs of 20 x 30 px with a 4 x 4 hole
        prob[x0 : x0 + 20, 8:38] = 0.9
        expected[x0 : x0 + 20, 8:38] = True
        prob[x0 + 8 : x0 + 12, 20:24] = 0.2
    prob[26:34, 40:46] = 0.8  # a third blob of 48 px: above the minimum area, but not among the 2 largest
    for x, y in ((1, 1), (30, 2), (60, 44)):  # islands of 2 x 2 = 4 px
        prob[x : x + 2, y : y + 2] = 0.95
    return prob, expected


def test_decision_mask_fills_holes_drops_islands_and_keeps_two_largest() -> None:
    prob, expected = lungs_with_noise()
    params = MaskPostprocessing(fill_holes=True, min_area_pixels=20, keep_largest=2)
    mask = postprocess_mask(prob, 0.5, params)
    assert mask.dtype == bool and mask.shape == prob.shape
    np.testing.assert_array_equal(mask, expected)


def test_decision_mask_steps_each_do_their_own_job() -> None:
    prob, _ = lungs_with_noise()
    raw = prob > 0.5
    np.testing.assert_array_equal(postprocess_mask(prob, 0.5), raw)  # no parameters: the threshold alone
    no_islands = postprocess_mask(prob, 0.5, MaskPostprocessing(min_area_pixels=20))
    assert no_islands.sum() == raw.sum() - 3 * 4  # the three 4-px islands removed, holes still open
    assert not no_islands[12:16, 20:24].any()
    filled = postprocess_mask(prob, 0.5, MaskPostprocessing(fill_holes=True))
    assert filled[12:16, 20:24].all() and filled.sum() == raw.sum() + 2 * 16
    kept = postprocess_mask(prob, 0.5, MaskPostprocessing(keep_largest=2))
    assert kept.sum() == 2 * (600 - 16)  # only the lungs, holes open


def test_decision_mask_threshold_is_strict() -> None:
    prob = np.array([[0.5, 0.5000001], [0.2, 0.7]])
    np.testing.assert_array_equal(postprocess_mask(prob, 0.5), [[False, True], [False, True]])


def test_decision_mask_min_area_fraction_is_the_same_at_any_size() -> None:
    prob, _ = lungs_with_noise()
    params = MaskPostprocessing(min_area_fraction=20 / prob.size)
    small = postprocess_mask(prob, 0.5, params)
    large = postprocess_mask(np.kron(prob, np.ones((3, 3))), 0.5, params)  # each pixel 3 x 3
    np.testing.assert_array_equal(large, np.kron(small, np.ones((3, 3), bool)))
    assert params.min_area(prob.shape) == 20 and params.min_area((192, 144)) == 180


def test_decision_mask_islands_touching_diagonally_are_one_component() -> None:
    prob = np.zeros((8, 8))
    prob[2, 2] = prob[3, 3] = prob[4, 4] = 1.0  # 8-connected: one component of 3 px
    prob[7, 0] = 1.0
    mask = postprocess_mask(prob, 0.5, MaskPostprocessing(min_area_pixels=3))
    assert mask.sum() == 3 and not mask[7, 0]


def lung_with_gas_bubble() -> tuple[np.ndarray, np.ndarray]:
    """A (W, H) = (100, 100) map: two 'lungs' (30 x 60 px), the right one joined at its base through a 4-px-wide,
    6-px-long bridge to a 16 x 16 'gastric bubble' below it; and the two lungs alone."""
    lungs = np.zeros((100, 100), bool)
    lungs[10:40, 10:70] = True
    lungs[60:90, 10:70] = True
    prob = np.where(lungs, 0.9, 0.1)
    prob[73:77, 70:76] = 0.9  # the bridge
    prob[67:83, 76:92] = 0.9  # the bubble
    return prob, lungs


def test_decision_mask_neck_cut_drops_a_region_joined_through_a_thin_bridge() -> None:
    prob, lungs = lung_with_gas_bubble()
    plain = postprocess_mask(prob, 0.5, MaskPostprocessing(keep_largest=2))
    assert plain[67:83, 76:92].all()  # connected to a lung: keeping the two largest does not remove it
    cut = postprocess_mask(prob, 0.5, MaskPostprocessing(keep_largest=2, neck_fraction=0.03))
    assert not cut[67:83, 76:92].any()  # the bubble is gone ...
    assert cut[lungs].all()  # ... the lungs are whole, square corners included (restored after the opening)
    bridge = np.zeros_like(lungs)
    bridge[73:77, 70:76] = True
    assert not (cut & ~lungs & ~bridge).any()  # nothing else added: at most a stub of the bridge stays


def test_decision_mask_neck_cut_leaves_wide_joins_and_thin_masks_alone() -> None:
    prob, lungs = lung_with_gas_bubble()
    prob[67:83, 70:76] = 0.9  # a 16-px-wide join: wider than twice the 3-px radius
    wide = postprocess_mask(prob, 0.5, MaskPostprocessing(keep_largest=2, neck_fraction=0.03))
    np.testing.assert_array_equal(wide, prob > 0.5)
    thin = np.zeros((100, 100))
    thin[10:90, 48:52] = 0.9  # thinner than the neck everywhere: not wiped out
    np.testing.assert_array_equal(postprocess_mask(thin, 0.5, MaskPostprocessing(neck_fraction=0.03)), thin > 0.5)


@pytest.mark.parametrize("size", [(96, 40), (20, 70), (32, 24), (7, 5)])
def test_decision_resize_matches_torch_bilinear(size: tuple[int, int]) -> None:
    prob = np.random.default_rng(0).random((32, 24))
    torch_resized = F.interpolate(torch.from_numpy(prob)[None, None], size=size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_bilinear(prob, size), torch_resized[0, 0].numpy(), rtol=0, atol=1e-12)


def test_decision_box_iou_by_hand() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_decision_nms_keeps_one_of_overlapping_boxes() -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 140, 140]], float)
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] > 0.8
    np.testing.assert_array_equal(nms(boxes, np.array([0.7, 0.9, 0.6]), 0.3), [1, 2])
    np.testing.assert_array_equal(nms(boxes, np.array([0.8, 0.8, 0.6]), 0.3), [0, 2])  # tie: first index


def test_decision_boxes_threshold_nms_per_label_and_cap() -> None:
    boxes = np.array([
        [10, 10, 50, 50],    # 0 label 0, 0.9
        [12, 12, 52, 52],    # 1 label 0, 0.8: suppressed by 0
        [11, 11, 51, 51],    # 2 label 1, 0.7: same place, other label, kept
        [100, 100, 140, 140],  # 3 label 0, 0.6
        [200, 200, 240, 240],  # 4 label 0, 0.2: below the score threshold
    ], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    labels = np.array([0, 0, 1, 0, 0])
    kept, kept_scores, kept_labels = postprocess_boxes(boxes, scores, labels, 0.5, BoxPostprocessing(nms_iou=0.3))
    np.testing.assert_array_equal(kept, boxes[[0, 2, 3]])
    np.testing.assert_array_equal(kept_scores, [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(kept_labels, [0, 1, 0])
    capped = postprocess_boxes(boxes, scores, labels, 0.5, BoxPostprocessing(nms_iou=0.3, max_boxes=2))
    np.testing.assert_array_equal(capped[1], [0.9, 0.7])
    none = postprocess_boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5)
    assert none[0].shape == (0, 4) and none[1].shape == (0,)


def test_decision_boxes_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        postprocess_boxes(np.zeros((2, 4)), np.zeros(1), np.zeros(2), 0.5)


def test_decision_scale_boxes_per_axis() -> None:
    np.testing.assert_allclose(scale_boxes([[8, 4, 16, 12]], (32, 16), (64, 48)), [[16, 12, 32, 36]])


def test_decision_postprocessing_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="keep_largest"):
        MaskPostprocessing(keep_largest=0)
    with pytest.raises(ValueError, match="min_area"):
        MaskPostprocessing(min_area_fraction=1.5)
    with pytest.raises(ValueError, match="neck_fraction"):
        MaskPostprocessing(neck_fraction=-0.1)
    with pytest.raises(ValueError, match="nms_iou"):
        BoxPostprocessing(nms_iou=2.0)
