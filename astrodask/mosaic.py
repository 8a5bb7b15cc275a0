"""Open a mosaic store, its tile geometry, and read tiles.

A mosaic store is the Zarr v3 group written by :func:`astrodask.ingest`:

``image``       (band, y, x) float32, NaN where a pixel is bad;
``mask``        (band, y, x) uint8 bit flags (see :data:`MASK_BITS`);
``weight``      (band, y, x) float32, only when weight maps were given;
``tiles``       (ty, tx, band, T, T) float32, one chunk per model window;
``tile_mask``   (ty, tx, band, T, T) uint8, the mask of each window, where
                :data:`PADDING` marks pixels outside the mosaic.

Pixel coordinates are 0-based (NumPy order ``y, x``). Window ``(iy, ix)``
covers mosaic rows ``iy*core - halo`` to ``iy*core - halo + tile`` (and the
same for columns); its core, ``[halo, halo + core)`` inside the window, lies
at ``[iy*core, (iy+1)*core)`` in the mosaic. Cores tile the mosaic exactly;
the last core in each direction is cut at the mosaic edge.
"""

from dataclasses import dataclass
from functools import cached_property, lru_cache
import math

import numpy as np

from . import storage
from .errors import StoreError, first_line
from .hashing import json_sha256

#: Bit flags stored in ``mask`` and ``tile_mask``.
NONFINITE = 1    # NaN or Inf in the input
BLANK = 2        # equal to the FITS BLANK value
ZERO_WEIGHT = 4  # weight map is zero (or not finite)
PADDING = 8      # outside the mosaic: padding of an edge window
MASK_BITS = {"nonfinite": NONFINITE, "blank": BLANK, "zero_weight": ZERO_WEIGHT,
             "padding": PADDING}

#: Version of the store layout; bump when the layout changes incompatibly.
STORE_FORMAT = 1
STORE_KIND = "astrodask-mosaic"


@dataclass(frozen=True)
class TileGrid:
    """Geometry of the halo'd model windows over a mosaic.

    Parameters
    ----------
    height, width : int
        Mosaic size in pixels.
    tile : int
        Window side (the model input), e.g. 512.
    halo : int
        Overlap on each side of the core; ``core = tile - 2 * halo``.
    """

    height: int
    width: int
    tile: int = 512
    halo: int = 32

    def __post_init__(self):
        if self.tile <= 0 or self.halo < 0:
            raise ValueError("tile must be positive and halo non-negative")
        if self.core <= 0:
            raise ValueError(f"halo {self.halo} leaves no core in a {self.tile}-pixel tile")
        if self.height <= 0 or self.width <= 0:
            raise ValueError("mosaic must have a positive size")

    @property
    def core(self):
        """Side of a window's core, ``tile - 2 * halo``."""
        return self.tile - 2 * self.halo

    @property
    def shape(self):
        """Number of windows ``(ny, nx)``."""
        return (math.ceil(self.height / self.core), math.ceil(self.width / self.core))

    def __len__(self):
        ny, nx = self.shape
        return ny * nx

    def indices(self):
        """All window indices ``(iy, ix)`` in row-major order."""
        ny, nx = self.shape
        return [(iy, ix) for iy in range(ny) for ix in range(nx)]

    def window_origin(self, iy, ix):
        """Mosaic coordinates ``(y0, x0)`` of the window's first pixel (may be negative)."""
        return (iy * self.core - self.halo, ix * self.core - self.halo)

    def core_slices(self, iy, ix):
        """Mosaic slices ``(ys, xs)`` of window ``(iy, ix)``'s core, cut at the mosaic edge."""
        self._check(iy, ix)
        y0, x0 = iy * self.core, ix * self.core
        return (slice(y0, min(y0 + self.core, self.height)),
                slice(x0, min(x0 + self.core, self.width)))

    def core_slices_in_window(self, iy, ix):
        """Window slices ``(ys, xs)`` of the core, cut at the mosaic edge."""
        ys, xs = self.core_slices(iy, ix)
        return (slice(self.halo, self.halo + ys.stop - ys.start),
                slice(self.halo, self.halo + xs.stop - xs.start))

    def valid_slices(self, iy, ix, margin=0):
        """Pair ``(mosaic_slices, window_slices)`` of the part of the window inside the mosaic.

        ``margin``: of the window widened by that many pixels on each side.
        """
        self._check(iy, ix)
        y0, x0 = (v - margin for v in self.window_origin(iy, ix))
        side = self.tile + 2 * margin
        my = slice(max(y0, 0), min(y0 + side, self.height))
        mx = slice(max(x0, 0), min(x0 + side, self.width))
        wy = slice(my.start - y0, my.stop - y0)
        wx = slice(mx.start - x0, mx.stop - x0)
        return (my, mx), (wy, wx)

    def owner(self, y, x):
        """Index ``(iy, ix)`` of the window whose half-open core holds mosaic pixel ``(y, x)``."""
        if not (0 <= y < self.height and 0 <= x < self.width):
            raise ValueError(f"pixel ({y}, {x}) is outside the {self.height}x{self.width} mosaic")
        return (int(y) // self.core, int(x) // self.core)

    def _check(self, iy, ix):
        ny, nx = self.shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise IndexError(f"tile ({iy}, {ix}) is outside the {ny}x{nx} tile grid")

    def to_dict(self):
        """JSON-ready description (stored in the mosaic's attributes)."""
        ny, nx = self.shape
        return {"height": self.height, "width": self.width, "tile": self.tile,
                "halo": self.halo, "core": self.core, "ny": ny, "nx": nx}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        return cls(height=int(d["height"]), width=int(d["width"]),
                   tile=int(d["tile"]), halo=int(d["halo"]))


@dataclass(frozen=True)
class Tile:
    """One model window read from a mosaic store.

    Attributes
    ----------
    iy, ix : int
        Window index.
    data : ndarray, shape (band, tile, tile), float32
        Pixels; bad and padding pixels are 0.
    mask : ndarray, shape (band, tile, tile), uint8
        Bit flags (:data:`MASK_BITS`); :data:`PADDING` marks pixels outside the mosaic.
    origin : tuple of int
        Mosaic coordinates ``(y0, x0)`` of ``data[:, 0, 0]``.
    core : tuple of slice
        Slices of the core inside the window.
    """

    iy: int
    ix: int
    data: np.ndarray
    mask: np.ndarray
    origin: tuple
    core: tuple


class Block:
    """A region of a ``(band, height, width)`` array read once, indexed as the whole array.

    The chunk ``ys, xs`` grown by ``margin`` pixels on each side (clipped at the
    array's edges) is read at construction; indexing with ``[:, ys', xs']``,
    slices in the whole array's 0-based pixel coordinates, then costs no read.
    Functions written for a Zarr array (:func:`astrodask.measure.chunk_flags`,
    :func:`astrodask.measure.smoothed_detection`) take a block instead.

    Parameters
    ----------
    array : array_like, shape (band, height, width)
    ys, xs : slice
        The chunk, with explicit start and stop.
    margin : int
    """

    def __init__(self, array, ys, xs, margin=0):
        _, height, width = self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.y0, self.x0 = max(ys.start - margin, 0), max(xs.start - margin, 0)
        self.y1, self.x1 = min(ys.stop + margin, height), min(xs.stop + margin, width)
        self.data = np.asarray(array[:, self.y0:self.y1, self.x0:self.x1])

    def __getitem__(self, key):
        bands, ys, xs = key
        if not (self.y0 <= ys.start <= ys.stop <= self.y1
                and self.x0 <= xs.start <= xs.stop <= self.x1):
            raise IndexError(f"[{ys.start}:{ys.stop}, {xs.start}:{xs.stop}] is outside the block "
                             f"[{self.y0}:{self.y1}, {self.x0}:{self.x1}]")
        return self.data[bands, ys.start - self.y0:ys.stop - self.y0,
                         xs.start - self.x0:xs.stop - self.x0]


class Mosaic:
    """A finished mosaic store opened for reading. Use :func:`open_mosaic`."""

    def __init__(self, group, path):
        self._group = group
        self._arrays = {}
        self.path = str(path)
        attrs = dict(group.attrs)
        self.attrs = attrs["astrodask"]
        self.bands = tuple(self.attrs["bands"])
        self.tile_grid = TileGrid.from_dict(self.attrs["tile_grid"])
        self.pixel_scale = self.attrs.get("pixel_scale_arcsec")

    @cached_property
    def token(self):
        """A digest of all the store's attributes, the time it was written included: a store
        written anew at the same path has another one (for caches of opened stores)."""
        return json_sha256(self.attrs)[:16]

    @cached_property
    def content_digest(self):
        """A digest of what the store holds: its inputs' and weights' SHA-256 and HDUs, and
        every attribute ingest derived from them or was told (grid, band statistics, PSF,
        saturation levels, resampling, ...), but not when or by which version it was written
        nor where its inputs lie. Two stores with the same digest hold the same pixels."""
        files = {key: [(f.get("sha256"), f.get("hdu")) for f in self.attrs.get(key) or []]
                 for key in ("inputs", "weights")}
        kept = {key: value for key, value in self.attrs.items()
                if key not in ("created", "astrodask_version", "inputs", "weights")}
        return json_sha256(dict(kept, **files))

    @property
    def shape(self):
        """``(n_bands, height, width)``."""
        return (len(self.bands), self.tile_grid.height, self.tile_grid.width)

    @cached_property
    def header(self):
        """The reference band's header (WCS, COMMENT, HISTORY; no data-layout keywords)."""
        from astropy.io import fits

        return fits.Header.fromstring("".join(self.attrs.get("wcs_header", [])))

    @cached_property
    def wcs(self):
        """Celestial :class:`astropy.wcs.WCS` of the mosaic, or ``None`` if the input had none."""
        if not self.attrs.get("has_wcs"):
            return None
        from astropy.wcs import WCS

        return WCS(self.header, naxis=2)

    @cached_property
    def psf(self):
        """Each band's PSF, or ``None`` when the store has none (ingested before PSFs were).

        Returns
        -------
        dict or None
            Band name → :class:`~astrodask.psf.BandPSF` (``fwhm_px``,
            ``fwhm_arcsec``, ``n_stars``, ``source`` "measured" or "given",
            ``reason`` when no FWHM could be measured).
        """
        stored = self.attrs.get("psf")
        if not stored:
            return None
        from .psf import BandPSF

        return {band: BandPSF.from_dict(d) for band, d in stored["bands"].items()}

    @property
    def saturation(self):
        """Each band's saturation level in the stored pixels' units, or ``None``.

        Pixels at or above it are saturated. The input's ``SATURATE`` or the
        level given at ingest (:func:`astrodask.ingest`'s ``saturation``),
        less the highest background subtracted at ingest, if any
        (``attrs["saturation_source"]`` says which). ``None`` for a band
        without a level, for a store resampled at ingest and for stores
        ingested before levels were kept.

        Returns
        -------
        dict
            Band name → float or ``None``.
        """
        stored = self.attrs.get("saturation") or {}
        return {band: stored.get(band) for band in self.bands}

    @property
    def rescale_factor(self):
        """Factor the inputs were resampled by at ingest (1.0: their own grid).

        ``attrs["rescale"]`` also holds the original shape and pixel scale.
        """
        return float((self.attrs.get("rescale") or {}).get("factor", 1.0))

    @property
    def has_weight(self):
        """Whether weight maps were ingested."""
        return "weight" in self._group

    def array(self, name):
        """The Zarr array ``name`` (``image``, ``mask``, ``weight``, ``tiles``, ``tile_mask``).

        Opened once per :class:`Mosaic` (opening reads the array's metadata:
        a request of its own on an object store).
        """
        if name not in self._arrays:
            try:
                self._arrays[name] = self._group[name]
            except KeyError:
                raise StoreError(f"mosaic {self.path} has no array {name!r}") from None
        return self._arrays[name]

    def read_tile(self, iy, ix):
        """Read window ``(iy, ix)``: one chunk of ``tiles`` and one of ``tile_mask``.

        Returns
        -------
        Tile
        """
        self.tile_grid._check(iy, ix)
        data, mask = self._read_together([("tiles", (iy, ix)), ("tile_mask", (iy, ix))])
        return Tile(iy=iy, ix=ix, data=data, mask=mask,
                    origin=self.tile_grid.window_origin(iy, ix),
                    core=self.tile_grid.core_slices_in_window(iy, ix))

    def read_window(self, iy, ix, margin=0):
        """Window ``(iy, ix)`` widened by ``margin`` px each side, from ``image`` and ``mask``.

        For a model that needs more context around a core than the store's
        halo gives (the U-Net's fast mode: 106 px): the pixels come from the
        full-mosaic arrays, set as in ``tiles`` (0 where flagged, :data:`PADDING`
        outside the mosaic), so ``margin=0`` reads what :meth:`read_tile` reads.

        Returns
        -------
        Tile
            Of side ``tile + 2 * margin``; ``origin`` and ``core`` account for
            the margin.
        """
        grid = self.tile_grid
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        (ys, xs), (wy, wx) = grid.valid_slices(iy, ix, margin)
        side = grid.tile + 2 * margin
        inner = (slice(None), wy, wx)
        n_bands = len(self.bands)
        data = np.zeros((n_bands, side, side), dtype=np.float32)
        mask = np.full((n_bands, side, side), PADDING, dtype=np.uint8)
        flags, image = self._read_together([("mask", (slice(None), ys, xs)),
                                            ("image", (slice(None), ys, xs))])
        mask[inner] = flags
        data[inner] = np.where(flags == 0, image, np.float32(0.0))
        y0, x0 = grid.window_origin(iy, ix)
        cy, cx = grid.core_slices_in_window(iy, ix)
        return Tile(iy=iy, ix=ix, data=data, mask=mask, origin=(y0 - margin, x0 - margin),
                    core=(slice(cy.start + margin, cy.stop + margin),
                          slice(cx.start + margin, cx.stop + margin)))

    def _read_together(self, reads):
        """``[np.asarray(self.array(name)[key]) for name, key in reads]``; from an object
        store in flight together (:func:`astrodask.storage.map_requests`). A read that fails
        (a damaged chunk, a store that went away) is a one-line :class:`StoreError`."""
        return storage.map_requests(self.path, self._read, reads)

    def _read(self, read):
        name, key = read
        array = self.array(name)
        try:
            return np.asarray(array[key])
        except Exception as exc:
            where = ", ".join(f"{k.start or 0}:{k.stop if k.stop is not None else n}"
                              if isinstance(k, slice) else str(k)
                              for k, n in zip(key, array.shape))
            raise StoreError(f"cannot read {name}[{where}] of mosaic {self.path} "
                             f"({type(exc).__name__}: {first_line(exc)}): a damaged chunk? "
                             "ingest the mosaic again") from exc

    def core_slices(self, iy, ix):
        """Mosaic slices ``(ys, xs)`` of window ``(iy, ix)``'s core."""
        return self.tile_grid.core_slices(iy, ix)

    def to_dask(self, name="image"):
        """The array ``name`` as a lazy :class:`dask.array.Array`, chunked like the store."""
        import dask.array as da

        return da.from_zarr(self.array(name))

    def __repr__(self):
        _, h, w = self.shape
        ny, nx = self.tile_grid.shape
        return (f"<Mosaic {self.path}: bands {','.join(self.bands)}, {h}x{w} px, "
                f"{ny}x{nx} tiles of {self.tile_grid.tile} (halo {self.tile_grid.halo})>")


def open_mosaic(path):
    """Open a finished mosaic store written by :func:`astrodask.ingest`.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder, or an fsspec URL (``s3://bucket/mosaic.zarr``).

    Returns
    -------
    Mosaic

    Raises
    ------
    StoreError
        If ``path`` does not exist, is not a Zarr group, or is not a complete
        astrodask mosaic.

    Examples
    --------
    The store written in the example of :func:`astrodask.ingest`:

    >>> import astrodask
    >>> mosaic = astrodask.open_mosaic("mosaic.zarr")
    >>> tile = mosaic.read_tile(0, 1)          # one chunk: a window with its halo
    >>> tile.data.shape, mosaic.core_slices(0, 1)
    ((3, 128, 128), (slice(0, 96, None), slice(96, 128, None)))
    """
    import zarr

    from . import storage

    path = storage.normalise(path)
    if not storage.exists(path):
        raise StoreError(f"mosaic store {path} does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:
        raise StoreError(f"{path} is not a Zarr group (not an astrodask mosaic)") from None
    attrs = dict(group.attrs).get("astrodask")
    if not isinstance(attrs, dict) or attrs.get("kind") != STORE_KIND:
        raise StoreError(f"{path} is not an astrodask mosaic store")
    if not attrs.get("complete"):
        raise StoreError(f"{path} is an unfinished mosaic store (ingest did not complete)")
    if attrs.get("format") != STORE_FORMAT:
        raise StoreError(f"{path} has store format {attrs.get('format')}; "
                         f"this astrodask reads format {STORE_FORMAT}")
    for name in ("image", "mask", "tiles", "tile_mask"):
        if name not in group:
            raise StoreError(f"{path} lacks the {name!r} array (damaged store)")
    return Mosaic(group, path)


@lru_cache(maxsize=4)
def cached_mosaic(path, token):
    """:func:`open_mosaic`, once per process for each store version (for tasks on a worker).

    Parameters
    ----------
    path : str
        The store, as :attr:`Mosaic.path` gives it.
    token : str
        The :attr:`Mosaic.token` of the store the caller opened. A store written
        anew at the same path (``ingest --overwrite`` between two runs on a
        long-lived cluster) has another token, so it is opened anew rather than
        read with the metadata of the old one.

    Raises
    ------
    StoreError
        If the store at ``path`` no longer has ``token``: it was written anew
        after the caller opened it.
    """
    mosaic = open_mosaic(path)
    if mosaic.token != token:
        raise StoreError(f"mosaic {path} was written anew after this job opened it; "
                         "run the job again")
    return mosaic
