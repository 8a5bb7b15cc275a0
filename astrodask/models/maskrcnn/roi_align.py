"""ROIAlign on the feature pyramid, bilinear, with ``keras.ops``.

Each box is pooled from one pyramid level chosen by its size. Sample
positions and bilinear weights depend only on the boxes (which carry no
gradient in Mask R-CNN), so they are computed in NumPy; the feature maps are
read with ``keras.ops.take`` and combined with ``keras.ops``, so gradients
flow into the features and the same code runs on TensorFlow and JAX.
"""

import numpy as np
from keras import ops

#: Box size (sqrt of area, pixels) pooled from P2; each doubling moves one level up
#: (each halving one level down, to P1 where the model has it).
CANONICAL_SIZE = 16.0

#: Coarsest level read by ROIAlign (P5; P6 only feeds the RPN).
MAX_LEVEL = 5

#: RoIs pooled per gather, to bound the memory of the interpolation.
CHUNK = 512

#: Each gather pools a multiple of this many RoIs (padded with copies), so
#: backends that compile per shape (JAX) see few distinct shapes.
BUCKET = 64


def roi_levels(boxes, min_level=2):
    """Index of each box's pyramid level in the list P``min_level`` .. P5.

    A box of size ``s = sqrt(area)`` goes to level ``2 + round(log2(s / 16))``
    clipped to ``[min_level, 5]``: with ``min_level=2`` index 0 is P2 (boxes
    under ~22.6 px); with ``min_level=1`` boxes under ~11.3 px go to P1
    (index 0) and P2 becomes index 1.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.sqrt(np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0))
    level = np.clip(2 + np.round(np.log2(size / CANONICAL_SIZE)), min_level, MAX_LEVEL)
    return (level - min_level).astype(int)


def _sample_grid(lo, hi, n, limit):
    """Integer neighbours and weights of ``n`` evenly spaced samples in [lo, hi)."""
    t = (np.arange(n) + 0.5) / n
    pos = lo[:, None] + t[None, :] * (hi - lo)[:, None] - 0.5  # feature pixel centres at i + 0.5
    pos = np.clip(pos, 0.0, limit - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, limit - 1)
    frac = (pos - low).astype(np.float32)
    return low, high, frac


def _crop_level(feature, boxes, batch_index, output_size, sampling_ratio, stride):
    _, height, width, channels = feature.shape
    n_boxes, size, ratio = len(boxes), output_size, sampling_ratio
    scaled = boxes / stride
    y0, y1, fy = _sample_grid(scaled[:, 0], scaled[:, 2], size * ratio, height)
    x0, x1, fx = _sample_grid(scaled[:, 1], scaled[:, 3], size * ratio, width)
    base = (batch_index.astype(np.int64) * height * width)[:, None, None]
    rows = [(y0, 1 - fy), (y1, fy)]
    cols = [(x0, 1 - fx), (x1, fx)]
    # every bin averages ratio x ratio samples of 4 bilinear neighbours:
    # one gather of (bins, 4 ratio^2) rows and one weighted sum
    index = np.stack([base + yi[:, :, None] * width + xi[:, None, :]
                      for yi, _ in rows for xi, _ in cols], axis=-1)
    weight = np.stack([wy[:, :, None] * wx[:, None, :]
                       for _, wy in rows for _, wx in cols], axis=-1) / ratio ** 2
    def per_bin(a):
        a = a.reshape(n_boxes, size, ratio, size, ratio, 4).transpose(0, 1, 3, 2, 4, 5)
        return a.reshape(n_boxes, size, size, 4 * ratio * ratio)
    index, weight = per_bin(index), per_bin(weight).astype(np.float32)
    flat = ops.reshape(feature, (-1, channels))
    values = ops.take(flat, ops.convert_to_tensor(index.reshape(-1).astype("int32")), axis=0)
    values = ops.reshape(values, index.shape + (channels,))
    return ops.sum(values * weight[..., None], axis=3)


def roi_align(features, boxes, batch_index, output_size, sampling_ratio=2, min_level=2):
    """Pool a fixed-size feature crop for every box.

    Parameters
    ----------
    features : list of tensors
        Pyramid levels P``min_level``..P5, each (B, h, w, C); level k has
        stride ``2**k``.
    boxes : ndarray, shape (N, 4)
        ``(y1, x1, y2, x2)`` in image pixels.
    batch_index : ndarray of int, shape (N,)
        Image of each box in the batch.
    output_size : int
        Side of the pooled crop.
    sampling_ratio : int
        Bilinear samples per bin along each axis, averaged.
    min_level : int
        Level of ``features[0]`` (2, or 1 for a model with P1).

    Returns
    -------
    tensor, shape (N, output_size, output_size, C)
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    batch_index = np.asarray(batch_index, dtype=np.int64).reshape(-1)
    channels = features[0].shape[-1]
    if len(boxes) == 0:
        return ops.zeros((0, output_size, output_size, channels), dtype=features[0].dtype)
    levels = roi_levels(boxes, min_level)
    if len(features) != MAX_LEVEL - min_level + 1:
        raise ValueError(f"expected {MAX_LEVEL - min_level + 1} feature levels from P{min_level}, "
                         f"got {len(features)}")
    pieces, rows = [], np.empty(len(boxes), np.int64)
    offset = 0
    for level in range(len(features)):
        index = np.flatnonzero(levels == level)
        for start in range(0, len(index), CHUNK):
            chunk = index[start:start + CHUNK]
            padded = np.resize(chunk, -(-len(chunk) // BUCKET) * BUCKET)
            pieces.append(_crop_level(features[level], boxes[padded], batch_index[padded],
                                      output_size, sampling_ratio, 2 ** (min_level + level)))
            # the padding rows stay in the pieces (shapes stay multiples of BUCKET);
            # each box is read back from its own row
            rows[chunk] = offset + np.arange(len(chunk))
            offset += len(padded)
    pooled = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=0)
    if offset == len(boxes) and np.array_equal(rows, np.arange(len(boxes))):
        return pooled
    return ops.take(pooled, ops.convert_to_tensor(rows.astype("int32")), axis=0)
