"""Post-processing without gradients (NumPy): NMS, per-class detection, mask pasting."""

import numpy as np

from ..detections import box_iou

__all__ = ["box_iou", "nms", "per_class_nms", "select_detections", "paste_masks",
           "box_grid_coordinates", "greedy_loop"]


#: Candidate pairs whose IoU is computed at once in :func:`nms` (bounds its memory).
NMS_PAIRS_PER_STEP = 1 << 21

#: Above this many x-overlapping pairs per box, :func:`nms` takes the plain
#: greedy loop: boxes that crowded suppress each other, so it ends early.
NMS_DENSE_PAIRS = 256


def _iou(boxes, areas, i, j):
    """IoU of boxes ``i`` with boxes ``j`` (index arrays, or one index against many)."""
    y1 = np.maximum(boxes[i, 0], boxes[j, 0])
    x1 = np.maximum(boxes[i, 1], boxes[j, 1])
    y2 = np.minimum(boxes[i, 2], boxes[j, 2])
    x2 = np.minimum(boxes[i, 3], boxes[j, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    return inter / np.maximum(areas[i] + areas[j] - inter, 1e-9)


def _x_partners(boxes):
    """Boxes in order of ``x1`` and, for each, how many after it start before it ends."""
    by_x = np.argsort(boxes[:, 1], kind="stable")
    ends = np.searchsorted(boxes[by_x, 1], boxes[by_x, 3], side="left")
    return by_x, np.maximum(ends - np.arange(len(boxes)) - 1, 0)


def _overlapping_pairs(by_x, counts):
    """Index pairs ``(i, j)`` of boxes whose x extents overlap, each pair once, in steps.

    Sorted by ``x1``, box ``k``'s partners are the ``counts[k]`` boxes after
    it: only pairs that can overlap are formed (a few per source, not n²/2).
    """
    bounds = np.searchsorted(np.cumsum(counts), np.arange(0, counts.sum(), NMS_PAIRS_PER_STEP),
                             side="right")
    for lo, hi in zip(bounds, list(bounds[1:]) + [len(by_x)]):
        first = np.repeat(np.arange(lo, hi), counts[lo:hi])
        starts = np.repeat(np.cumsum(counts[lo:hi]) - counts[lo:hi], counts[lo:hi])
        second = first + 1 + np.arange(len(first)) - starts
        yield by_x[first], by_x[second]


def greedy_loop(boxes, areas, order, threshold, max_output):
    """Greedy NMS step by step: keep the best box left, drop the rest that overlap it by more.

    ``boxes`` (N, 4) float64, their ``areas``, and ``order`` (indices by
    decreasing score); returns the kept indices. :func:`nms` takes this path
    for very crowded boxes, where it ends early.
    """
    keep = []
    while len(order) and len(keep) < max_output:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[_iou(boxes, areas, best, rest) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def nms(boxes, scores, threshold, max_output):
    """Greedy non-maximum suppression.

    Returns the indices of the kept boxes, by decreasing score: a box is
    dropped when its IoU with a higher-scoring kept box exceeds ``threshold``
    (>= 0). The IoU is computed for the pairs whose x extents overlap only,
    then one pass in score order keeps each box that no kept box suppresses:
    the same boxes as the plain greedy loop (which very crowded boxes take,
    as it ends sooner there).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    by_x, counts = _x_partners(boxes)
    if counts.sum() > NMS_DENSE_PAIRS * n:
        return greedy_loop(boxes, areas, order, threshold, max_output)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    better, worse = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i, j in _overlapping_pairs(by_x, counts):
        hit = _iou(boxes, areas, i, j) > threshold
        better.append(np.minimum(rank[i[hit]], rank[j[hit]]))
        worse.append(np.maximum(rank[i[hit]], rank[j[hit]]))
    better, worse = np.concatenate(better), np.concatenate(worse)
    # in score order, the boxes each box drops if it is kept (CSR)
    by_better = np.argsort(better, kind="stable")
    worse = worse[by_better]
    start = np.searchsorted(better[by_better], np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for r in range(n):
        if len(keep) >= max_output:
            break
        if not suppressed[r]:
            keep.append(r)
            suppressed[worse[start[r]:start[r + 1]]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def select_detections(proposals, probs, boxes_per_class, config, image_shape):
    """Final detections of one image from the box head's outputs.

    Each RoI takes its most probable class; background RoIs and those below
    ``detection_min_confidence`` are dropped, then NMS runs per class with
    ``detection_nms_threshold`` and the best ``detection_max_instances`` stay.

    Parameters
    ----------
    proposals : ndarray (N, 4)
    probs : ndarray (N, K)
        Class probabilities.
    boxes_per_class : ndarray (N, K, 4)
        Refined boxes for every class.

    Returns
    -------
    boxes (M, 4), class_ids (M,), scores (M,)
    """
    class_ids = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), class_ids]
    boxes = boxes_per_class[np.arange(len(probs)), class_ids]
    height, width = image_shape
    boxes = np.clip(boxes, 0, [height, width, height, width])
    valid = ((class_ids > 0) & (scores >= config.detection_min_confidence)
             & (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0))
    valid = np.flatnonzero(valid)
    kept = valid[per_class_nms(boxes[valid], class_ids[valid], scores[valid],
                               config.detection_nms_threshold, config.detection_max_instances)]
    return boxes[kept].astype(np.float32), class_ids[kept], scores[kept].astype(np.float32)


def per_class_nms(boxes, class_ids, scores, threshold, max_instances):
    """NMS within each class; indices of the best ``max_instances`` kept, by decreasing score."""
    kept = [index[nms(boxes[index], scores[index], threshold, max_instances)]
            for index in (np.flatnonzero(class_ids == c) for c in np.unique(class_ids))]
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")][:max_instances]


def paste_masks(mask_probs, boxes, image_shape, threshold=0.5):
    """Resample box-relative mask probabilities onto the image grid.

    Parameters
    ----------
    mask_probs : ndarray (N, M, M)
        Mask probabilities on each box's M x M grid.
    boxes : ndarray (N, 4)
        ``(y1, x1, y2, x2)`` image pixels.
    image_shape : (H, W)
    threshold : float
        Probability above which a pixel belongs to the object.

    Returns
    -------
    ndarray of bool, shape (N, H, W)
        A pixel is inside a mask when its centre lies in the box and the
        bilinearly interpolated probability there (the grid's edge values
        extended beyond it) is >= ``threshold``.
    """
    masks = np.zeros((len(boxes),) + tuple(image_shape), dtype=bool)
    for i, prob, window, u, v in box_grid_coordinates(mask_probs, boxes, image_shape):
        # bilinear interpolation is separable: rows, then columns
        size = prob.shape[0]
        values = _linear_weights(u, size) @ prob.astype(np.float64) @ _linear_weights(v, size).T
        masks[(i,) + window] = values >= threshold
    return masks


def box_grid_coordinates(mask_probs, boxes, image_shape):
    """Where each image pixel of each box falls on its mask grid.

    Yields, for every box covering at least one pixel centre, ``(i, grid,
    window, u, v)``: its index, its grid, the ``(rows, columns)`` slices of
    the image it covers, and the grid coordinates of those rows and columns
    (grid pixel centres at integers).
    """
    height, width = image_shape
    for i, (prob, (y1, x1, y2, x2)) in enumerate(zip(mask_probs, boxes)):
        size = prob.shape[0]
        r0, r1 = max(int(np.ceil(y1 - 0.5)), 0), min(int(np.floor(y2 - 0.5)), height - 1)
        c0, c1 = max(int(np.ceil(x1 - 0.5)), 0), min(int(np.floor(x2 - 0.5)), width - 1)
        if r1 < r0 or c1 < c0:
            continue
        u = (np.arange(r0, r1 + 1) + 0.5 - y1) / max(y2 - y1, 1e-6) * size - 0.5
        v = (np.arange(c0, c1 + 1) + 0.5 - x1) / max(x2 - x1, 1e-6) * size - 0.5
        yield i, prob, (slice(r0, r1 + 1), slice(c0, c1 + 1)), u, v


def _linear_weights(coords, size):
    """``(len(coords), size)`` linear-interpolation weights, coordinates clamped to the grid."""
    coords = np.clip(coords, 0, size - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weights = np.zeros((len(coords), size))
    rows = np.arange(len(coords))
    np.add.at(weights, (rows, low), 1.0 - (coords - low))
    np.add.at(weights, (rows, high), coords - low)
    return weights
