"""Mask R-CNN multi-task loss, written with ``keras.ops``.

L = L_rpn_class + L_rpn_box + L_class + L_box + L_mask (He et al. 2017).
Targets come from NumPy (see :mod:`astrodask.train.maskrcnn_targets`).
"""

import numpy as np
from keras import ops


def smooth_l1(diff, beta=1.0 / 9.0):
    """Huber-style loss on differences, summed over the last axis."""
    absolute = ops.abs(diff)
    loss = ops.where(absolute < beta, 0.5 * absolute ** 2 / beta, absolute - 0.5 * beta)
    return ops.sum(loss, axis=-1)


def rpn_weights(labels):
    """NumPy weights of the RPN losses for ``labels`` (B, N) of 1/0/-1.

    Returns ``(target, class_weight, box_weight)``, each (B·N,): the
    objectness target of each anchor, and the weight of each anchor in the
    class mean (sampled anchors) and in the box mean (positive anchors), so
    that each loss is one weighted sum (:func:`weighted_rpn_losses`).
    """
    flat_labels = np.asarray(labels).reshape(-1)
    sampled = (flat_labels >= 0).astype(np.float32)
    positive = (flat_labels == 1).astype(np.float32)
    target = np.maximum(flat_labels, 0).astype(np.float32)
    return (target, sampled / max(float(sampled.sum()), 1.0),
            positive / max(float(positive.sum()), 1.0))


def weighted_rpn_losses(logits, deltas, target_deltas, target, class_weight, box_weight):
    """Objectness and box losses as weighted sums over every anchor (see :func:`rpn_weights`).

    Every input may be a traced array: the shapes do not depend on how
    many anchors were sampled (backends that compile per shape, JAX,
    compile once).
    """
    per_anchor = ops.binary_crossentropy(ops.reshape(target, (-1, 1)),
                                         ops.reshape(logits, (-1, 1)), from_logits=True)[:, 0]
    class_loss = ops.sum(per_anchor * class_weight)
    diff = ops.reshape(deltas, (-1, 4)) - ops.reshape(target_deltas, (-1, 4))
    box_loss = ops.sum(smooth_l1(diff) * box_weight)
    return class_loss, box_loss


def rpn_losses(logits, deltas, labels, target_deltas):
    """Objectness (sampled anchors) and box (positive anchors) losses.

    ``logits`` (B, N) and ``deltas`` (B, N, 4) are the network's outputs;
    ``labels`` (B, N) hold 1/0/-1 (object, background, not sampled).
    """
    return weighted_rpn_losses(logits, deltas, np.asarray(target_deltas, np.float32),
                               *rpn_weights(labels))


def head_weights(classes, n_slots, n_classes, class_weights=None, n_rois=None,
                 n_positives=None):
    """NumPy weights of the head losses (see :func:`head_losses` for the arguments).

    Returns
    -------
    dict
        ``roi_weight`` (R,): each RoI's weight in the classification mean;
        ``pos_index`` (P,): the row of each positive's true class in the
        (R·K, 4) box deltas and (R·K, ...) masks; ``box_weight`` and
        ``mask_weight`` (P,): each positive's weight in the box and mask means.
    """
    real_positives = n_slots if n_positives is None else n_positives
    roi_weight = np.ones(len(classes), np.float32)
    if n_rois is not None:
        roi_weight[real_positives:n_slots] = 0.0
        roi_weight[n_slots + n_rois - real_positives:] = 0.0
    if class_weights is not None:
        roi_weight = roi_weight * np.asarray(class_weights, dtype=np.float32)[classes]
    positive = (np.arange(n_slots) < real_positives).astype(np.float32)
    return {"roi_weight": roi_weight / float(roi_weight.sum()),
            "pos_index": (np.arange(n_slots) * n_classes + classes[:n_slots]).astype("int32"),
            "box_weight": positive / max(real_positives, 1),
            "mask_weight": positive / real_positives if real_positives else positive}


def weighted_head_losses(class_logits, box_deltas, mask_logits, classes, target_deltas,
                         target_masks, roi_weight, pos_index, box_weight, mask_weight):
    """Classification, box and mask losses as weighted sums (see :func:`head_weights`).

    ``target_deltas`` and ``target_masks`` hold the P positives' rows only;
    every input may be a traced array.
    """
    per_roi = ops.sparse_categorical_crossentropy(classes, class_logits, from_logits=True)
    class_loss = ops.sum(per_roi * roi_weight)
    picked = ops.take(ops.reshape(box_deltas, (-1, 4)), pos_index, axis=0)
    box_loss = ops.sum(smooth_l1(picked - target_deltas) * box_weight)
    if mask_logits is None:
        return class_loss, box_loss, ops.zeros((), dtype=class_loss.dtype)
    size = mask_logits.shape[1]
    per_class = ops.reshape(ops.transpose(mask_logits, (0, 3, 1, 2)), (-1, size, size))
    picked_masks = ops.take(per_class, pos_index, axis=0)
    per_mask = ops.mean(ops.binary_crossentropy(target_masks, picked_masks, from_logits=True),
                        axis=(1, 2))
    return class_loss, box_loss, ops.sum(per_mask * mask_weight)


def head_losses(class_logits, box_deltas, mask_logits, classes, target_deltas, target_masks,
                class_weights=None, n_rois=None, n_positives=None):
    """Classification over all sampled RoIs, box and mask losses over positives.

    ``box_deltas`` is (R, K, 4) and ``mask_logits`` (P, 28, 28, K) (None when
    P = 0); the first P RoIs are the positives, each supervised only on its
    true class. ``class_weights`` (one per class) weight the classification
    loss of each RoI by its true class (a weighted mean).

    Padded batches (whose shapes come from a few sizes only, see
    :func:`astrodask.train.maskrcnn.pad_targets`): only the first
    ``n_positives`` of the P positive rows and, after the P positive rows,
    ``n_rois - n_positives`` negative rows count; the other rows are padding.
    Default: every row counts.
    """
    n_slots = len(target_masks)
    weights = head_weights(classes, n_slots, class_logits.shape[-1], class_weights, n_rois,
                           n_positives)
    if not weights["mask_weight"].any():
        mask_logits = None
    return weighted_head_losses(class_logits, box_deltas, mask_logits, classes.astype("int32"),
                                target_deltas[:n_slots], target_masks, **weights)
