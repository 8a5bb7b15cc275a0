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


def _mean_or_zero(values, count):
    return ops.sum(values) / max(count, 1)


def rpn_losses(logits, deltas, labels, target_deltas):
    """Objectness (sampled anchors) and box (positive anchors) losses.

    ``logits`` (B, N) and ``deltas`` (B, N, 4) are the network's outputs;
    ``labels`` (B, N) hold 1/0/-1 (object, background, not sampled).
    """
    flat_labels = labels.reshape(-1)
    sampled = np.flatnonzero(flat_labels >= 0).astype("int32")
    positive = np.flatnonzero(flat_labels == 1).astype("int32")
    picked = ops.take(ops.reshape(logits, (-1,)), sampled)
    target = flat_labels[sampled].astype(np.float32)
    class_loss = ops.mean(ops.binary_crossentropy(target, picked, from_logits=True))
    picked_deltas = ops.take(ops.reshape(deltas, (-1, 4)), positive, axis=0)
    diff = picked_deltas - target_deltas.reshape(-1, 4)[positive]
    box_loss = _mean_or_zero(smooth_l1(diff), len(positive))
    return class_loss, box_loss


def head_losses(class_logits, box_deltas, mask_logits, classes, target_deltas, target_masks,
                class_weights=None):
    """Classification over all sampled RoIs, box and mask losses over positives.

    ``box_deltas`` is (R, K, 4) and ``mask_logits`` (P, 28, 28, K) (None when
    P = 0); the first P RoIs are the positives, each supervised only on its
    true class. ``class_weights`` (one per class) weight the classification
    loss of each RoI by its true class (a weighted mean).
    """
    n_classes = class_logits.shape[-1]
    per_roi = ops.sparse_categorical_crossentropy(classes.astype("int32"), class_logits,
                                                  from_logits=True)
    if class_weights is None:
        class_loss = ops.mean(per_roi)
    else:
        weights = np.asarray(class_weights, dtype=np.float32)[classes]
        class_loss = ops.sum(per_roi * weights) / float(weights.sum())
    n_pos = len(target_masks)
    pos_index = (np.arange(n_pos) * n_classes + classes[:n_pos]).astype("int32")
    picked = ops.take(ops.reshape(box_deltas, (-1, 4)), pos_index, axis=0)
    box_loss = _mean_or_zero(smooth_l1(picked - target_deltas[:n_pos]), n_pos)
    if n_pos == 0 or mask_logits is None:
        return class_loss, box_loss, ops.zeros((), dtype=class_loss.dtype)
    size = mask_logits.shape[1]
    per_class = ops.reshape(ops.transpose(mask_logits, (0, 3, 1, 2)), (-1, size, size))
    picked_masks = ops.take(per_class, pos_index, axis=0)
    mask_loss = ops.mean(ops.binary_crossentropy(target_masks, picked_masks, from_logits=True))
    return class_loss, box_loss, mask_loss
