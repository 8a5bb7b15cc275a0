"""Region proposal network: head, proposals (decode + NMS) and training targets."""

import numpy as np

from ._keras import keras, layers, ops
from .anchors import decode_boxes, encode_boxes
from .detection import box_iou, nms


def build_rpn_head(config):
    """Functional model shared by all levels: feature map -> (logits, deltas).

    Outputs have shapes (B, h, w, A) and (B, h, w, 4 A) with A anchors per
    position.
    """
    features = keras.Input((None, None, config.fpn_channels), name="feature")
    x = layers.Conv2D(config.fpn_channels, 3, padding="same", activation="relu",
                      name="rpn_conv")(features)
    logits = layers.Conv2D(config.n_anchors, 1, name="rpn_class")(x)
    deltas = layers.Conv2D(4 * config.n_anchors, 1, name="rpn_bbox")(x)
    return keras.Model(features, [logits, deltas], name="rpn_head")


def flatten_rpn_outputs(level_outputs):
    """Concatenate per-level (logits, deltas) into (B, N) and (B, N, 4), anchor order."""
    logits, deltas = [], []
    for level_logits, level_deltas in level_outputs:
        batch = ops.shape(level_logits)[0]
        logits.append(ops.reshape(level_logits, (batch, -1)))
        deltas.append(ops.reshape(level_deltas, (batch, -1, 4)))
    return ops.concatenate(logits, axis=1), ops.concatenate(deltas, axis=1)


def propose(logits, deltas, anchors, image_shape, config, post_nms, pre_nms=None):
    """Proposals of one image: top anchors, decoded, clipped, NMS'd.

    Parameters
    ----------
    logits : tensor, shape (N,)
    deltas : tensor, shape (N, 4)
    anchors : ndarray, shape (N, 4)

    pre_nms : int, optional
        Top anchors kept before NMS (default ``config.rpn_pre_nms``).

    Returns
    -------
    ndarray, shape (n, 4), float32
        Boxes sorted by decreasing objectness.
    """
    k = min(pre_nms or config.rpn_pre_nms, int(anchors.shape[0]))
    scores, index = ops.top_k(logits, k=k, sorted=True)
    top_deltas = ops.take(deltas, index, axis=0)
    top_anchors = ops.take(ops.convert_to_tensor(anchors), index, axis=0)
    boxes = decode_boxes(ops, top_deltas, top_anchors, config.box_std)
    height, width = image_shape
    limits = np.array([height, width, height, width], dtype=np.float32)
    boxes = np.clip(ops.convert_to_numpy(boxes), 0, limits)
    scores = ops.convert_to_numpy(scores)
    size_ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    boxes, scores = boxes[size_ok], scores[size_ok]
    keep = nms(boxes, scores, config.rpn_nms_threshold, post_nms)
    return boxes[keep].astype(np.float32)


def rpn_targets(anchors, gt_boxes, config, rng):
    """Sampled anchor labels and box deltas for one image.

    Returns
    -------
    labels : ndarray of int8, shape (N,)
        1 object, 0 background, -1 not sampled.
    deltas : ndarray, shape (N, 4)
        Regression targets (meaningful where ``labels == 1``).
    """
    n = len(anchors)
    labels = np.full(n, -1, dtype=np.int8)
    deltas = np.zeros((n, 4), dtype=np.float32)
    if len(gt_boxes) == 0:
        negatives = np.arange(n)
    else:
        iou = box_iou(anchors, gt_boxes)
        best_gt = iou.argmax(axis=1)
        best_iou = iou[np.arange(n), best_gt]
        labels[best_iou < config.rpn_negative_iou] = 0
        labels[best_iou >= config.rpn_positive_iou] = 1
        # every object gets its best anchor(s), however small the object
        gt_best = iou.max(axis=0)
        anchor_is_best = (iou == gt_best[None, :]) & (gt_best[None, :] > 0)
        rows, cols = np.nonzero(anchor_is_best)
        labels[rows] = 1
        best_gt[rows] = cols
        positives = np.flatnonzero(labels == 1)
        n_pos_max = config.rpn_anchors_per_image // 2
        if len(positives) > n_pos_max:
            labels[rng.choice(positives, len(positives) - n_pos_max, replace=False)] = -1
        positives = np.flatnonzero(labels == 1)
        deltas[positives] = encode_boxes(gt_boxes[best_gt[positives]], anchors[positives],
                                         config.box_std)
        negatives = np.flatnonzero(labels == 0)
    n_neg = config.rpn_anchors_per_image - np.count_nonzero(labels == 1)
    labels[negatives] = -1
    labels[rng.choice(negatives, min(n_neg, len(negatives)), replace=False)] = 0
    return labels, deltas
