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
    ``labels`` (B, N) hold 1/0/-1 (object, background, not sampled). The
    means are written as weighted sums over every anchor, so the shapes do
    not depend on how many anchors were sampled (backends that compile per
    shape, JAX, compile once).
    """
    flat_labels = labels.reshape(-1)
    sampled = (flat_labels >= 0).astype(np.float32)
    positive = (flat_labels == 1).astype(np.float32)
    target = np.maximum(flat_labels, 0).astype(np.float32)
    per_anchor = ops.binary_crossentropy(target[:, None], ops.reshape(logits, (-1, 1)),
                                         from_logits=True)[:, 0]
    class_loss = ops.sum(per_anchor * sampled) / max(float(sampled.sum()), 1.0)
    diff = ops.reshape(deltas, (-1, 4)) - target_deltas.reshape(-1, 4).astype(np.float32)
    box_loss = _mean_or_zero(smooth_l1(diff) * positive, int(positive.sum()))
    return class_loss, box_loss


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
    n_classes = class_logits.shape[-1]
    n_slots = len(target_masks)
    real_positives = n_slots if n_positives is None else n_positives
    roi_weight = np.ones(len(classes), np.float32)
    if n_rois is not None:
        roi_weight[real_positives:n_slots] = 0.0
        roi_weight[n_slots + n_rois - real_positives:] = 0.0
    per_roi = ops.sparse_categorical_crossentropy(classes.astype("int32"), class_logits,
                                                  from_logits=True)
    if class_weights is not None:
        roi_weight = roi_weight * np.asarray(class_weights, dtype=np.float32)[classes]
    class_loss = ops.sum(per_roi * roi_weight) / float(roi_weight.sum())
    positive_weight = (np.arange(n_slots) < real_positives).astype(np.float32)
    pos_index = (np.arange(n_slots) * n_classes + classes[:n_slots]).astype("int32")
    picked = ops.take(ops.reshape(box_deltas, (-1, 4)), pos_index, axis=0)
    box_loss = _mean_or_zero(smooth_l1(picked - target_deltas[:n_slots]) * positive_weight,
                             real_positives)
    if real_positives == 0 or mask_logits is None:
        return class_loss, box_loss, ops.zeros((), dtype=class_loss.dtype)
    size = mask_logits.shape[1]
    per_class = ops.reshape(ops.transpose(mask_logits, (0, 3, 1, 2)), (-1, size, size))
    picked_masks = ops.take(per_class, pos_index, axis=0)
    per_mask = ops.mean(ops.binary_crossentropy(target_masks, picked_masks, from_logits=True),
                        axis=(1, 2))
    mask_loss = ops.sum(per_mask * positive_weight) / float(real_positives)
    return class_loss, box_loss, mask_loss
