"""FITS band images → one Zarr v3 mosaic store with halo'd model tiles.

The store is written block by block (one row of windows, a few windows wide),
so peak memory is set by the block size, not by the mosaic size. Every write
covers whole chunks and each chunk has exactly one writer. The store is built
under a temporary name beside the output and renamed only when complete.
"""

import datetime
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from . import storage
from ._version import __version__
from .errors import InputError, StoreError
from .hashing import file_sha256
from .fits_input import FitsImage
from .mosaic import (MASK_BITS, PADDING, STORE_FORMAT, STORE_KIND, ZERO_WEIGHT, TileGrid,
                     cached_mosaic, open_mosaic)
from .noise_correlation import NoiseCorrelation, core_step
from .psf import METHOD as PSF_METHOD, given_psf, measure_psf, rescale_for_fwhm
from .rescale import RescaledImage, check_factor
from .background import BackgroundSubtracted, check_mesh
from .sky import clipped_stats, sample_step
from .zeropoints import ab_zeropoint

#: Pixels sampled per band for the robust statistics stored in the attributes (half
#: of ``band_statistics``' budget: ingest holds every band's sample at once).
STAT_SAMPLES = 2_000_000
#: Every this many neighbour differences of a measured core is kept for the pixel noise
#: (~10^4 per core).
STEP_SAMPLE = 23


class AstrodaskWarning(UserWarning):
    """A condition the user should know about that does not stop the run."""


def ingest(inputs, out, *, bands=None, tile=512, halo=32, weights=None, hdu=None,
           overwrite=False, rescale=None, psf_fwhm=None, background=None, saturation=None,
           block_tiles=8, progress=None):
    """Convert per-band FITS images into a mosaic store.

    Parameters
    ----------
    inputs : sequence of str or Path
        One FITS file per band (``.fits`` or ``.fits.gz``), all on one pixel grid.
    out : str or Path
        The ``.zarr`` folder to write, or an fsspec URL (``s3://bucket/m.zarr``,
        ``memory://m.zarr``). A local store is built under a temporary name and
        renamed when complete; a remote one is written in place and marked
        complete last (readers refuse it until then) and removed on failure.
    bands : sequence of str, optional
        Band names in the order of ``inputs``; default each file's FILTER keyword.
    tile, halo : int
        Model window side and halo; window cores are ``tile - 2 * halo``.
    weights : sequence of str or Path, optional
        Inverse-variance weight maps, one per band, on the same grid. Pixels of
        weight zero (or negative, or not finite) are flagged ``zero_weight``.
    hdu : int, optional
        HDU index to read in every file; default the first image HDU with data.
    overwrite : bool
        Replace ``out`` if it is an existing mosaic store.
    rescale : float or "auto", optional
        Resample the bands by this factor (> 1 upsamples, < 1 downsamples),
        conserving flux, with the WCS updated exactly (:class:`astrodask.RescaledImage`);
        ``"auto"`` picks the factor that brings the median measured PSF FWHM
        to :data:`~astrodask.psf.TARGET_FWHM_PX`. The factor and the original
        grid are stored in the attributes (``rescale``).
    psf_fwhm : dict, optional
        PSF FWHM in arcsec per band name, stored instead of the measurement
        (:func:`astrodask.psf.measure_psf`) for those bands.
    background : int, optional
        Subtract each band's sky background, a map of meshes of this many
        pixels (:class:`astrodask.background.BackgroundSubtracted`, as
        SExtractor's ``BACK_SIZE``), before anything else (resampling
        included); for images whose sky was not subtracted. Default: the
        pixels as given, with an :class:`AstrodaskWarning` where a band's
        sky level lies more than :data:`SKY_WARNING_SIGMA` of its noise
        from zero.
    saturation : dict, optional
        Saturation level per band name, in the input files' units (before
        any background is subtracted), for files whose headers lack
        ``SATURATE`` or state it wrongly; the key ``"*"`` sets every band.
        Default each header's ``SATURATE``. Stored in the attributes
        (:attr:`astrodask.Mosaic.saturation`) in the stored pixels' units:
        with ``background``, the level less the highest background
        subtracted from the band (a plateau at the level is then saturated
        wherever it lies; pixels within the background's variation below
        the level count too). A store resampled with ``rescale`` keeps no
        level (resampling smooths a saturated plateau below it).
    block_tiles : int
        Windows per block along x; bounds memory (about
        ``n_bands * tile * tile * block_tiles * 13`` bytes).
    progress : callable, optional
        Called as ``progress(done_blocks, total_blocks)``.

    Returns
    -------
    Mosaic
        The finished store, opened.

    Raises
    ------
    InputError
        Unusable inputs (unreadable or truncated FITS, table HDU, not 2-D,
        shapes or WCS that differ, a band with no valid pixels, ...).
    StoreError
        ``out`` exists and ``overwrite`` is not set, or is not a mosaic store.

    Examples
    --------
    A small simulated field stands in for your band images:

    >>> import astrodask
    >>> sim = astrodask.simulate("field", size="128x128", seed=1)
    >>> mosaic = astrodask.ingest([f"field/{band}.fits" for band in sim["bands"]],
    ...                           "mosaic.zarr", tile=128, halo=16, progress=None)
    >>> mosaic.bands, mosaic.shape, mosaic.tile_grid.shape
    (('g', 'r', 'z'), (3, 128, 128), (2, 2))
    """
    inputs = [Path(p) for p in inputs]
    out = storage.normalise(out)
    remote = storage.is_url(out)
    if not inputs:
        raise InputError("no input FITS files given")
    if weights is not None and len(weights) != len(inputs):
        raise InputError(f"{len(weights)} weight maps for {len(inputs)} bands; "
                         "give one per band or none")
    _check_output(out, overwrite)
    grid_args = dict(tile=tile, halo=halo)
    try:
        TileGrid(height=1, width=1, **grid_args)
    except ValueError as exc:
        raise InputError(str(exc)) from None

    scratch = Path(tempfile.gettempdir()) if remote else Path(out).parent
    with ExitStack() as stack:
        images = [stack.enter_context(FitsImage(p, hdu=hdu, scratch_dir=scratch))
                  for p in inputs]
        weight_images = [stack.enter_context(FitsImage(p, hdu=hdu, scratch_dir=scratch))
                         for p in (weights or [])]
        band_names = _band_names(images, bands)
        _check_same_grid(images + weight_images)
        original = _original_grid(images[0])
        subtracted = None
        if background is not None:
            mesh = check_mesh(background)
            images = subtracted = [BackgroundSubtracted(i, mesh) for i in images]
        factor = _rescale_factor(rescale, images, band_names, psf_fwhm, original)
        if factor != 1.0:
            images = [RescaledImage(i, factor) for i in images]
            weight_images = [RescaledImage(w, factor, weight=True) for w in weight_images]
        header, wcs = _reference_wcs(images[0])
        given = _given_psf(psf_fwhm, band_names, _pixel_scale(wcs))
        levels = _saturation_levels(images, band_names, saturation)
        grid = TileGrid(height=images[0].shape[0], width=images[0].shape[1], **grid_args)
        # Locally a temporary sibling renamed when whole; remotely in place (an
        # existing store was checked replaceable), complete in its attributes last.
        with storage.staged_folder(out, replace=overwrite) as target:
            stats = _write_store(target, images, weight_images, grid, block_tiles, progress)
            _check_bands_not_empty(stats, band_names, images)
            if background is None:
                _warn_of_unsubtracted_sky(stats, band_names)
            psf = _store_psf(target, band_names, _pixel_scale(wcs), given)
            attrs = _attributes(band_names, grid, header, wcs, images, weight_images, stats)
            attrs.update(levels)
            attrs["psf"] = {"method": PSF_METHOD, "bands": {b: p.to_dict() for b, p in psf.items()}}
            attrs["rescale"] = dict(original, factor=factor)
            attrs["background"] = _background_record(subtracted, band_names)
            _mark_complete(target, attrs)
    return open_mosaic(out)


def derive_mosaic(source, out, read_band, *, derived_from, overwrite=False, block_tiles=8,
                  progress=None, client=None):
    """A mosaic store on ``source``'s grid whose band pixels are computed from it.

    The flags, weights, WCS, PSF and every other attribute are ``source``'s;
    the band statistics are measured again on the new pixels. Written block by
    block as :func:`ingest` writes, and in place only when whole.

    Parameters
    ----------
    source : Mosaic
    out : str or Path
        The ``.zarr`` folder (or fsspec URL) to write.
    read_band : callable
        ``read_band(band_index, rows, cols)`` → float array of the new band
        over those slices (flagged pixels may hold anything).
    derived_from : dict
        What the pixels are (JSON-serialisable), kept as the ``derived_from``
        attribute.
    overwrite : bool
        Replace ``out`` if it is an existing mosaic store.
    block_tiles : int
        Windows per block along x.
    progress : callable, optional
        ``progress(done_blocks, total_blocks)``.
    client : distributed.Client, optional
        Write the blocks as tasks on this client's cluster (``read_band`` is
        then pickled and sent to each worker once), else in this process.
        The store is the same to the byte either way.

    Returns
    -------
    Mosaic
    """
    out = storage.normalise(out)
    _check_output(out, overwrite)
    with storage.staged_folder(out, replace=overwrite) as target:
        if client is None:
            images, weights = _derived_bands(source, read_band)
            stats = _write_store(target, images, weights, source.tile_grid, block_tiles, progress)
        else:
            stats = _write_derived_on(client, target, source, read_band, block_tiles, progress,
                                      f"writing {out}")
        attrs = dict(source.attrs)
        attrs.update(band_stats=dict(zip(source.bands, stats)), derived_from=derived_from,
                     astrodask_version=__version__,
                     created=datetime.datetime.now(datetime.timezone.utc)
                     .isoformat(timespec="seconds"))
        _mark_complete(target, attrs)
    return open_mosaic(out)


def _derived_bands(source, read_band):
    """``(images, weights)`` of a derived store: bands from ``read_band``, ``source``'s weights."""
    mask = source.array("mask")
    images = [_DerivedBand(read_band, b, mask, source.bands[b]) for b in range(len(source.bands))]
    weights = ([_DerivedBand(lambda b, r, c: source.array("weight")[b, r, c], b, mask, band)
                for b, band in enumerate(source.bands)] if source.has_weight else [])
    return images, weights


def _write_derived_on(client, target, source, read_band, block_tiles, progress, what):
    """:func:`_write_store` of a derived store with one task per block on ``client``'s cluster."""
    from .engine.cluster import task_map

    grid = source.tile_grid
    _create_store(target, len(source.bands), grid, source.has_weight)
    [reader] = client.scatter([read_band], broadcast=True, hash=False)
    parts = task_map(client, _derived_block,
                     [(target, source.path, source.token, reader, grid, block)
                      for block in _blocks(grid, block_tiles)], StoreError, what, progress)
    return _combined_stats(parts, grid)


def _derived_block(target, source_path, source_token, read_band, grid, block):
    """Write one block of a derived store (a task); the block's statistics per band."""
    import zarr

    source = cached_mosaic(source_path, source_token)
    group = zarr.open_group(target, mode="r+")
    arrays = {name: group[name] for name in _ARRAY_NAMES if name in group}
    images, weights = _derived_bands(source, read_band)
    return _block_stats(arrays, images, weights, grid, block)


class _DerivedBand:
    """One band computed by ``read_band``, read with the source's flags as ``(values, flags)``."""

    def __init__(self, read_band, index, mask, name):
        self.shape = mask.shape[1:]
        self.name = name
        self._read, self._index, self._mask = read_band, index, mask

    def read(self, ys, xs):
        return (np.asarray(self._read(self._index, ys, xs), dtype=np.float32),
                np.asarray(self._mask[self._index, ys, xs], dtype=np.uint8))


def _pixel_scale(wcs):
    """Mean pixel scale (arcsec) of a celestial WCS, or ``None``."""
    if wcs is None:
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def _original_grid(image):
    """The input grid, kept in the attributes of a rescaled store."""
    return {"original_shape": list(image.shape),
            "original_pixel_scale_arcsec": _pixel_scale(_celestial_wcs(image)),
            "to_original": "x_original = (x + 0.5) / factor - 0.5, the same for y "
                           "(0-based pixel centres)"}


def _rescale_factor(rescale, images, band_names, psf_fwhm, original):
    """The factor to resample by: 1 for none, the given one, or the ``auto`` choice."""
    if rescale is None:
        return 1.0
    if str(rescale).strip().lower() != "auto":
        return check_factor(rescale)
    scale = original["original_pixel_scale_arcsec"]
    given = _given_psf(psf_fwhm, band_names, scale)
    fwhms, reasons = [], []
    for band, image in zip(band_names, images):
        psf = given.get(band) or measure_psf(_FitsBand(image), band=band)
        if psf.fwhm_px is None:
            reasons.append(f"{band}: {psf.reason}")
        else:
            fwhms.append(psf.fwhm_px)
    if not fwhms:
        raise InputError("--rescale auto needs a PSF FWHM and none was measured ("
                         + "; ".join(reasons) + "); give --rescale F or --psf-fwhm")
    return rescale_for_fwhm(float(np.median(fwhms)))


class _FitsBand:
    """A FITS band sliceable as ``band[ys, xs]`` (values, NaN where flagged)."""

    def __init__(self, image):
        self.shape = image.shape
        self._image = image

    def __getitem__(self, key):
        return self._image.read(*key)[0]


class _StoreBand:
    """One band of a store's array, sliceable as ``band[ys, xs]``."""

    def __init__(self, array, index):
        self.shape = array.shape[1:]
        self._array, self._index = array, index

    def __getitem__(self, key):
        return self._array[(self._index, *key)]


def _given_psf(psf_fwhm, band_names, pixel_scale):
    """``{band: BandPSF}`` for the bands whose PSF FWHM (arcsec) the user gave."""
    if not psf_fwhm:
        return {}
    unknown = sorted(set(psf_fwhm) - set(band_names))
    if unknown:
        raise InputError(f"--psf-fwhm names band(s) {', '.join(unknown)}, which the mosaic "
                         f"lacks (bands: {','.join(band_names)})")
    return {b: given_psf(b, v, pixel_scale) for b, v in psf_fwhm.items()}


def _store_psf(location, band_names, pixel_scale, given):
    """Each band's PSF: the given one, or measured on blocks sampled from the store."""
    import zarr

    group = zarr.open_group(location, mode="r")
    image, mask = group["image"], group["mask"]
    return {b: given.get(b) or measure_psf(_StoreBand(image, i), _StoreBand(mask, i),
                                           band=b, pixel_scale=pixel_scale)
            for i, b in enumerate(band_names)}


def _check_output(out, overwrite):
    if not storage.exists(out):
        storage.check_folder_of(out)
        return
    if not overwrite:
        raise StoreError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    try:
        open_mosaic(out)
    except StoreError:
        if not storage.listdir(out, hidden=True):
            return
        raise StoreError(f"{out} exists and is not an astrodask mosaic store; "
                         "refusing to overwrite it") from None


def _band_names(images, bands):
    if bands is not None:
        names = [b.strip() for b in bands]
        if len(names) != len(images):
            raise InputError(f"{len(names)} band names ({','.join(names)}) for "
                             f"{len(images)} input files")
    else:
        names = []
        for image in images:
            if image.filter_name is None:
                raise InputError(f"{image.name} has no FILTER keyword; name the bands "
                                 "with --bands (e.g. --bands g,r,z)")
            names.append(image.filter_name)
    if any(not n for n in names):
        raise InputError("band names must not be empty")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"band name(s) {', '.join(duplicates)} given to more than one file")
    return names


def _check_same_grid(images):
    first = images[0]
    first_wcs = _celestial_wcs(first)
    for other in images[1:]:
        if other.shape != first.shape:
            raise InputError(f"shapes differ: {first.name} is {first.shape[0]}x{first.shape[1]}"
                             f", {other.name} is {other.shape[0]}x{other.shape[1]} (y x)")
        difference = _wcs_difference(first_wcs, _celestial_wcs(other), first.shape)
        if difference:
            raise InputError(f"WCS differs between {first.name} and {other.name}: {difference}")


def _celestial_wcs(image):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(image.sky_header(), naxis=2)
        except Exception as exc:  # astropy raises many kinds for malformed WCS
            raise InputError(f"{image.name} has an invalid WCS ({exc})") from None
    return wcs if wcs.has_celestial else None


def _wcs_difference(a, b, shape):
    """Describe how two celestial WCSs differ over an image, or return ``''``."""
    if a is None and b is None:
        return ""
    if (a is None) != (b is None):
        return "one has a celestial WCS and the other has none"
    if list(a.wcs.ctype) != list(b.wcs.ctype):
        return f"projection {list(a.wcs.ctype)} vs {list(b.wcs.ctype)}"
    from astropy.wcs.utils import proj_plane_pixel_scales

    h, w = shape
    ys, xs = np.meshgrid([0, h / 2, h - 1], [0, w / 2, w - 1], indexing="ij")
    sky_a = a.pixel_to_world(xs.ravel(), ys.ravel())
    sky_b = b.pixel_to_world(xs.ravel(), ys.ravel())
    separation = sky_a.separation(sky_b).deg
    pixel_deg = float(np.mean(proj_plane_pixel_scales(a)))
    worst = int(np.argmax(separation))
    if separation[worst] > 1e-3 * pixel_deg:
        return (f"pixel (x={xs.ravel()[worst]:.0f}, y={ys.ravel()[worst]:.0f}) maps "
                f"{separation[worst] * 3600:.3g} arcsec apart")
    return ""


def _reference_wcs(image):
    wcs = _celestial_wcs(image)
    if wcs is None:
        warnings.warn(f"{image.name} has no celestial WCS; sky coordinates will be absent "
                      "downstream", AstrodaskWarning, stacklevel=3)
    return image.sky_header(), wcs


#: The arrays of a mosaic store (``weight`` only where weights were given).
_ARRAY_NAMES = ("image", "mask", "weight", "tiles", "tile_mask")


def _create_arrays(group, n_bands, grid, with_weight):
    from zarr.codecs import BloscCodec

    core = grid.core
    ny, nx = grid.shape
    t = grid.tile
    # Blosc-LZ4 with byte shuffle: fast enough that compression does not bound ingest.
    floats = dict(compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))
    masks = dict(compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))
    plane = dict(shape=(n_bands, grid.height, grid.width), chunks=(1, core, core),
                 dimension_names=("band", "y", "x"))
    windows = dict(shape=(ny, nx, n_bands, t, t), chunks=(1, 1, n_bands, t, t),
                   dimension_names=("ty", "tx", "band", "wy", "wx"))
    arrays = {
        "image": group.create_array("image", dtype="float32", fill_value=np.nan,
                                    **plane, **floats),
        "mask": group.create_array("mask", dtype="uint8", fill_value=0, **plane, **masks),
        "tiles": group.create_array("tiles", dtype="float32", fill_value=0.0,
                                    **windows, **floats),
        "tile_mask": group.create_array("tile_mask", dtype="uint8", fill_value=PADDING,
                                        **windows, **masks),
    }
    if with_weight:
        arrays["weight"] = group.create_array("weight", dtype="float32", fill_value=0.0,
                                              **plane, **floats)
    return arrays


class _BandStats:
    """Running count, extrema, a deterministic pixel sample and the sky noise's
    correlation between neighbouring pixels of one band."""

    def __init__(self, stride):
        self.stride = stride
        self.n_good = 0
        self.minimum = np.inf
        self.maximum = -np.inf
        self.samples = []
        self.steps = []  # differences of horizontal neighbours in the measured cores
        self.correlation = NoiseCorrelation()

    def add_cores(self, values, good, weight, grid, iy, ix0, step):
        """Add the noise correlation of the cores ``(iy, ix0...)`` of one block row.

        Only cores whose indices are multiples of ``step`` are measured, so the
        result does not depend on how the ingest groups windows into blocks.
        With ``weight``, pixels are scaled by √weight first (noise of unit
        variance where the weights are right).
        """
        if iy % step:
            return
        core = grid.core
        for x0 in range(0, values.shape[1], core):
            if (ix0 + x0 // core) % step:
                continue
            part = (slice(None), slice(x0, x0 + core))
            pixels = values[part].astype(np.float64)
            pairs = good[part][:, 1:] & good[part][:, :-1]
            self.steps.append(np.diff(pixels, axis=1)[pairs][::STEP_SAMPLE])
            if weight is not None:
                pixels = pixels * np.sqrt(np.clip(weight[part], 0.0, None))
            self.correlation.add(pixels, good[part])

    def add(self, values, good, y0, x0):
        if not good.any():
            return
        v = values[good]
        self.n_good += int(v.size)
        self.minimum = min(self.minimum, float(v.min()))
        self.maximum = max(self.maximum, float(v.max()))
        # Sample on a global lattice so the sample does not depend on block layout.
        s = self.stride
        sy, sx = (-y0) % s, (-x0) % s
        sub_v, sub_g = values[sy::s, sx::s], good[sy::s, sx::s]
        self.samples.append(sub_v[sub_g].astype(np.float64))

    def extend(self, other):
        """Add another block's statistics (blocks added in a fixed order give fixed sums)."""
        self.n_good += other.n_good
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.samples.extend(other.samples)
        self.steps.extend(other.steps)
        self.correlation.extend(other.correlation)

    def summary(self):
        if self.n_good == 0:
            return {"n_good": 0}
        from astropy.stats import mad_std

        sample = np.concatenate(self.samples)
        clipped_mean, clipped_std = clipped_stats(sample)
        return {"n_good": self.n_good, "min": self.minimum, "max": self.maximum,
                "mean": float(sample.mean()), "std": float(sample.std()),
                "median": float(np.median(sample)), "mad_std": float(mad_std(sample)),
                "clipped_mean": clipped_mean, "clipped_std": clipped_std,
                "n_sampled": int(sample.size),
                "pixel_noise": self._pixel_noise(),
                "noise_correlation": self.correlation.summary()}

    def _pixel_noise(self):
        """The pixels' noise σ from neighbour differences, ``mad_std(diff) / √2`` (a sky
        gradient does not count; noise correlated between neighbours, ρ, makes it
        √(1 - ρ) small); None without any pair."""
        from astropy.stats import mad_std

        if not self.steps or not sum(step.size for step in self.steps):
            return None
        return float(mad_std(np.concatenate(self.steps)) / np.sqrt(2.0))


def _create_store(tmp, n_bands, grid, with_weight):
    """An incomplete mosaic store's group and empty arrays; the arrays by name."""
    import zarr

    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    group.attrs["astrodask"] = {"kind": STORE_KIND, "format": STORE_FORMAT, "complete": False}
    return _create_arrays(group, n_bands, grid, with_weight)


def _blocks(grid, block_tiles):
    """``(iy, ix0, ix1)`` of each block of windows a store is written in, in order."""
    ny, nx = grid.shape
    return [(iy, ix0, min(ix0 + block_tiles, nx))
            for iy in range(ny) for ix0 in range(0, nx, block_tiles)]


def _new_stats(grid, n_bands):
    """Empty :class:`_BandStats` of each band, sampled on the mosaic's lattice."""
    return [_BandStats(sample_step(grid.height, grid.width, STAT_SAMPLES))
            for _ in range(n_bands)]


def _block_stats(arrays, images, weight_images, grid, block):
    """Write one block; its statistics, one :class:`_BandStats` per band."""
    stats = _new_stats(grid, len(images))
    _write_block(arrays, images, weight_images, grid, *block, stats)
    return stats


def _combined_stats(parts, grid):
    """Each band's statistics summary from its blocks' (``parts``, in block order)."""
    totals = _new_stats(grid, len(parts[0]))
    for part in parts:
        for total, stats in zip(totals, part):
            total.extend(stats)
    return [total.summary() for total in totals]


def _write_store(tmp, images, weight_images, grid, block_tiles, progress):
    # Statistics are kept per block and combined in block order, as when the
    # blocks are tasks on a cluster (derive_mosaic): the same sums either way.
    arrays = _create_store(tmp, len(images), grid, bool(weight_images))
    blocks = _blocks(grid, block_tiles)
    parts = []
    for done, block in enumerate(blocks, start=1):
        parts.append(_block_stats(arrays, images, weight_images, grid, block))
        if progress is not None:
            progress(done, len(blocks))
    return _combined_stats(parts, grid)


def _write_block(arrays, images, weight_images, grid, iy, ix0, ix1, stats):
    """Read the pixels under windows ``(iy, ix0..ix1-1)`` and write image, mask and tiles."""
    t, core, halo = grid.tile, grid.core, grid.halo
    # The block's window span in mosaic coordinates, and its part inside the mosaic.
    wy0 = iy * core - halo
    wx0 = ix0 * core - halo
    span_y, span_x = t, (ix1 - ix0 - 1) * core + t
    ry = slice(max(wy0, 0), min(wy0 + span_y, grid.height))
    rx = slice(max(wx0, 0), min(wx0 + span_x, grid.width))
    n_bands = len(images)
    values = np.zeros((n_bands, span_y, span_x), dtype=np.float32)
    flags = np.full((n_bands, span_y, span_x), PADDING, dtype=np.uint8)
    inner = (slice(ry.start - wy0, ry.stop - wy0), slice(rx.start - wx0, rx.stop - wx0))
    weight = np.zeros_like(values) if weight_images else None
    for b, image in enumerate(images):
        v, f = image.read(ry, rx)
        if weight_images:
            w, _ = weight_images[b].read(ry, rx)
            f[~(w > 0)] |= ZERO_WEIGHT  # catches zero, negative and NaN weights
            weight[b][inner] = np.nan_to_num(w, nan=0.0)
        values[b][inner] = v
        flags[b][inner] = f

    # Cores of this block: written to the full-mosaic arrays (whole chunks only).
    cy = slice(halo, halo + min(core, grid.height - iy * core))
    cx = slice(halo, halo + min((ix1 - ix0) * core, grid.width - ix0 * core))
    target = (slice(None), slice(iy * core, iy * core + cy.stop - cy.start),
              slice(ix0 * core, ix0 * core + cx.stop - cx.start))
    arrays["image"][target] = values[:, cy, cx]
    arrays["mask"][target] = flags[:, cy, cx]
    if weight is not None:
        arrays["weight"][target] = weight[:, cy, cx]
    correlation_step = core_step(grid.shape)
    for b, band_stats in enumerate(stats):
        good = flags[b, cy, cx] == 0
        band_stats.add(values[b, cy, cx], good, target[1].start, target[2].start)
        band_stats.add_cores(values[b, cy, cx], good,
                             weight[b, cy, cx] if weight is not None else None,
                             grid, iy, ix0, correlation_step)

    # Windows: model input with 0 wherever a pixel is flagged.
    tiles_values = np.where(flags == 0, values, np.float32(0.0))
    n = ix1 - ix0
    windows = np.empty((n, n_bands, t, t), dtype=np.float32)
    window_flags = np.empty((n, n_bands, t, t), dtype=np.uint8)
    for k in range(n):
        xs = slice(k * core, k * core + t)
        windows[k] = tiles_values[:, :, xs]
        window_flags[k] = flags[:, :, xs]
    arrays["tiles"][iy, ix0:ix1] = windows
    arrays["tile_mask"][iy, ix0:ix1] = window_flags


def _check_bands_not_empty(stats, band_names, images):
    for band, image, s in zip(band_names, images, stats):
        if s["n_good"] == 0:
            raise InputError(f"band {band} ({image.name}) has no valid pixels "
                             "(all NaN, BLANK or zero weight)")
        if s["min"] == s["max"]:
            raise InputError(f"band {band} ({image.name}) is empty: every valid pixel "
                             f"equals {s['min']:g}")


#: A band whose sky level (median of its pixel sample) lies this many noise σ from zero
#: was most likely not sky-subtracted: ingest warns. Sky-subtracted fields sit within a
#: few tenths of σ (faint sources lift the median).
SKY_WARNING_SIGMA = 3.0


def _warn_of_unsubtracted_sky(stats, band_names):
    # the noise from neighbour differences: a tilted sky would inflate the sample's spread
    noise = [s["pixel_noise"] or s["mad_std"] for s in stats]
    high = [f"{band} {s['median'] / sigma:+.0f}σ"
            for band, s, sigma in zip(band_names, stats, noise)
            if sigma > 0 and abs(s["median"]) > SKY_WARNING_SIGMA * sigma]
    if high:
        warnings.warn(f"the sky of band(s) {', '.join(high)} lies far from zero: fluxes are "
                      "measured on the pixels as given; if the sky was not subtracted, ingest "
                      "again with a background mesh (astrodask ingest --background 128)",
                      AstrodaskWarning, stacklevel=3)


def _background_record(subtracted, band_names):
    """The ``background`` attribute: None (``subtracted`` None), or the mesh and each band's
    range of levels (``subtracted``: the bands' :class:`BackgroundSubtracted`)."""
    if subtracted is None:
        return None
    return {"mesh": subtracted[0].mesh, "filter_size": subtracted[0].filter_size,
            "method": "SExtractor-like mesh map: clipped mode per mesh with the sources "
                      "masked, median-filtered about the grid's best plane, bicubic spline "
                      "(astrodask.background)",
            "levels": {b: {"min": float(s.levels.min()), "median": float(np.median(s.levels)),
                           "max": float(s.levels.max())}
                       for b, s in zip(band_names, subtracted)}}


def _file_record(image):
    return {"name": image.name, "path": str(image.path.resolve()), "hdu": image.hdu_index,
            "size": image.path.stat().st_size, "sha256": file_sha256(image.path)}


def _attributes(band_names, grid, header, wcs, images, weight_images, stats):
    pixel_scale = _pixel_scale(wcs)
    zeropoints = [ab_zeropoint(i.header) for i in images]
    return {
        "kind": STORE_KIND,
        "format": STORE_FORMAT,
        "complete": True,
        "bands": list(band_names),
        "shape": [len(band_names), grid.height, grid.width],
        "tile_grid": grid.to_dict(),
        "tile": grid.tile,
        "halo": grid.halo,
        "core": grid.core,
        "pixel_scale_arcsec": pixel_scale,
        "has_wcs": wcs is not None,
        # 80-character cards keep duplicate COMMENT/HISTORY cards that a dict would lose.
        "wcs_header": [card.image for card in header.cards],
        "mask_bits": dict(MASK_BITS),
        "band_stats": dict(zip(band_names, stats)),
        # AB zero points and units per band, where the files state them (MAGZERO,
        # PHOTFLAM/PHOTPLAM, or a flux-density BUNIT: astrodask.zeropoints).
        "zeropoints": {b: zeropoint for b, (zeropoint, _) in zip(band_names, zeropoints)},
        "zeropoint_sources": {b: source for b, (_, source) in zip(band_names, zeropoints)},
        "bunit": {b: (str(i.header["BUNIT"]).strip() if "BUNIT" in i.header else None)
                  for b, i in zip(band_names, images)},
        "inputs": [_file_record(i) for i in images],
        "weights": [_file_record(i) for i in weight_images],
        "astrodask_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _saturation_levels(images, band_names, given):
    """The ``saturation`` and ``saturation_source`` attributes (:func:`ingest`'s ``saturation``)."""
    given = dict(given or {})
    bad = {band: level for band, level in given.items() if not level > 0}
    if bad:
        raise InputError("a saturation level must be positive, got "
                         + ", ".join(f"{band}={level:g}" for band, level in bad.items()))
    unknown = sorted(set(given) - set(band_names) - {"*"})
    if unknown:
        raise InputError(f"--saturation names band(s) {', '.join(unknown)}, which the mosaic "
                         f"lacks (bands: {','.join(band_names)})")
    levels, sources = {}, {}
    for band, image in zip(band_names, images):
        level = given.get(band, given.get("*"))
        source = "given" if level is not None else "SATURATE"
        if level is None and not isinstance(image, RescaledImage):
            level = _float_or_none(image.header.get("SATURATE"))
        if level is None or isinstance(image, RescaledImage):  # resampling smooths a plateau
            levels[band], sources[band] = None, None
            continue
        if isinstance(image, BackgroundSubtracted):
            level -= image.highest()
            source += " less the highest background"
        levels[band], sources[band] = float(level), source
    return {"saturation": levels, "saturation_source": sources}


def _float_or_none(value):
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _mark_complete(location, attrs):
    """Write the store's attributes (``complete: True``): the last write of an ingest."""
    import zarr

    zarr.open_group(location, mode="r+").attrs["astrodask"] = attrs
