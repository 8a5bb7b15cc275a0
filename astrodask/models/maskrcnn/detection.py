"""Post-processing without gradients (NumPy): NMS, per-class detection, mask pasting."""

import numpy as np
from scipy import ndimage

from ..detections import box_iou

__all__ = ["box_iou", "nms", "per_class_nms", "select_detections", "paste_masks"]


def nms(boxes, scores, threshold, max_output):
    """Greedy non-maximum suppression.

    Returns the indices of the kept boxes, by decreasing score: a box is
    dropped when its IoU with a higher-scoring kept box exceeds ``threshold``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order) and len(keep) < max_output:
        best, rest = order[0], order[1:]
        keep.append(best)
        y1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        x1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        y2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        x2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


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
        bilinearly interpolated probability there is >= ``threshold``.
    """
    height, width = image_shape
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (prob, (y1, x1, y2, x2)) in enumerate(zip(mask_probs, boxes)):
        size = prob.shape[0]
        r0, r1 = max(int(np.ceil(y1 - 0.5)), 0), min(int(np.floor(y2 - 0.5)), height - 1)
        c0, c1 = max(int(np.ceil(x1 - 0.5)), 0), min(int(np.floor(x2 - 0.5)), width - 1)
        if r1 < r0 or c1 < c0:
            continue
        u = (np.arange(r0, r1 + 1) + 0.5 - y1) / max(y2 - y1, 1e-6) * size - 0.5
        v = (np.arange(c0, c1 + 1) + 0.5 - x1) / max(x2 - x1, 1e-6) * size - 0.5
        uu, vv = np.meshgrid(u, v, indexing="ij")
        values = ndimage.map_coordinates(prob, [uu, vv], order=1, mode="nearest")
        masks[i, r0:r1 + 1, c0:c1 + 1] = values >= threshold
    return masks
