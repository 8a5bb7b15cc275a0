"""The sky background of a band that was not subtracted, taken off at ingest.

astrodask measures fluxes on the pixels as stored: the isophotal flux is the
sum over a segment and the Kron flux takes a local background only where a
neighbour is in the aperture. That is right for the sky-subtracted images
survey coadds are (SDSS frames, DECaLS, HSC, HST drizzles), and wrong by the
sky times the area for a raw image with a sky pedestal or gradient.
:class:`BackgroundSubtracted` removes such a sky as SExtractor's background
map does (``BACK_SIZE``, ``BACK_FILTERSIZE``):

1. the band is cut into meshes of ``mesh`` x ``mesh`` pixels, read one row
   of meshes at a time (memory: ``mesh`` rows of the band);
2. each mesh's level is the mode estimate ``2.5 median - 1.5 mean`` of its
   3σ-clipped unflagged pixels (the median where the two differ by more
   than 0.3σ: a source fills the mesh), measured again with the sources
   left out (the row smoothed by a Gaussian of 1 px above the first level
   by a pixel σ, about 3.5σ of the smoothed noise, grown by 3 px); a mesh
   with under a quarter of its pixels usable takes the mean of its
   neighbours' levels;
3. the mesh grid is median-filtered over ``filter_size`` x ``filter_size``
   meshes (a bright star's mesh is no sky), about the grid's best plane so
   that a gradient stays straight at the grid's border;
4. the background at a pixel is the bicubic spline through the mesh
   centres, the grid first grown by one mesh on each side by linear
   extrapolation (so the band's edges are interpolated, not extrapolated),
   read section by section as the ingest writes.

Pixel coordinates are 0-based.
"""

import numpy as np

from .errors import InputError

#: Default mesh side (px) and median filter (meshes), SExtractor's 64 and 3 for
#: its own pixels; meshes of 128 px keep the wings of galaxies up to ~20 px
#: across out of the sky at the 0.26"/px of the ``decam`` preset.
DEFAULT_MESH = 128
DEFAULT_FILTER = 3
#: Clipping (σ) of a mesh's pixels.
CLIP_SIGMA = 3.0


def check_mesh(mesh):
    """``mesh`` as an int >= 8, or a one-line :class:`~astrodask.errors.InputError`."""
    try:
        value = int(mesh)
    except (TypeError, ValueError):
        raise InputError(f"the background mesh must be a number of pixels, got {mesh!r}") \
            from None
    if value != mesh or value < 8:
        raise InputError(f"the background mesh must be a whole number of pixels >= 8, "
                         f"got {mesh!r}")
    return value


def mesh_levels(image, mesh, filter_size=DEFAULT_FILTER):
    """The filtered mesh grid of a band's sky levels (step 1-3 of the module docstring).

    Parameters
    ----------
    image : object
        ``shape`` (height, width) and ``read(ys, xs) -> (values, flags)``.
    mesh : int
    filter_size : int

    Returns
    -------
    ndarray, shape (ceil(height / mesh), ceil(width / mesh))
    """
    import warnings

    from astropy.stats import sigma_clipped_stats
    from astropy.utils.exceptions import AstropyUserWarning
    from scipy import ndimage

    height, width = image.shape
    ny, nx = -(-height // mesh), -(-width // mesh)
    levels = np.full((ny, nx), np.nan)
    for j in range(ny):
        y0, y1 = j * mesh, min((j + 1) * mesh, height)
        values, flags = image.read(slice(y0, y1), slice(0, width))
        values = np.where((flags == 0) & np.isfinite(values), values, np.nan)
        padded = np.full((mesh, nx * mesh), np.nan)
        padded[:y1 - y0, :width] = values
        enough = np.zeros(nx, dtype=bool)
        for masked in (False, True):
            cells = padded.reshape(mesh, nx, mesh).transpose(1, 0, 2).reshape(nx, -1)
            usable = np.isfinite(cells).sum(axis=1)
            enough = usable >= 0.25 * (y1 - y0) * np.minimum(mesh, width - np.arange(nx) * mesh)
            if not enough.any():
                break
            with warnings.catch_warnings():  # the NaN of flags, padding and masks
                warnings.simplefilter("ignore", AstropyUserWarning)
                mean, median, std = sigma_clipped_stats(cells[enough], sigma=CLIP_SIGMA,
                                                        maxiters=10, axis=1)
            if not masked:
                # again with the sources' light left out, so that faint wings do not
                # lift the sky (SExtractor's mode alone sits ~0.04 sigma high on a
                # `decam` field)
                padded = _sources_masked(padded, median, std, enough, mesh)
        if enough.any():
            crowded = np.abs(mean - median) > 0.3 * np.where(std > 0, std, np.inf)
            levels[j, enough] = np.where(crowded, median, 2.5 * median - 1.5 * mean)
    if not np.isfinite(levels).any():
        raise InputError("no sky to measure a background on: every mesh is mostly flagged")
    levels = _filled(levels)
    if filter_size > 1:
        # filtered about the grid's best plane: at the grid's border a median over
        # replicated meshes would bend a sky gradient; the plane's residuals are flat
        plane = _plane(levels, mesh_centres(height, mesh), mesh_centres(width, mesh))
        levels = plane + ndimage.median_filter(levels - plane, size=filter_size,
                                               mode="nearest")
    return levels


def mesh_centres(length, mesh):
    """Centres (px) of the meshes along an axis of ``length`` px (the last may be short)."""
    starts = np.arange(0, length, mesh)
    return (starts + np.minimum(starts + mesh, length) - 1) / 2.0


def _plane(levels, rows, cols):
    """The least-squares plane through a grid of levels at mesh centres ``rows`` x ``cols``."""
    j, i = np.meshgrid(rows, cols, indexing="ij")
    design = np.stack([np.ones(levels.size), j.ravel(), i.ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, levels.ravel(), rcond=None)
    return (design @ coefficients).reshape(levels.shape)


#: Source masking of a mesh row: pixels of the row smoothed by a Gaussian of this σ (px)
#: above the mesh's level by ``MASK_SIGMA`` of its pixel σ, grown by ``MASK_GROW`` px.
MASK_SMOOTHING = 1.0
MASK_SIGMA = 1.0
MASK_GROW = 3


def _sources_masked(padded, median, std, measured, mesh):
    """A mesh row with the pixels of sources (and their wings) set to NaN."""
    from scipy import ndimage

    nx = padded.shape[1] // mesh
    level = np.full(nx, np.inf)
    spread = np.zeros(nx)
    level[measured], spread[measured] = median, std
    finite = np.isfinite(padded)
    smooth = ndimage.gaussian_filter(np.where(finite, padded, np.repeat(
        np.where(np.isfinite(level), level, 0.0), mesh)[None, :]), MASK_SMOOTHING)
    above = smooth > np.repeat(level + MASK_SIGMA * spread, mesh)[None, :]
    return np.where(ndimage.binary_dilation(above, iterations=MASK_GROW), np.nan, padded)


def _filled(levels):
    """Meshes without a level take the mean of their measured neighbours', growing out."""
    from scipy import ndimage

    levels = levels.copy()
    while not np.isfinite(levels).all():
        known = np.isfinite(levels)
        values = np.where(known, levels, 0.0)
        footprint = np.ones((3, 3))
        sums = ndimage.convolve(values, footprint, mode="constant")
        counts = ndimage.convolve(known.astype(float), footprint, mode="constant")
        fill = ~known & (counts > 0)
        levels[fill] = sums[fill] / counts[fill]
    return levels


class BackgroundSubtracted:
    """A band image read less its sky background (module docstring).

    Parameters
    ----------
    image : object
        ``shape``, ``read(ys, xs) -> (values, flags)`` and ``sky_header()``
        (a :class:`~astrodask.fits_input.FitsImage`); other attributes pass
        through.
    mesh, filter_size : int
    """

    def __init__(self, image, mesh=DEFAULT_MESH, filter_size=DEFAULT_FILTER):
        from scipy.interpolate import RectBivariateSpline

        self._image = image
        self.mesh = check_mesh(mesh)
        self.filter_size = filter_size
        self.shape = tuple(image.shape)
        self.levels = mesh_levels(image, self.mesh, filter_size)
        height, width = self.shape
        # the grid grown by one mesh on every side, extrapolated linearly (odd
        # reflection; constant along an axis of one mesh), so that every pixel lies
        # between mesh centres and the spline interpolates, never extrapolates
        grid = self.levels
        centres = []
        for axis, length in enumerate((height, width)):
            n = grid.shape[axis]
            c = mesh_centres(length, self.mesh)
            step = c[1] - c[0] if n > 1 else float(self.mesh)
            centres.append(np.concatenate([[c[0] - step], c,
                                           [c[-1] + (c[-1] - c[-2] if n > 1 else step)]]))
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 1)
            grid = (np.pad(grid, pad, mode="reflect", reflect_type="odd") if n > 1
                    else np.pad(grid, pad, mode="edge"))
        self._spline = RectBivariateSpline(centres[0], centres[1], grid,
                                           kx=min(3, len(centres[0]) - 1),
                                           ky=min(3, len(centres[1]) - 1))

    def __getattr__(self, name):  # name, path, header, sky_header... of the input
        return getattr(self._image, name)

    def background(self, ys, xs):
        """The background over the section ``[ys, xs]`` (0-based slices), float64."""
        rows = np.arange(ys.start, ys.stop, dtype=np.float64)
        cols = np.arange(xs.start, xs.stop, dtype=np.float64)
        return self._spline(rows, cols)

    def highest(self):
        """The highest background subtracted anywhere in the band.

        The map is read every eighth of a mesh (and on the last row and
        column); between mesh centres a bicubic spline through a median-
        filtered grid is smooth on that scale.
        """
        height, width = self.shape
        step = max(self.mesh // 8, 1)
        rows = np.unique(np.append(np.arange(0, height, step), height - 1)).astype(np.float64)
        cols = np.unique(np.append(np.arange(0, width, step), width - 1)).astype(np.float64)
        return float(self._spline(rows, cols).max())

    def read(self, ys, xs):
        """Section ``[ys, xs]`` less the background (flagged pixels stay NaN), and its flags."""
        values, flags = self._image.read(ys, xs)
        height, width = self.shape
        ys = slice(max(ys.start, 0), min(ys.stop, height))
        xs = slice(max(xs.start, 0), min(xs.stop, width))
        return (values - self.background(ys, xs)).astype(np.float32), flags
