"""Metric definitions checked against scikit-learn and against cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from bundle.metrics import (
    MeanDice,
    MultiLabelAUROC,
    RSNAMap,
    choose_box_score,
    coco_map,
    dice_per_image,
    macro_auroc,
    mean_dice,
    per_class_auroc,
    positive_dice,
    rsna_image_score,
    rsna_map,
    threshold_metrics,
)


@pytest.fixture
def multilabel() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < [0.2, 0.5, 0.7, 0.4]).astype(float)
    probs = np.clip(0.35 * labels + rng.random((200, 4)) * 0.7, 0, 1).round(2)  # rounding makes ties
    known = rng.random((200, 4)) < 0.8
    return probs, labels, known


def test_auroc_matches_sklearn(multilabel) -> None:
    probs, labels, known = multilabel
    expected = [roc_auc_score(labels[known[:, c], c], probs[known[:, c], c]) for c in range(4)]
    np.testing.assert_allclose(per_class_auroc(probs, labels, known), expected)
    assert macro_auroc(probs, labels, known) == pytest.approx(np.mean(expected))


def test_auroc_undefined_class_is_left_out(multilabel) -> None:
    probs, labels, known = multilabel
    labels[:, 0] = 1  # no negative: AUROC of class 0 undefined
    per_class = per_class_auroc(probs, labels, known)
    assert np.isnan(per_class[0])
    assert macro_auroc(probs, labels, known) == pytest.approx(np.mean(per_class[1:]))


def test_threshold_metrics_match_sklearn(multilabel) -> None:
    probs, labels, known = multilabel
    thresholds = np.array([0.3, 0.5, 0.6, 0.45])
    got = threshold_metrics(probs, labels, known, thresholds)
    pred = probs >= thresholds
    for c in range(4):
        y, p = labels[known[:, c], c], pred[known[:, c], c]
        assert got["f1"][c] == pytest.approx(f1_score(y, p))
        assert got["accuracy"][c] == pytest.approx(accuracy_score(y, p))
        assert got["sensitivity"][c] == pytest.approx(recall_score(y, p))
        assert got["specificity"][c] == pytest.approx(recall_score(y, p, pos_label=0))
    assert got["f1_macro"] == pytest.approx(np.mean(got["f1"]))
    # micro F1 pools the known sample-class pairs; it is not the accuracy
    assert got["f1_micro"] == pytest.approx(f1_score(labels[known], pred[known]))
    assert got["accuracy_micro"] == pytest.approx(accuracy_score(labels[known], pred[known]))
    assert got["f1_micro"] != pytest.approx(got["accuracy_micro"])


def test_multilabel_auroc_ignite_metric(multilabel) -> None:
    probs, labels, known = multilabel
    metric = MultiLabelAUROC()
    has = torch.ones(len(probs), dtype=torch.bool)
    metric.update((torch.tensor(probs), torch.tensor(labels), torch.tensor(known), has))
    assert metric.compute() == pytest.approx(macro_auroc(probs, labels, known))


# -- segmentation ----------------------------------------------------------------------------------------------


def test_dice_hand_cases() -> None:
    empty = np.zeros((4, 4), bool)
    square = empty.copy()
    square[:2, :2] = True  # 4 pixels
    half = empty.copy()
    half[:2, :1] = True  # 2 pixels, inside square
    scores = dice_per_image(np.stack([empty, square, empty, half]), np.stack([empty, empty, square, square])).numpy()
    # empty/empty = 1 (SIIM-ACR); prediction without truth = 0; missed truth = 0; 2*2 / (2 + 4) = 2/3
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.0, 2 / 3])
    assert mean_dice(scores) == pytest.approx((1 + 0 + 0 + 2 / 3) / 4)
    # images 3 and 4 have a true mask: (0 + 2/3) / 2
    assert positive_dice(scores, [False, False, True, True]) == pytest.approx(1 / 3)
    assert np.isnan(positive_dice(scores, [False] * 4))


def test_mean_dice_ignite_metric() -> None:
    prob = torch.zeros(2, 1, 4, 4)
    prob[0, 0, :2, :2] = 0.9
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2, :1] = 1
    metric = MeanDice()
    metric.update((prob, mask, torch.tensor([True, True])))
    assert metric.compute() == pytest.approx((2 / 3 + 1) / 2)


# -- detection: RSNA challenge metric --------------------------------------------------------------------------


def test_rsna_one_truth_two_predictions() -> None:
    truth = np.array([[0, 0, 10, 10]])
    # pred A: [0, 0, 10, 6] IoU 60/100 = 0.6 (score 0.9); pred B: [9, 0, 19, 10] IoU 10/190 ~ 0.05 (score 0.8)
    preds = np.array([[9, 0, 19, 10], [0, 0, 10, 6]])
    scores = np.array([0.8, 0.9])
    # thresholds 0.40 .. 0.55 (4 of 8): A is a hit -> TP 1, FP 1 (B), FN 0 -> 1/2
    # thresholds 0.60 .. 0.75 (4 of 8): IoU 0.6 is not > t -> TP 0, FP 2, FN 1 -> 0
    # mean over the 8 thresholds: (4 * 0.5 + 4 * 0) / 8 = 0.25
    assert rsna_image_score(preds, scores, truth) == pytest.approx(0.25)


def test_rsna_greedy_by_score() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    # the higher-scored prediction overlaps truth 1 with IoU 0.8; the other matches truth 2 exactly
    preds = np.array([[20, 0, 30, 10], [0, 0, 10, 8]])
    scores = np.array([0.5, 0.9])
    # every threshold <= 0.75: 2 TP, 0 FP, 0 FN -> 1
    assert rsna_image_score(preds, scores, truth) == pytest.approx(1.0)
    # two copies of a box with IoU 0.8 to truth 1: the first is a TP at every threshold, the second finds truth 1
    # taken (and IoU 0 with truth 2) so is an FP; truth 2 is an FN -> 1 / (1 + 1 + 1) = 1/3
    dup = np.array([[0, 0, 10, 8], [0, 0, 10, 8]])
    assert rsna_image_score(dup, np.array([0.9, 0.1]), truth) == pytest.approx(1 / 3)


def test_rsna_empty_cases_and_dataset_mean() -> None:
    none = np.zeros((0, 4))
    assert np.isnan(rsna_image_score(none, np.zeros(0), none))  # no truth, no prediction: left out
    assert rsna_image_score(np.array([[0, 0, 5, 5]]), np.array([0.5]), none) == 0.0  # false alarm: 0
    assert rsna_image_score(none, np.zeros(0), np.array([[0, 0, 5, 5]])) == 0.0  # missed: 0
    exact = np.array([[0, 0, 10, 10]])
    # images: exact hit (1), left out, false alarm (0) -> (1 + 0) / 2
    got = rsna_map([exact, none, exact], [np.array([0.9]), np.zeros(0), np.array([0.9])], [exact, none, none])
    assert got == pytest.approx(0.5)
    assert np.isnan(rsna_map([none], [np.zeros(0)], [none]))


def test_rsna_ignite_metric() -> None:
    exact = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    det = [{"boxes": exact, "scores": torch.tensor([0.9]), "labels": torch.zeros(1)}] * 2
    metric = RSNAMap()
    metric.update((det, [exact, torch.zeros(0, 4)], torch.tensor([True, True])))
    assert metric.compute() == pytest.approx(0.5)


# -- detection: COCO mAP ---------------------------------------------------------------------------------------


def test_coco_map_excludes_classes_without_truth() -> None:
    none = np.zeros((0, 4))
    box = np.array([[0, 0, 10, 10]])
    pred_boxes = [box, none, np.array([[0, 0, 5, 5]])]
    pred_labels = [np.array([0]), np.zeros(0), np.array([1])]
    pred_scores = [np.array([0.9]), np.zeros(0), np.array([0.8])]
    true_boxes = [box, np.array([[1, 1, 4, 4]]), none]
    true_labels = [np.array([0]), np.array([0]), np.zeros(0)]
    # class "a": 2 true boxes, 1 found with precision 1 at every IoU -> recall 0.5; of the 101 recall points
    # 0.00 .. 0.50 (51 points) have precision 1 -> AP = 51 / 101 at every IoU. Class "b" has no truth: left out
    # (MONAI's COCOMetric alone would average its -1 in and report a negative mAP).
    got = coco_map(pred_boxes, pred_labels, pred_scores, true_boxes, true_labels, classes=["a", "b"])
    assert got == pytest.approx(51 / 101)
    assert np.isnan(coco_map([box], [np.array([0])], [np.array([0.9])], [none], [np.zeros(0)], classes=["a"]))


def test_coco_map_iou_range() -> None:
    truth = [np.array([[0, 0, 10, 10]])]
    # IoU 0.6: a hit at the IoU thresholds 0.50, 0.55, 0.60 (3 of 10) -> mAP 0.3; AP50 = 1
    pred = [np.array([[0, 0, 10, 6]])]
    args = (pred, [np.array([0])], [np.array([0.9])], truth, [np.array([0])])
    assert coco_map(*args, classes=["a"]) == pytest.approx(0.3)
    assert coco_map(*args, classes=["a"], iou_range=(0.5, 0.5, 0.05)) == pytest.approx(1.0)


def test_mean_dice_metric_over_positive_images_only() -> None:
    from bundle.metrics import MeanDice

    truth = torch.zeros(3, 1, 4, 4)
    truth[0, 0, :2, :2] = 1  # image 0: 4 truth pixels, 2 predicted -> Dice 2*2/(2+4) = 2/3
    probs = torch.zeros(3, 1, 4, 4)
    probs[0, 0, 0, :2] = 1
    probs[2, 0, 3, 3] = 1  # image 2: empty truth, one false-positive pixel -> Dice 0; image 1: empty/empty -> 1
    flags = torch.tensor([True, True, True])
    everything, positives = MeanDice(), MeanDice(positives_only=True)
    for metric in (everything, positives):
        metric.reset()
        metric.update((probs, truth, flags))
    assert everything.compute() == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert positives.compute() == pytest.approx(2 / 3)


def test_choose_box_score_drops_low_score_false_positives() -> None:
    truth = [np.array([[0, 0, 10, 10]]), np.zeros((0, 4)), np.array([[20, 20, 30, 30]])]
    # image 1: an exact hit (0.9) and a stray box (0.3); image 2 (no truth): a stray box (0.2); image 3: a hit (0.6)
    boxes = [np.array([[0, 0, 10, 10], [40, 40, 50, 50]]), np.array([[5, 5, 15, 15]]), np.array([[20, 20, 30, 30]])]
    scores = [np.array([0.9, 0.3]), np.array([0.2]), np.array([0.6])]
    # keeping all: (1/2 + 0 + 1) / 3 = 0.5; above 0.3: image 2 left out -> (1 + 1) / 2 = 1; above 0.65: (1 + 0) / 2
    assert rsna_map(boxes, scores, truth) == pytest.approx(0.5)
    assert choose_box_score(boxes, scores, truth) == pytest.approx(0.35)
    assert choose_box_score(boxes, scores, truth, candidates=(0.0, 0.7)) == 0.0  # 0.5 beats 0.5 at 0.7: the lowest
