"""Detection metrics for star/galaxy instance catalogs.

COCO-style average precision with the astronomical size bins of Burke et al.
(2019): AP over IoU 0.50:0.95, AP50, AP75 and AP for small / medium / large
objects (true bounding-box area < 16², 16²–32², > 32² pixels), each computed
from a 51-point interpolated precision-recall curve, per class and combined
(the mean over classes that have truth objects, as COCO's mAP). Also
class-agnostic confusion matrices and the precision reached at 80% recall.

Boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``, ``x2`` exclusive, so the
box of a mask covering rows ``r0..r1`` is ``(r0, c0, r1 + 1, c1 + 1)``. Class
ids follow :data:`astrodask.classes.OBJECT_CLASSES` (0 is background).
"""

import numpy as np

from .classes import OBJECT_CLASSES
# the detector's result type and box geometry live with the models; re-exported here
from .models.detections import Instances, box_area, box_iou, boxes_from_masks, mask_iou

__all__ = ["Instances", "box_area", "box_iou", "boxes_from_masks", "mask_iou",
           "evaluate_detections", "confusion_matrix", "completeness", "evaluation_report",
           "match_detections", "interpolated_precision"]

#: IoU thresholds of the AP average (0.50, 0.55, ..., 0.95).
IOU_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)

#: Recall values at which the interpolated precision is read (0, 0.02, ..., 1).
RECALL_POINTS = np.round(np.linspace(0.0, 1.0, 51), 2)

#: Size bins on the true bounding-box area in pixels² (lower inclusive, upper exclusive).
SIZE_BINS = {
    "all": (0.0, np.inf),
    "small": (0.0, 16.0 ** 2),
    "medium": (16.0 ** 2, 32.0 ** 2),
    "large": (32.0 ** 2, np.inf),
}


def _iou(truth, detections, iou_type):
    if iou_type == "bbox":
        return box_iou(detections.boxes, truth.boxes)
    if iou_type == "mask":
        if truth.masks is None or detections.masks is None:
            raise ValueError("iou_type='mask' needs masks on truth and detections")
        return mask_iou(detections.masks, detections.boxes, truth.masks, truth.boxes)
    raise ValueError(f"unknown iou_type {iou_type!r}; use 'bbox' or 'mask'")


def match_detections(iou, gt_ignore, threshold):
    """Greedy COCO matching of score-sorted detections to truth.

    Parameters
    ----------
    iou : ndarray, shape (D, G)
        IoU of each detection (rows, sorted by decreasing score) with each
        truth object.
    gt_ignore : ndarray of bool, shape (G,)
        Truth objects outside the size bin: a detection matched to one is
        neither a true nor a false positive.
    threshold : float
        Minimum IoU of a match.

    Returns
    -------
    det_match : ndarray of int, shape (D,)
        Index of the matched truth object, or -1.
    """
    n_det, n_gt = iou.shape
    det_match = np.full(n_det, -1)
    gt_free = np.ones(n_gt, dtype=bool)
    gt_ignore = np.asarray(gt_ignore, dtype=bool)
    for d in range(n_det):
        candidates = np.flatnonzero(gt_free & (iou[d] >= threshold))
        if not len(candidates):
            continue
        # Prefer objects inside the bin; among those the highest IoU.
        inside = candidates[~gt_ignore[candidates]]
        if len(inside):
            candidates = inside
        best = candidates[np.argmax(iou[d, candidates])]
        det_match[d] = best
        gt_free[best] = False
    return det_match


def interpolated_precision(scores, is_tp, n_truth, recall_points=RECALL_POINTS):
    """Precision read at ``recall_points`` from the monotone envelope of the PR curve.

    ``scores`` and ``is_tp`` describe the counted detections of all images;
    recall points never reached get precision 0. Returns NaN everywhere when
    there is no truth object.
    """
    if n_truth == 0:
        return np.full(len(recall_points), np.nan)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tp = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    fp = np.cumsum(~np.asarray(is_tp, dtype=bool)[order])
    recall = tp / n_truth
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    index = np.searchsorted(recall, recall_points, side="left")
    out = np.zeros(len(recall_points))
    reached = index < len(recall)
    out[reached] = envelope[index[reached]]
    return out


def _class_curves(truths, detections, class_id, iou_type, max_detections):
    """Interpolated precision (n_thresholds, n_bins, n_recall) for one class."""
    n_t, bins = len(IOU_THRESHOLDS), list(SIZE_BINS.values())
    scores = [[[] for _ in bins] for _ in range(n_t)]
    tps = [[[] for _ in bins] for _ in range(n_t)]
    n_truth = np.zeros(len(bins), dtype=int)
    for truth, dets in zip(truths, detections):
        gt = truth.select(truth.class_ids == class_id)
        dt = dets.select(dets.class_ids == class_id)
        dt = dt.select(np.argsort(-dt.scores, kind="mergesort")[:max_detections])
        iou = _iou(gt, dt, iou_type) if len(gt) and len(dt) else np.zeros((len(dt), len(gt)))
        gt_area, dt_area = box_area(gt.boxes), box_area(dt.boxes)
        for b, (lo, hi) in enumerate(bins):
            gt_ignore = (gt_area < lo) | (gt_area >= hi)
            dt_outside = (dt_area < lo) | (dt_area >= hi)
            n_truth[b] += np.count_nonzero(~gt_ignore)
            for t, threshold in enumerate(IOU_THRESHOLDS):
                match = match_detections(iou, gt_ignore, threshold)
                matched = match >= 0
                ignored = dt_outside.copy()
                ignored[matched] = gt_ignore[match[matched]]
                scores[t][b].append(dt.scores[~ignored])
                tps[t][b].append(matched[~ignored])
    curves = np.zeros((n_t, len(bins), len(RECALL_POINTS)))
    for t in range(n_t):
        for b in range(len(bins)):
            curves[t, b] = interpolated_precision(np.concatenate(scores[t][b]),
                                                  np.concatenate(tps[t][b]), n_truth[b])
    return curves


def _summarise(curves):
    t50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
    t75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
    r80 = int(np.flatnonzero(RECALL_POINTS == 0.8)[0])
    ap = curves.mean(axis=2)  # (threshold, bin); NaN where the bin has no truth
    names = list(SIZE_BINS)
    return {
        "AP": float(ap[:, names.index("all")].mean()),
        "AP50": float(ap[t50, names.index("all")]),
        "AP75": float(ap[t75, names.index("all")]),
        "APs": float(ap[:, names.index("small")].mean()),
        "APm": float(ap[:, names.index("medium")].mean()),
        "APl": float(ap[:, names.index("large")].mean()),
        "precision_at_80_recall": float(curves[t50, names.index("all"), r80]),
    }


def evaluate_detections(truths, detections, iou_type="bbox", class_ids=(1, 2),
                        max_detections=1000):
    """Average precision per class and combined over a set of images.

    Parameters
    ----------
    truths, detections : sequence of Instances
        One entry per image, in the same order; detections carry scores.
    iou_type : {"bbox", "mask"}
        Overlap measure used for matching.
    class_ids : sequence of int
        Classes to evaluate (default star and galaxy).
    max_detections : int
        Highest-scoring detections kept per image and class.

    Returns
    -------
    dict
        ``{class_name: {"AP", "AP50", "AP75", "APs", "APm", "APl",
        "precision_at_80_recall"}, "combined": {...}}``; a metric is NaN
        where no truth object falls in its class or size bin. ``combined``
        averages the classes' interpolated precision (ignoring NaN classes).
    """
    if len(truths) != len(detections):
        raise ValueError("truths and detections must hold the same number of images")
    results, curves = {}, []
    for class_id in class_ids:
        curve = _class_curves(truths, detections, class_id, iou_type, max_detections)
        curves.append(curve)
        results[OBJECT_CLASSES[class_id]] = _summarise(curve)
    stacked = np.stack(curves)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        combined = np.nanmean(stacked, axis=0)
    results["combined"] = _summarise(combined)
    return results


class _quiet_nanmean:
    """Silence numpy's 'mean of empty slice' warning where NaN is the intended answer."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def confusion_matrix(truths, detections, iou_threshold=0.5, iou_type="bbox",
                     n_classes=len(OBJECT_CLASSES)):
    """Class-agnostic matching, then a truth × predicted class count matrix.

    Detections (by decreasing score) are matched to the unmatched truth object
    of highest IoU ≥ ``iou_threshold`` whatever the classes. Row/column 0 is
    background: a missed truth object counts in column 0, an unmatched
    detection in row 0. Entry ``[0, 0]`` is always 0.

    Returns
    -------
    ndarray of int, shape (n_classes, n_classes)
        Rows truth class, columns predicted class.
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for truth, dets in zip(truths, detections):
        dets, match = _agnostic_match(truth, dets, iou_threshold, iou_type)
        for d, g in enumerate(match):
            true_class = truth.class_ids[g] if g >= 0 else 0
            matrix[true_class, dets.class_ids[d]] += 1
        missed = np.setdiff1d(np.arange(len(truth)), match[match >= 0])
        np.add.at(matrix, (truth.class_ids[missed], 0), 1)
    return matrix


def _agnostic_match(truth, dets, iou_threshold, iou_type):
    """Detections sorted by decreasing score and their truth match (-1: none), any class."""
    dets = dets.select(np.argsort(-dets.scores, kind="mergesort"))
    iou = _iou(truth, dets, iou_type) if len(truth) and len(dets) else np.zeros((len(dets), len(truth)))
    return dets, match_detections(iou, np.zeros(len(truth), dtype=bool), iou_threshold)


def completeness(truths, detections, values, edges, iou_threshold=0.5, iou_type="bbox"):
    """Fraction of truth objects found, in bins of a per-object quantity (e.g. S/N).

    Matching is as for :func:`confusion_matrix` (any class, by decreasing
    score, IoU ≥ ``iou_threshold``).

    Parameters
    ----------
    truths, detections : sequence of Instances
    values : sequence of ndarray
        One value per truth object of each image (same order as ``truths``).
    edges : sequence of float
        Bin edges; bin ``i`` holds ``edges[i] <= value < edges[i + 1]``.

    Returns
    -------
    list of dict
        Per bin: ``low``, ``high`` (None for an infinite last edge), ``n``
        (truth objects), ``found`` (fraction
        matched by a detection of any class) and ``found_right_class``
        (fraction matched by a detection of the true class); fractions are
        NaN for an empty bin.
    """
    found, right, all_values = [], [], []
    for truth, dets, value in zip(truths, detections, values, strict=True):
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if len(value) != len(truth):
            raise ValueError(f"{len(value)} values for {len(truth)} truth objects")
        dets, match = _agnostic_match(truth, dets, iou_threshold, iou_type)
        hit = np.zeros(len(truth), dtype=bool)
        same = np.zeros(len(truth), dtype=bool)
        matched = match >= 0
        hit[match[matched]] = True
        same[match[matched]] = dets.class_ids[matched] == truth.class_ids[match[matched]]
        found.append(hit)
        right.append(same)
        all_values.append(value)
    found, right = np.concatenate(found), np.concatenate(right)
    all_values = np.concatenate(all_values)
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (all_values >= low) & (all_values < high)
        n = int(inside.sum())
        out.append({"low": float(low), "high": float(high) if np.isfinite(high) else None, "n": n,
                    "found": float(found[inside].mean()) if n else float("nan"),
                    "found_right_class": float(right[inside].mean()) if n else float("nan")})
    return out


def evaluation_report(truths, detections, iou_type="bbox"):
    """All metrics of the issue in one JSON-ready dict.

    Holds ``metrics`` (see :func:`evaluate_detections`), confusion matrices
    at IoU 0.5 and 0.75 (``confusion_iou50``, ``confusion_iou75``, rows truth,
    columns predicted, in ``classes`` order) and object counts.
    """
    return {
        "iou_type": iou_type,
        "classes": list(OBJECT_CLASSES),
        "n_images": len(truths),
        "n_truth": int(sum(len(t) for t in truths)),
        "n_detections": int(sum(len(d) for d in detections)),
        "metrics": evaluate_detections(truths, detections, iou_type=iou_type),
        "confusion_iou50": confusion_matrix(truths, detections, 0.5, iou_type).tolist(),
        "confusion_iou75": confusion_matrix(truths, detections, 0.75, iou_type).tolist(),
    }
