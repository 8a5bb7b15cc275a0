"""The sky of a mosaic, as the models and the merge see it.

- :func:`clipped_stats`, :func:`usable_std` and :func:`sample_step`: the one
  definition of a band's sky level and noise (sigma-clipped mean and standard
  deviation of a pixel sample on a regular grid), used by ingest (stored in
  the mosaic attrs, which the engine reads) and by
  :func:`astrodask.band_statistics` (training and evaluation fields).
- :func:`band_levels`: each band's sky level and noise (sigma-clipped mean and
  standard deviation measured at ingest over the whole mosaic).
- :func:`fill_flagged`: what a model sees where a window has no data
  (padding past the mosaic edge, NaN, BLANK, zero weight): sky noise of the
  band's level and sigma, never a flat constant. A flat region is something
  the networks never saw in training, and it blinds a whole window, not only
  itself (FIELD_NOTES: 3 detections with zero padding, 46 with noise).
  Thin flagged features (bad columns, a few pixels wide) are interpolated
  from their neighbours instead, plus the same noise, so that a source they
  cross keeps its profile and its centre.
- :func:`detection_image`: the sum of the bands in units of their noise, the
  one image that decides an object's anchor (its brightest pixel) everywhere:
  in the engine, in the merge and in the Morpheus segments.
"""

import numpy as np

#: Clipping threshold of the sky statistics, in standard deviations.
CLIP_SIGMA = 3.0


def sample_step(height, width, max_pixels):
    """Stride of the regular sampling grid that keeps at most ``max_pixels`` of a band.

    Parameters
    ----------
    height, width : int
        Size of the band.
    max_pixels : int
        Pixels wanted at most.

    Returns
    -------
    int
        Sample the pixels whose row and column are multiples of this.
    """
    return max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))


def clipped_stats(sample, sigma=CLIP_SIGMA):
    """Sigma-clipped mean and standard deviation of a band's pixel sample.

    Parameters
    ----------
    sample : ndarray
        Valid pixel values (no NaN, no flagged pixel).
    sigma : float
        Clipping threshold in standard deviations (at most 10 iterations).

    Returns
    -------
    mean, std : float
        Not yet made usable as a divisor: see :func:`usable_std`.
    """
    from astropy.stats import sigma_clipped_stats

    mean, _, std = sigma_clipped_stats(sample, sigma=sigma, maxiters=10)
    return float(mean), float(std)


def usable_std(std):
    """Noise that can divide: a band without measurable noise (std <= 0) gets 1.

    Parameters
    ----------
    std : array_like
        Standard deviation of each band.

    Returns
    -------
    ndarray
        Same dtype as ``std``.
    """
    std = np.asarray(std)
    return np.where(std > 0, std, np.ones_like(std))


def band_levels(mosaic, bands=None):
    """Sky level and noise of each band of a mosaic.

    Parameters
    ----------
    mosaic : Mosaic
        An open mosaic store (its ``band_stats`` attribute, from ingest).
    bands : sequence of str, optional
        Band names (default all the mosaic's bands, in order).

    Returns
    -------
    mean, std : ndarray of float32, shape (band,)
        Sigma-clipped mean and standard deviation; a band without measurable
        noise (std <= 0) gets std 1 so that dividing by it stays defined.
    """
    stats = mosaic.attrs["band_stats"]
    bands = mosaic.bands if bands is None else bands
    mean = np.array([stats[b]["clipped_mean"] for b in bands], dtype=np.float32)
    std = np.array([stats[b]["clipped_std"] for b in bands], dtype=np.float32)
    return mean, usable_std(std)


#: Flagged features narrower than this (px) are inpainted, wider ones filled with sky noise.
#: 9 (bad columns, satellite trails, narrow chip gaps) rather than 5 (bad columns only):
#: on a validation mosaic crossed by thin flags, purity 0.958 -> 0.968 at the same
#: completeness, 13 loses purity (BENCHMARKS.md, "Thin flagged features").
INPAINT_WIDTH = 9


def fill_flagged(data, flagged, mean, std, seed):
    """Replace flagged pixels by Gaussian sky noise, or interpolate thin flagged features.

    A flagged pixel that an opening by a square of :data:`INPAINT_WIDTH`
    removes (a bad column, a satellite trail, a narrow chip gap) is inpainted from the pixels
    around it (biharmonic, ``skimage.restoration.inpaint_biharmonic``) plus
    sky noise; the rest (padding, stripes, missing chips) takes sky noise
    around the band's level. Chosen on validation mosaics with bad columns
    (BENCHMARKS.md): near flagged pixels, completeness / purity 0.88 / 0.74
    with noise, 0.90 / 0.82 with a Gaussian-weighted interpolation (the
    biharmonic one keeps a peak on the column better).

    Parameters
    ----------
    data : ndarray, shape (band, y, x)
        Pixels of one window (not modified).
    flagged : ndarray of bool, shape (band, y, x)
        True where a pixel has no usable value.
    mean, std : array_like, shape (band,)
        The sky level and noise of each band (:func:`band_levels`).
    seed : sequence of int
        Seeds the noise, e.g. ``(iy, ix)`` of the window: the same window is
        always filled the same way, so runs stay byte-identical.

    Returns
    -------
    ndarray of float32, shape (band, y, x)
        A copy of ``data`` with the flagged pixels filled.
    """
    out = np.array(data, dtype=np.float32, copy=True)
    if not flagged.any():
        return out
    rng = np.random.default_rng([int(s) for s in seed])
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    out[flagged] = (mean + std * noise)[flagged]
    for b in range(out.shape[0]):
        _inpaint_thin(out[b], flagged[b], std[b, 0, 0] * noise[b])
    return out


def square_opening(mask, width):
    """Binary opening of ``mask`` by a ``width`` x ``width`` square (``width`` odd).

    What ``scipy.ndimage.binary_opening`` gives with that structure (outside
    the image counts as unset), as separable minimum and maximum filters:
    several times faster on a window.
    """
    from scipy import ndimage

    eroded = ndimage.minimum_filter(np.asarray(mask, dtype=np.uint8), size=width,
                                    mode="constant", cval=0)
    return ndimage.maximum_filter(eroded, size=width, mode="constant", cval=0).astype(bool)


def _inpaint_thin(band, flagged, noise):
    """Inpaint ``band`` in place over the thin features of ``flagged``, plus ``noise``."""
    from skimage.restoration import inpaint_biharmonic

    if not flagged.any():
        return
    thin = flagged & ~square_opening(flagged, INPAINT_WIDTH)
    if thin.any():
        smooth = inpaint_biharmonic(band.astype(np.float64), thin)
        band[thin] = smooth[thin] + noise[thin]


def detection_image(data, flagged, mean, std):
    """Sum of the bands in units of their sky noise; flagged pixels are ``-inf``.

    Parameters
    ----------
    data : ndarray, shape (band, y, x)
    flagged : ndarray of bool, shape (band, y, x)
        A pixel flagged in any band is left out (``-inf``), so it can never be
        an object's anchor.
    mean, std : array_like, shape (band,)

    Returns
    -------
    ndarray of float32, shape (y, x)
    """
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    with np.errstate(invalid="ignore"):
        image = ((np.asarray(data, dtype=np.float32) - mean) / std).sum(axis=0)
    bad = np.asarray(flagged).any(axis=0) | ~np.isfinite(image)
    return np.where(bad, -np.inf, image).astype(np.float32)


def detection_reader(mosaic):
    """A reader of the mosaic's :func:`detection_image` over any box.

    Returns
    -------
    callable
        ``read(y0, x0, y1, x1) -> ndarray (y1 - y0, x1 - x0)``, mosaic pixels
        (0-based, ends exclusive).
    """
    image, flags = mosaic.array("image"), mosaic.array("mask")
    mean, std = band_levels(mosaic)

    def read(y0, x0, y1, x1):
        return detection_image(image[:, y0:y1, x0:x1], flags[:, y0:y1, x0:x1] != 0, mean, std)

    return read


def saturated_pixels(data, levels):
    """Where any band of a window is saturated.

    Parameters
    ----------
    data : ndarray, shape (band, T, T)
        Raw pixels (NaN where flagged).
    levels : sequence of float or None
        Each band's level (:attr:`astrodask.Mosaic.saturation`); ``None`` for
        a band without one.

    Returns
    -------
    ndarray of bool, shape (T, T), or None
        ``None`` when no band has a level.
    """
    known = [(b, level) for b, level in enumerate(levels) if level is not None]
    if not known:
        return None
    with np.errstate(invalid="ignore"):
        return np.any([data[b] >= level for b, level in known], axis=0)
