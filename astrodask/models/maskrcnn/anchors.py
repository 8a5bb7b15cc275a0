"""Anchor boxes on the feature pyramid and the box delta encoding.

Boxes are ``(y1, x1, y2, x2)`` in image pixels, ``y2``/``x2`` exclusive.
Level P_k has stride ``2**k`` (P2..P6: 4..64) and one anchor scale; each
feature-map position carries one anchor per scale factor and aspect ratio
(factor 1 alone by default: the level's scale), centred on the position's
pixel-grid centre.
"""

import numpy as np

LEVEL_STRIDES = (4, 8, 16, 32, 64)


def feature_shapes(image_shape):
    """(height, width) of P2..P6 for an image (multiple of 64)."""
    height, width = image_shape
    return [(height // s, width // s) for s in LEVEL_STRIDES]


def generate_anchors(image_shape, scales, ratios, scale_factors=(1.0,)):
    """All anchors of an image, in the order the RPN outputs are flattened.

    Parameters
    ----------
    image_shape : (H, W)
        Padded image shape (multiples of 64).
    scales : sequence of 5 floats
        Anchor side (pixels, square anchors) of levels P2..P6.
    ratios : sequence of float
        Aspect ratios width / height.
    scale_factors : sequence of float
        Each level carries anchors of ``scale * factor`` for every factor,
        e.g. ``(1.0, 0.5)`` adds half-size anchors (4 px on P2).

    Order: level, then y, then x, then scale factor, then ratio.

    Returns
    -------
    ndarray, shape (n_anchors, 4), float32
    """
    # one (factor, ratio) pair per anchor of a position, factor-major
    factors, ratios = (grid.ravel() for grid in np.meshgrid(
        np.asarray(scale_factors, dtype=np.float64), np.asarray(ratios, dtype=np.float64),
        indexing="ij"))
    out = []
    for (fh, fw), stride, scale in zip(feature_shapes(image_shape), LEVEL_STRIDES, scales):
        heights = scale * factors / np.sqrt(ratios)
        widths = scale * factors * np.sqrt(ratios)
        cy = (np.arange(fh) + 0.5) * stride
        cx = (np.arange(fw) + 0.5) * stride
        cy, cx = np.meshgrid(cy, cx, indexing="ij")
        cy = cy[:, :, None]
        cx = cx[:, :, None]
        boxes = np.stack(np.broadcast_arrays(cy - heights / 2, cx - widths / 2,
                                             cy + heights / 2, cx + widths / 2), axis=-1)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def encode_boxes(boxes, reference, std):
    """Deltas ``(dy, dx, log dh, log dw) / std`` that turn ``reference`` into ``boxes``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    rh = reference[:, 2] - reference[:, 0]
    rw = reference[:, 3] - reference[:, 1]
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    deltas = np.stack([
        (boxes[:, 0] + 0.5 * h - reference[:, 0] - 0.5 * rh) / rh,
        (boxes[:, 1] + 0.5 * w - reference[:, 1] - 0.5 * rw) / rw,
        np.log(np.maximum(h, 1e-3) / rh),
        np.log(np.maximum(w, 1e-3) / rw),
    ], axis=1)
    return (deltas / np.asarray(std)).astype(np.float32)


def decode_boxes(ops, deltas, reference, std):
    """Inverse of :func:`encode_boxes`, written with ``keras.ops`` (``ops``) or NumPy."""
    deltas = deltas * np.asarray(std, dtype=np.float32)
    rh = reference[..., 2] - reference[..., 0]
    rw = reference[..., 3] - reference[..., 1]
    cy = reference[..., 0] + 0.5 * rh + deltas[..., 0] * rh
    cx = reference[..., 1] + 0.5 * rw + deltas[..., 1] * rw
    # clamp the log-size so a wild delta cannot overflow
    h = rh * ops.exp(ops.minimum(deltas[..., 2], 4.0))
    w = rw * ops.exp(ops.minimum(deltas[..., 3], 4.0))
    return ops.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)
