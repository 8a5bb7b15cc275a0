"""Pieces: what each window saw of each object, in mosaic coordinates.

A piece is one instance from one window: Mask R-CNN instances as written by
the engine, or Morpheus segments cut from the U-Net maps window by window.
Both share the columns of :data:`astrodask.instances.SCHEMA`.
"""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy import ndimage

from ..instances import OPTIONAL_COLUMNS, SCHEMA, decode_mask, tile_instances
from ..sky import band_levels, detection_image


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


def read_window_pieces(results, iy, ix):
    """The Mask R-CNN pieces of one window, from its Parquet part.

    Every path of the merge (single process or on Dask) gets a window's
    pieces here, so a filter on pieces belongs in this function.

    Parameters
    ----------
    results : Results
    iy, ix : int
        Window index.

    Returns
    -------
    pyarrow.Table
        With :data:`astrodask.instances.SCHEMA` (empty when the window has no part).
    """
    import io

    import pyarrow.parquet as pq

    from .. import storage

    try:
        data = storage.get_bytes(results.instances_path(iy, ix))
    except FileNotFoundError:
        return SCHEMA.empty_table()
    table = pq.read_table(io.BytesIO(data))
    for name, fill in OPTIONAL_COLUMNS.items():
        if name not in table.column_names:  # a part written before the column existed
            column = pa.array(np.full(table.num_rows, fill), type=SCHEMA.field(name).type)
            table = table.add_column(SCHEMA.get_field_index(name), name, column)
    return table


def read_instance_pieces(results):
    """All Mask R-CNN pieces of a results folder (empty table when there are none)."""
    from .. import storage

    windows = [tuple(int(v) for v in n[len("tile-"):-len(".parquet")].split("-"))
               for n in storage.listdir(results.instances_dir)
               if n.startswith("tile-") and n.endswith(".parquet")]
    tables = [read_window_pieces(results, iy, ix) for iy, ix in windows]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
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
