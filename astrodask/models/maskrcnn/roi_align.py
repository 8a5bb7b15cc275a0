"""ROIAlign on the feature pyramid, bilinear, with ``keras.ops``.

Each box is pooled from one pyramid level chosen by its size. Sample
positions and bilinear weights depend only on the boxes (which carry no
gradient in Mask R-CNN), so they are computed in NumPy. Bilinear sampling
and bin averaging are separable along the two axes, so each box reads one
small window of its level (``keras.ops.take``) and its bins are one batched
product of that window with the outer product of the two axes' weights:
gradients flow into the features and the same code runs on TensorFlow and
JAX (``benchmarks/maskrcnn_host_steps.py`` times it against gathering each
sample's four neighbours).
"""

import numpy as np

from ._keras import ops

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


#: Feature windows read per box are padded to a multiple of this many pixels
#: per side, so backends that compile per shape (JAX) see few distinct shapes.
WINDOW_STEP = 4


def _axis_weights(lo, hi, size, ratio, limit):
    """Bilinear weights of each output bin along one axis, on a window of the level.

    Every bin averages ``ratio`` evenly spaced samples, each interpolated
    between its two neighbouring feature pixels (clamped at the level's
    edge), so a bin's weight on each pixel is the sum of its samples'.

    Returns
    -------
    start : ndarray of int (N,)
        First feature pixel of each box's window.
    weights : ndarray of float32 (N, size, window)
        Weight of window pixel ``k`` (feature pixel ``start + k``) in bin ``i``.
    """
    low, high, frac = _sample_grid(lo, hi, size * ratio, limit)
    needed = int((high.max(axis=1) - low.min(axis=1)).max()) + 1
    window = min(-(-needed // WINDOW_STEP) * WINDOW_STEP, limit)
    start = np.clip(low.min(axis=1), 0, limit - window)
    n_boxes = len(lo)
    # flat index of (box, bin, window pixel) for each sample's two neighbours
    row = (np.arange(n_boxes)[:, None] * size + np.arange(size * ratio) // ratio) * window
    index = np.concatenate([(row + low - start[:, None]).ravel(),
                            (row + high - start[:, None]).ravel()])
    weight = np.concatenate([(1.0 - frac).ravel(), frac.ravel()]).astype(np.float64) / ratio
    weights = np.bincount(index, weight, minlength=n_boxes * size * window)
    return start, weights.reshape(n_boxes, size, window).astype(np.float32)


def _pool_window(feature, index, wy, wx):
    """Bins of each box from its window of ``feature``: one gather, one batched product.

    ``index`` (N·h·w,) flat rows of the windows in ``feature`` (B·H·W, C);
    ``wy`` (N, size, h) and ``wx`` (N, size, w) the axes' bilinear weights.
    """
    n_boxes, size, window_h = wy.shape
    window_w = wx.shape[2]
    window = ops.take(feature, index, axis=0)
    window = ops.reshape(window, (n_boxes, window_h * window_w, feature.shape[-1]))
    weights = ops.reshape(wy[:, :, None, :, None] * wx[:, None, :, None, :],
                          (n_boxes, size * size, window_h * window_w))
    pooled = ops.matmul(weights, window)
    return ops.reshape(pooled, (n_boxes, size, size, feature.shape[-1]))


_compiled_pool_window = None


def _window_pooler():
    """:func:`_pool_window`, XLA-compiled on the JAX backend.

    Run op by op, its few operations are each dispatched on their own (and,
    under ``jax.vjp`` in training, linearised anew every call); compiled,
    each shape (boxes padded to :data:`BUCKET`, windows to
    :data:`WINDOW_STEP`) compiles once. Other backends run it as it is.
    """
    global _compiled_pool_window
    import keras

    if keras.backend.backend() != "jax":
        return _pool_window
    if _compiled_pool_window is None:
        import jax

        _compiled_pool_window = jax.jit(_pool_window)
    return _compiled_pool_window


def _crop_level(feature, boxes, batch_index, output_size, sampling_ratio, stride):
    # Each bin's value is separable: the sum over window pixels (y, x) of
    # wy[i, y] wx[j, x] feature[y, x]. Reading a small window per box and taking one
    # batched product with the outer product of the weights reads ~10x fewer feature
    # rows than gathering every sample's 4 neighbours.
    _, height, width, channels = feature.shape
    scaled = boxes / stride
    y_start, wy = _axis_weights(scaled[:, 0], scaled[:, 2], output_size, sampling_ratio, height)
    x_start, wx = _axis_weights(scaled[:, 1], scaled[:, 3], output_size, sampling_ratio, width)
    rows = y_start[:, None] + np.arange(wy.shape[2])
    cols = x_start[:, None] + np.arange(wx.shape[2])
    index = ((batch_index.astype(np.int64) * height)[:, None, None] + rows[:, :, None]) * width
    index = (index + cols[:, None, :]).reshape(-1)
    return _window_pooler()(ops.reshape(feature, (-1, channels)), index.astype("int32"), wy, wx)


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
