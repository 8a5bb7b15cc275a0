"""Pieces: what each window saw of each object, in mosaic coordinates.

A piece is one instance from one window: Mask R-CNN instances as written by
the engine, or Morpheus segments cut from the U-Net maps window by window.
Both share the columns of :data:`astrodask.instances.SCHEMA`.
"""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy import ndimage

from .. import storage
from ..instances import OPTIONAL_COLUMNS, SCHEMA, decode_mask, encode_mask, tile_instances
from ..sky import band_levels, detection_image


#: Pieces as the Mask R-CNN merge reads them: the engine's columns and ``vouched``
#: (a piece under the catalog cut that stays in the catalog, :mod:`.weak`).
PIECE_SCHEMA = SCHEMA.append(pa.field("vouched", pa.bool_()))


@dataclass
class Pieces:
    """Column arrays of all pieces, plus lazily decoded masks.

    Attributes are NumPy arrays of length ``n`` named as the schema columns
    (``tile_iy``, ``y0``, ``score``, ``in_core``, ...).
    """

    table: pa.Table

    def __post_init__(self):
        self.table = self.table.sort_by([("tile_iy", "ascending"), ("tile_ix", "ascending"),
                                         ("det", "ascending")])
        for name in SCHEMA.names:
            if name in ("mask", "class"):
                continue
            setattr(self, name, self.table.column(name).to_numpy(zero_copy_only=False))
        self.vouched = (self.table.column("vouched").to_numpy(zero_copy_only=False)
                        if "vouched" in self.table.column_names
                        else np.zeros(self.table.num_rows, dtype=bool))
        self._packed = self.table.column("mask").to_pylist()
        self._masks = {}

    def __len__(self):
        return self.table.num_rows

    def mask(self, i):
        """Boolean mask of piece ``i`` over its box ``[y0, y1) x [x0, x1)``."""
        if i not in self._masks:
            self._masks[i] = decode_mask(self._packed[i], int(self.y1[i] - self.y0[i]),
                                         int(self.x1[i] - self.x0[i]))
        return self._masks[i]


def read_window_pieces(results, iy, ix, min_score=None, vouch=None, parts=None):
    """The Mask R-CNN pieces of one window, from its Parquet part.

    Every path of the merge (single process or on Dask) gets a window's
    pieces here or from :func:`read_windows_pieces`, so a filter on pieces
    belongs in :func:`window_pieces`.

    Parameters
    ----------
    results : Results
    iy, ix : int
        Window index.
    min_score : float, optional
        The catalog's score cut: pieces below it that touch a piece at or
        above it are folded into that piece (:func:`fold_faint_pieces`).
    vouch : callable, optional
        ``vouch(table) -> bool array``: the pieces under the cut that stay in
        the catalog all the same (:func:`astrodask.merging.weak.vouched_pieces`).
    parts : callable, optional
        ``parts(table) -> bool array``: the pieces that are parts of a large
        galaxy, folded into it whatever their score
        (:func:`astrodask.merging.hosts.host_parts`).

    Returns
    -------
    pyarrow.Table
        With :data:`PIECE_SCHEMA` (empty when the window has no part).
    """
    return read_windows_pieces(results, [(iy, ix)], min_score, vouch, parts)[0]


def read_windows_pieces(results, windows, min_score=None, vouch=None, parts=None):
    """:func:`read_window_pieces` of each of ``windows`` (``[(iy, ix), ...]``), their
    parts fetched together (:func:`astrodask.storage.get_many`); a list of tables."""
    from .. import storage

    parts_bytes = storage.get_many([results.instances_path(iy, ix) for iy, ix in windows])
    return [window_pieces(data, min_score, vouch, parts) for data in parts_bytes]


def window_pieces(data, min_score=None, vouch=None, parts=None):
    """The pieces in the bytes of a window's Parquet part (``None``: no part, no pieces);
    ``min_score``, ``vouch``, ``parts`` as for :func:`read_window_pieces`."""
    if data is None:
        return PIECE_SCHEMA.empty_table()
    table = storage.parquet_table(data)
    for name, fill in OPTIONAL_COLUMNS.items():
        if name not in table.column_names:  # a part written before the column existed
            column = pa.array(np.full(table.num_rows, fill), type=SCHEMA.field(name).type)
            table = table.add_column(SCHEMA.get_field_index(name), name, column)
    vouched = vouch(table) if vouch is not None else np.zeros(table.num_rows, dtype=bool)
    table = table.append_column("vouched", pa.array(vouched, type=pa.bool_()))
    return fold_faint_pieces(table, min_score,
                             parts(table) if parts is not None and table.num_rows else None)


def fold_faint_pieces(table, min_score, parts=None):
    """One window's pieces with those under the catalog cut folded into a touching neighbour.

    A detection scored under ``min_score`` leaves the catalog, but its pixels
    are usually part of a source that stays: a knot of an irregular galaxy,
    or the outskirts of a large one, that the centre network marked as a
    second, weaker peak. Left out, they would be sky in the segmentation map
    and the galaxy's flux would lack them. So, as SExtractor gives a branch
    that fails its deblending contrast back to its parent, each piece under
    the cut whose mask touches (4-connected) a piece at or above it is merged
    into the one it shares the longest border with (ties: the first row);
    the merged piece keeps its own score, class, anchor and centre. Folding
    repeats, so a chain of weak pieces reaches the source it hangs from. A
    weak piece lying mostly (more than half its area) on confident ones is
    another proposal for them, not a part: it is left to the cut. So is one
    that covers most of a confident piece: a larger proposal around that
    source (often it and a neighbour the detector did not separate), whose
    pixels would carry the neighbour's light into it and pull its centroid
    off.

    A piece under the cut that is ``vouched`` for (a column of the table,
    when present: :mod:`astrodask.merging.weak`) stays in the catalog and is
    treated as one at or above the cut.

    Every window's pieces are folded on their own, so the single-process
    merge and the merge on Dask see the same pieces.

    Parameters
    ----------
    table : pyarrow.Table
        One window's pieces (:data:`astrodask.instances.SCHEMA`, optionally
        with ``vouched``).
    min_score : float or None
        The catalog cut; ``None`` folds nothing but the ``parts``.
    parts : ndarray of bool, optional
        Pieces that are parts of a large galaxy (:mod:`astrodask.merging.hosts`):
        folded as weak pieces are, whatever their score; those that touch
        nothing that stays (or lie mostly on it) are gone too.

    Returns
    -------
    pyarrow.Table
        The kept rows, in their order, with the folded masks, boxes and
        areas; the folded rows (and every part) are gone.
    """
    parts = np.zeros(table.num_rows, dtype=bool) if parts is None else np.asarray(parts, bool)
    if (min_score is None and not parts.any()) or table.num_rows == 0:
        return table
    kept = (table.column("score").to_numpy() >= min_score if min_score is not None
            else np.ones(table.num_rows, dtype=bool))
    if "vouched" in table.column_names:
        kept |= table.column("vouched").to_numpy(zero_copy_only=False)
    kept &= ~parts
    weak = np.flatnonzero(~kept)
    if len(weak) == 0:
        return table
    if len(weak) == table.num_rows:
        return table.filter(pa.array(~parts))
    c = {name: table.column(name).to_numpy(zero_copy_only=False).copy()
         for name in ("y0", "x0", "y1", "x1", "area", "cut")}
    packed = table.column("mask").to_pylist()
    masks = [decode_mask(p, int(c["y1"][k] - c["y0"][k]), int(c["x1"][k] - c["x0"][k]))
             for k, p in enumerate(packed)]
    oy, ox = int(c["y0"].min()) - 1, int(c["x0"].min()) - 1
    owner = np.zeros((int(c["y1"].max()) - oy + 1, int(c["x1"].max()) - ox + 1), np.int64)

    def box(k):  # piece k's box in ``owner``
        return slice(c["y0"][k] - oy, c["y1"][k] - oy), slice(c["x0"][k] - ox, c["x1"][k] - ox)

    for k in np.flatnonzero(kept)[::-1]:  # the first row on top where they overlap
        owner[box(k)][masks[k]] = k + 1
    confident = owner.copy()   # each kept piece's own pixels, before any fold
    own_area = np.bincount(confident.ravel(), minlength=table.num_rows + 1)
    folded = {}
    pending = list(weak)
    while pending:
        left = []
        for k in pending:
            target = _touching_owner(owner, masks[k], c["y0"][k] - oy, c["x0"][k] - ox,
                                     confident, own_area)
            if target is None:
                left.append(k)
                continue
            if target < 0:
                continue  # another proposal for confident pieces
            owner[box(k)][masks[k] & (owner[box(k)] == 0)] = target + 1
            folded.setdefault(target, []).append(k)
        if len(left) == len(pending):
            break
        pending = left
    if not folded:
        return table.filter(pa.array(~parts))
    gone = set(np.flatnonzero(parts))
    encoded = list(packed)
    for target, joined in folded.items():
        members = [target] + joined
        gone.update(joined)
        y0, x0 = min(c["y0"][m] for m in members), min(c["x0"][m] for m in members)
        y1, x1 = max(c["y1"][m] for m in members), max(c["x1"][m] for m in members)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for m in members:
            mask[c["y0"][m] - y0:c["y1"][m] - y0, c["x0"][m] - x0:c["x1"][m] - x0] |= masks[m]
        c["y0"][target], c["x0"][target], c["y1"][target], c["x1"][target] = y0, x0, y1, x1
        c["area"][target] = int(mask.sum())
        c["cut"][target] = any(c["cut"][m] for m in members)
        encoded[target] = encode_mask(mask)
    for name in ("y0", "x0", "y1", "x1", "area", "cut"):
        table = table.set_column(SCHEMA.get_field_index(name), name,
                                 pa.array(c[name], type=SCHEMA.field(name).type))
    table = table.set_column(SCHEMA.get_field_index("mask"), "mask",
                             pa.array(encoded, type=pa.binary()))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[sorted(gone)] = False
    return table.filter(pa.array(keep))


def _touching_owner(owner, mask, y0, x0, confident, own_area):
    """Row of the piece that a weak mask (at ``y0, x0`` of ``owner``) borders most.

    ``None`` when it touches none; ``-1`` when more than half of it lies on
    pieces already, or when it covers more than half of a kept piece's own
    pixels (``confident``: ``owner`` before any fold, ``own_area``: its pixel
    count per label): either way it is another proposal for them, not a part.
    """
    h, w = mask.shape
    around = owner[y0 - 1:y0 + h + 1, x0 - 1:x0 + w + 1]
    inner = around[1:-1, 1:-1]
    under = inner[mask]
    if np.count_nonzero(under) * 2 > np.count_nonzero(mask):
        return -1
    covered = np.bincount(confident[y0:y0 + h, x0:x0 + w][mask], minlength=len(own_area))[1:]
    if np.any(covered * 2 > own_area[1:]):
        return -1
    padded = np.pad(mask, 1)
    ring = ndimage.binary_dilation(padded) & ~padded
    labels = around[ring]
    labels = labels[labels > 0]
    if labels.size == 0:
        return None
    counts = np.bincount(labels)
    return int(np.argmax(counts)) - 1


def read_instance_pieces(results, min_score=None, vouch=None, parts=None):
    """All Mask R-CNN pieces of a results folder (empty table when there are none).

    ``min_score``, ``vouch``, ``parts``: see :func:`read_window_pieces`.
    """
    from .. import storage

    windows = [tuple(int(v) for v in n[len("tile-"):-len(".parquet")].split("-"))
               for n in storage.listdir(results.instances_dir)
               if n.startswith("tile-") and n.endswith(".parquet")]
    tables = read_windows_pieces(results, windows, min_score, vouch, parts)
    table = pa.concat_tables(tables) if tables else PIECE_SCHEMA.empty_table()
    return Pieces(table)


def morpheus_pieces(mosaic, unet_group, threshold=0.0, min_distance=5, max_peaks=20,
                    background_level=1.0, min_area=5, min_snr=5.0):
    """Morpheus segments (Algorithm 1 + 2) of every window, as pieces.

    Each window's region of the stitched U-Net ``mean`` maps is segmented and
    deblended on its own, then handed to the same ownership and stitching as
    Mask R-CNN instances, so segment labels are merged across window edges.

    Parameters
    ----------
    mosaic : Mosaic
    unet_group : zarr.Group
        The run's ``unet.zarr`` with a ``mean`` array (class, y, x).
    threshold, background_level : float
        Algorithm 1 markers: background ≤ threshold seeds sources, background
        ≥ background_level seeds the background.
    min_distance, max_peaks : int
        Algorithm 2 flux-peak seeds.
    min_area, min_snr : float
        Segments smaller than ``min_area`` pixels, or whose summed flux is
        below ``min_snr`` times its noise (the ingest's robust sky σ of each
        band, added in quadrature, times √area), are dropped: a network that
        paints noise peaks as sources would otherwise fill the catalog.

    Returns
    -------
    Pieces
    """
    tables = [morpheus_window_pieces(mosaic, unet_group, iy, ix, threshold=threshold,
                                     min_distance=min_distance, max_peaks=max_peaks,
                                     background_level=background_level, min_area=min_area,
                                     min_snr=min_snr)
              for iy, ix in mosaic.tile_grid.indices()]
    return Pieces(pa.concat_tables(tables) if tables else SCHEMA.empty_table())


def morpheus_window_pieces(mosaic, unet_group, iy, ix, threshold=0.0, min_distance=5,
                           max_peaks=20, background_level=1.0, min_area=5, min_snr=5.0):
    """Morpheus segments of one window as a pieces table (see :func:`morpheus_pieces`)."""
    from ..morphology.deblend import deblend
    from ..morphology.segmentation import segment

    classes = list(unet_group.attrs["astrodask"]["classes"])
    background_index = classes.index("background")
    grid = mosaic.tile_grid
    stats = mosaic.attrs["band_stats"]
    sigma = float(np.sqrt(sum(stats[b]["mad_std"] ** 2 for b in mosaic.bands)))
    mean, std = band_levels(mosaic)
    tile = mosaic.read_tile(iy, ix)
    (my, mx), (wy, wx) = grid.valid_slices(iy, ix)
    background = np.ones((grid.tile, grid.tile))
    background[wy, wx] = unet_group["mean"][background_index, my, mx]
    background = np.nan_to_num(background, nan=1.0)
    valid = (tile.mask & 8) == 0  # padding outside the mosaic is not segmented
    labels = segment(background, threshold=threshold, mask=valid.all(axis=0),
                     background_level=background_level)
    flux = np.where(valid, tile.data, 0.0).sum(axis=0)
    labels, _ = deblend(labels, flux, min_distance=min_distance, max_peaks=max_peaks)
    ids = np.unique(labels[labels > 0])
    if len(ids):
        area = ndimage.sum_labels(np.ones_like(flux), labels, ids)
        signal = ndimage.sum_labels(flux, labels, ids)
        ids = ids[(area >= min_area) & (signal >= min_snr * sigma * np.sqrt(area))]
    masks = labels[None] == ids[:, None, None] if len(ids) else \
        np.zeros((0, grid.tile, grid.tile), bool)
    scores = np.array([1.0 - background[m].min() for m in masks], dtype=np.float32)
    class_ids = np.zeros(len(ids), dtype=np.int8)  # Morpheus does not classify star/galaxy
    return tile_instances(tile, grid, masks, class_ids, scores,
                          detection_image(tile.data, tile.mask != 0, mean, std))
