"""Mask R-CNN instances as table rows: the per-tile Parquet schema.

Each detected instance is stored with its mask cropped to its bounding box
and bit-packed. Coordinates are 0-based mosaic pixels, ``y`` before ``x``,
boxes half-open (``y1``/``x1`` exclusive).
"""

import numpy as np
import pyarrow as pa

from .classes import OBJECT_CLASSES
from .models.detections import mask_box

SCHEMA = pa.schema([
    ("tile_iy", pa.int32()), ("tile_ix", pa.int32()), ("det", pa.int32()),
    ("class_id", pa.int8()), ("class", pa.string()), ("score", pa.float32()),
    ("y0", pa.int32()), ("x0", pa.int32()), ("y1", pa.int32()), ("x1", pa.int32()),
    ("area", pa.int32()),
    ("anchor_y", pa.int32()), ("anchor_x", pa.int32()),
    ("in_core", pa.bool_()), ("cut", pa.bool_()),
    ("centre_y", pa.float64()), ("centre_x", pa.float64()),
    ("mask", pa.binary()),
])

#: Columns a Parquet part written before they existed may lack, with their fill value.
OPTIONAL_COLUMNS = {"centre_y": np.nan, "centre_x": np.nan}


def encode_mask(mask):
    """Bit-pack a boolean 2-D mask (its shape is kept by the row's box)."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def decode_mask(data, height, width):
    """Inverse of :func:`encode_mask`."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=height * width)
    return bits.reshape(height, width).astype(bool)


def tile_instances(tile, grid, masks, class_ids, scores, brightness, centres=None):
    """Rows of one window's detections in mosaic coordinates.

    Parameters
    ----------
    tile : Tile
        The window (its origin and core).
    grid : TileGrid
    masks : ndarray of bool, shape (N, T, T)
        Instance masks at window resolution.
    class_ids : ndarray, shape (N,)
    scores : ndarray, shape (N,)
    brightness : ndarray, shape (T, T)
        The detection image (:func:`astrodask.sky.detection_image`), ``-inf``
        on flagged pixels: each instance's anchor is its brightest mask pixel.
    centres : ndarray, shape (N, 2), optional
        Each instance's centre ``(y, x)`` in window pixels, from the centre
        network (:mod:`astrodask.centre_segments`); stored in mosaic pixels as
        ``centre_y``, ``centre_x`` (NaN without).

    Returns
    -------
    pyarrow.Table
        With :data:`SCHEMA`. Instances centred on flagged pixels (the mask's
        centroid, or every pixel, has no data: padding, NaN, zero weight) are
        dropped: whatever the model saw there was the sky noise filled in.
        Their masks may still cover flagged pixels (the catalog's ``masked``
        flag); an instance whose centre lies on a flagged pixel is dropped
        too. ``in_core``: the anchor lies in the window's half-open core.
        ``cut``: the mask touches a window edge that lies inside the mosaic,
        so the object may continue in a neighbouring window.
    """
    y0w, x0w = tile.origin
    t = masks.shape[-1] if len(masks) else grid.tile
    (my, mx), (wy, wx) = grid.valid_slices(tile.iy, tile.ix)
    inside = np.zeros((t, t), dtype=bool)
    inside[wy, wx] = True
    cy, cx = tile.core
    # Window edges that are cuts (inside the mosaic) rather than the mosaic's own edge.
    cut_edges = (y0w > 0, x0w > 0, y0w + t < grid.height, x0w + t < grid.width)
    rows = {name: [] for name in SCHEMA.names}
    if centres is None:
        centres = np.full((len(masks), 2), np.nan)
    for det, (mask, class_id, score, centre) in enumerate(zip(masks, class_ids, scores,
                                                                centres)):
        mask = mask & inside
        box = mask_box(mask)
        if box is None:
            continue
        # the mask's box, not the window: the same pixels in the same order
        (by0, by1), (bx0, bx1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
        part = mask[box]
        py, px = np.nonzero(part)
        py, px = py + by0, px + bx0
        masked = np.where(part, brightness[box], -np.inf)
        ay, ax = np.unravel_index(int(np.argmax(masked)), masked.shape)
        peak = masked[ay, ax]
        ay, ax = ay + by0, ax + bx0
        middle = (int(round(py.mean())), int(round(px.mean())))
        if np.isfinite(centre).all():
            middle = tuple(int(np.clip(round(c), 0, t - 1)) for c in centre)
            if not inside[middle]:
                continue
        if not np.isfinite(peak) or not np.isfinite(brightness[middle]):
            continue
        cut = ((cut_edges[0] and by0 == 0) or (cut_edges[1] and bx0 == 0)
               or (cut_edges[2] and by1 == t) or (cut_edges[3] and bx1 == t))
        values = dict(tile_iy=tile.iy, tile_ix=tile.ix, det=det, class_id=int(class_id),
                      score=float(score), y0=y0w + by0, x0=x0w + bx0, y1=y0w + by1,
                      x1=x0w + bx1, area=int(part.sum()), anchor_y=y0w + ay, anchor_x=x0w + ax,
                      in_core=bool(cy.start <= ay < cy.stop and cx.start <= ax < cx.stop),
                      cut=bool(cut), centre_y=y0w + float(centre[0]),
                      centre_x=x0w + float(centre[1]), mask=encode_mask(part))
        # class 0 is the detector's background: a piece without a star/galaxy class
        values["class"] = OBJECT_CLASSES[int(class_id)] if class_id > 0 else None
        for name, value in values.items():
            rows[name].append(value)
    return pa.table(rows, schema=SCHEMA)
