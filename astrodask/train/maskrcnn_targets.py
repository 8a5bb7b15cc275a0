"""Second-stage training targets (NumPy): sampled RoIs with classes, boxes and masks."""

import numpy as np
from scipy import ndimage

from ..models.detections import box_iou
from ..models.maskrcnn.anchors import encode_boxes


def mask_targets(gt_masks, rois, size):
    """Resample each truth mask onto its RoI's ``size`` x ``size`` grid (bool)."""
    out = np.zeros((len(rois), size, size), dtype=np.float32)
    t = (np.arange(size) + 0.5) / size
    for i, (mask, (y1, x1, y2, x2)) in enumerate(zip(gt_masks, rois)):
        ys = y1 + t * (y2 - y1) - 0.5
        xs = x1 + t * (x2 - x1) - 0.5
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        values = ndimage.map_coordinates(mask.astype(np.float32), [yy, xx], order=1,
                                         mode="constant", cval=0.0)
        out[i] = values >= 0.5
    return out


def roi_targets(proposals, gt_boxes, gt_classes, gt_masks, config, rng):
    """Sample RoIs for one image and give each its targets.

    The truth boxes join the proposals (so every object is seen from the first
    step); RoIs with IoU >= 0.5 to an object are positives (at most
    ``roi_positive_fraction`` of ``rois_per_image``), those below are
    background.

    Returns
    -------
    rois : ndarray (R, 4)
    classes : ndarray (R,) int, 0 for background
    deltas : ndarray (R, 4), box targets (meaningful for positives)
    masks : ndarray (P, 28, 28) float32, for the first P = #positives RoIs
    """
    candidates = np.concatenate([proposals, gt_boxes]).astype(np.float32)
    n_rois = config.rois_per_image
    if len(gt_boxes) == 0:
        index = rng.choice(len(candidates), min(n_rois, len(candidates)), replace=False)
        rois = candidates[index]
        return (rois, np.zeros(len(rois), np.int64), np.zeros((len(rois), 4), np.float32),
                np.zeros((0, config.mask_size, config.mask_size), np.float32))
    iou = box_iou(candidates, gt_boxes)
    best = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    positives = np.flatnonzero(best_iou >= 0.5)
    negatives = np.flatnonzero(best_iou < 0.5)
    n_pos = min(len(positives), int(round(n_rois * config.roi_positive_fraction)))
    positives = rng.choice(positives, n_pos, replace=False)
    n_neg = min(len(negatives), n_rois - n_pos)
    negatives = rng.choice(negatives, n_neg, replace=False)
    rois = candidates[np.concatenate([positives, negatives])]
    classes = np.zeros(len(rois), dtype=np.int64)
    classes[:n_pos] = gt_classes[best[positives]]
    deltas = np.zeros((len(rois), 4), dtype=np.float32)
    if n_pos:
        deltas[:n_pos] = encode_boxes(gt_boxes[best[positives]], rois[:n_pos], config.box_std)
    masks = mask_targets(gt_masks[best[positives]], rois[:n_pos], config.mask_size)
    return rois, classes, deltas, masks
