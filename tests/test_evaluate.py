"""Metric code on hand-made cases whose answers are worked out by hand."""

import math

import numpy as np
import pytest

from astrodask.evaluate import (
    Instances, box_iou, boxes_from_masks, completeness, confusion_matrix, evaluate_detections,
    evaluation_report, interpolated_precision, mask_iou,
)

STAR, GALAXY = 1, 2


def test_box_iou_known_values():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 6], [5, 5, 15, 15], [20, 20, 30, 30]]
    np.testing.assert_allclose(box_iou(a, b), [[0.6, 25 / 175, 0.0]])


def test_boxes_from_masks_are_exclusive_ends():
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 2:5, 3:7] = True
    np.testing.assert_array_equal(boxes_from_masks(masks), [[2, 3, 5, 7]])


def test_mask_iou_counts_pixels():
    a = np.zeros((1, 10, 10), dtype=bool)
    b = np.zeros((2, 10, 10), dtype=bool)
    a[0, 0:4, 0:4] = True           # 16 px
    b[0, 2:4, 0:4] = True           # 8 px, all inside a
    b[1, 6:9, 6:9] = True           # disjoint
    iou = mask_iou(a, boxes_from_masks(a), b, boxes_from_masks(b))
    np.testing.assert_allclose(iou, [[0.5, 0.0]])


def test_perfect_detections_give_one():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 90, 90]]
    truth = Instances(boxes, [STAR, GALAXY, GALAXY])
    dets = Instances(boxes, [STAR, GALAXY, GALAXY], scores=[0.9, 0.8, 0.7])
    result = evaluate_detections([truth], [dets])
    for name in ("star", "galaxy", "combined"):
        assert result[name]["AP"] == 1.0
        assert result[name]["AP50"] == 1.0
        assert result[name]["precision_at_80_recall"] == 1.0
    # the only star is small, so the star has no medium or large objects
    assert result["star"]["APs"] == 1.0
    assert math.isnan(result["star"]["APm"]) and math.isnan(result["star"]["APl"])
    assert result["galaxy"]["APm"] == 1.0 and result["galaxy"]["APl"] == 1.0
    assert math.isnan(result["galaxy"]["APs"])


def test_false_positive_between_two_hits():
    # two galaxies; ranked detections: hit (0.9), false positive (0.8), hit (0.7).
    # PR points: (R .5, P 1), (R .5, P .5), (R 1, P 2/3). The envelope is 1 up
    # to recall 0.5 (26 of the 51 points) and 2/3 above (25 points).
    truth = Instances([[0, 0, 10, 10], [30, 30, 40, 40]], [GALAXY, GALAXY])
    dets = Instances([[0, 0, 10, 10], [60, 60, 70, 70], [30, 30, 40, 40]],
                     [GALAXY] * 3, scores=[0.9, 0.8, 0.7])
    result = evaluate_detections([truth], [dets])
    expected = (26 + 25 * 2 / 3) / 51
    assert result["galaxy"]["AP50"] == pytest.approx(expected)
    assert result["galaxy"]["AP"] == pytest.approx(expected)
    assert result["galaxy"]["precision_at_80_recall"] == pytest.approx(2 / 3)
    # no stars at all: star metrics undefined, combined equals galaxy
    assert math.isnan(result["star"]["AP"])
    assert result["combined"]["AP50"] == pytest.approx(expected)


def test_iou_thresholds_average():
    # IoU 0.6 is a match at 0.50, 0.55 and 0.60: 3 of the 10 thresholds.
    truth = Instances([[0, 0, 10, 10]], [STAR])
    dets = Instances([[0, 0, 10, 6]], [STAR], scores=[0.99])
    result = evaluate_detections([truth], [dets])["star"]
    assert result["AP50"] == 1.0
    assert result["AP75"] == 0.0
    assert result["AP"] == pytest.approx(0.3)


def test_wrong_class_is_a_miss_and_a_false_positive():
    truth = Instances([[0, 0, 10, 10]], [STAR])
    dets = Instances([[0, 0, 10, 10]], [GALAXY], scores=[0.9])
    result = evaluate_detections([truth], [dets])
    assert result["star"]["AP50"] == 0.0
    assert math.isnan(result["galaxy"]["AP50"])


def test_size_bins_and_images_pooled():
    # image 1: small star found; image 2: large star missed, a false positive
    # elsewhere scored lower than the hit.
    t1 = Instances([[0, 0, 8, 8]], [STAR])
    d1 = Instances([[0, 0, 8, 8]], [STAR], scores=[0.9])
    t2 = Instances([[0, 0, 40, 40]], [STAR])
    d2 = Instances([[100, 100, 108, 108]], [STAR], scores=[0.5])
    result = evaluate_detections([t1, t2], [d1, d2])["star"]
    assert result["APs"] == 1.0
    assert result["APl"] == 0.0
    assert math.isnan(result["APm"])
    # all sizes: hit at rank 1 (R .5, P 1), FP at rank 2: 26 points at 1, rest 0
    assert result["AP50"] == pytest.approx(26 / 51)
    assert result["precision_at_80_recall"] == 0.0


def test_detection_on_ignored_object_is_not_a_false_positive():
    # In the 'small' bin the large star is ignored: the detection that hits it
    # must not count against the small star's precision.
    truth = Instances([[0, 0, 8, 8], [50, 50, 90, 90]], [STAR, STAR])
    dets = Instances([[50, 50, 90, 90], [0, 0, 8, 8]], [STAR, STAR], scores=[0.9, 0.8])
    assert evaluate_detections([truth], [dets])["star"]["APs"] == 1.0


def test_interpolated_precision_reads_envelope():
    # 5 truths; TP FP TP TP FP TP -> recall .2 .2 .4 .6 .6 .8, precision 1 .5 .667 .75 .6 .667
    prec = interpolated_precision([6, 5, 4, 3, 2, 1], [1, 0, 1, 1, 0, 1], 5,
                                  recall_points=np.array([0.0, 0.2, 0.3, 0.6, 0.8, 1.0]))
    np.testing.assert_allclose(prec, [1.0, 1.0, 0.75, 0.75, 2 / 3, 0.0])


def test_confusion_matrix_counts():
    truth = Instances([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
                      [STAR, GALAXY, GALAXY])
    dets = Instances([[0, 0, 10, 10],      # star as star
                      [20, 20, 30, 30],    # galaxy as star
                      [70, 70, 80, 80],    # spurious galaxy
                      [40, 40, 50, 47]],   # galaxy as galaxy, IoU 0.7
                     [STAR, STAR, GALAXY, GALAXY], scores=[0.9, 0.8, 0.7, 0.6])
    expected50 = [[0, 0, 1],
                  [0, 1, 0],
                  [0, 1, 1]]
    np.testing.assert_array_equal(confusion_matrix([truth], [dets], 0.5), expected50)
    expected75 = [[0, 0, 2],
                  [0, 1, 0],
                  [1, 1, 0]]
    np.testing.assert_array_equal(confusion_matrix([truth], [dets], 0.75), expected75)


def test_completeness_in_bins_of_a_truth_quantity():
    truth = Instances([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 64, 64]],
                      [STAR, GALAXY, GALAXY, GALAXY])
    dets = Instances([[0, 0, 10, 10],      # star as star
                      [20, 20, 30, 30],    # galaxy as star
                      [40, 40, 50, 47]],   # galaxy as galaxy, IoU 0.7
                     [STAR, STAR, GALAXY], scores=[0.9, 0.8, 0.6])
    snr = [np.array([50.0, 8.0, 12.0, 5.0])]
    bins = completeness([truth], [dets], snr, [0, 10, 100, 1000])
    assert [b["n"] for b in bins] == [2, 2, 0]
    assert bins[0]["found"] == 0.5 and bins[0]["found_right_class"] == 0.0  # S/N 8 as star, 5 missed
    assert bins[1]["found"] == 1.0 and bins[1]["found_right_class"] == 1.0
    assert math.isnan(bins[2]["found"])
    strict = completeness([truth], [dets], snr, [0, 10, 100], iou_threshold=0.75)
    assert strict[1]["found"] == 0.5  # the IoU 0.7 galaxy no longer counts
    with pytest.raises(ValueError, match="3 values for 4 truth objects"):
        completeness([truth], [dets], [snr[0][:3]], [0, 10])


def test_report_with_masks():
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 10:20, 10:20] = True
    truth = Instances(boxes_from_masks(masks), [STAR, GALAXY], masks=masks)
    dmasks = masks.copy()
    dmasks[1, 10:20, 10:14] = False  # galaxy mask IoU 0.6 but same box
    dets = Instances(boxes_from_masks(masks), [STAR, GALAXY], scores=[0.9, 0.8], masks=dmasks)
    report = evaluation_report([truth], [dets], iou_type="mask")
    assert report["metrics"]["galaxy"]["AP"] == pytest.approx(0.3)
    assert report["metrics"]["star"]["AP"] == 1.0
    assert report["metrics"]["combined"]["AP"] == pytest.approx(0.65)
    assert report["n_truth"] == 2 and report["n_detections"] == 2
    # at 0.75 the galaxy is missed (row galaxy, column background) and its
    # detection is spurious (row background, column galaxy)
    assert report["confusion_iou75"] == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
