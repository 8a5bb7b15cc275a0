"""Input standardisation of Astro R-CNN (Burke et al. 2019, eq. 1).

Each band is z-scored and multiplied by a scale ``A``:
``x' = A (x - mean_b) / std_b``. The statistics are those of the *whole*
mosaic (sigma-clipped, so they describe the sky and its noise rather than the
few bright stars), computed once and handed to every tile, so a tile is
normalised exactly as the whole mosaic would be.
"""

import numpy as np

from ...sky import CLIP_SIGMA, clipped_stats, sample_step, usable_std

#: Pixels used at most for the statistics; larger bands are subsampled on a fixed grid.
MAX_STAT_PIXELS = 4_000_000


def band_statistics(images, mask=None, sigma=CLIP_SIGMA, max_pixels=MAX_STAT_PIXELS):
    """Sigma-clipped mean and standard deviation of each band.

    The statistics of ``astrodask.sky`` (those ingest stores for the
    engine), over the pixels on a regular grid of step
    ``astrodask.sky.sample_step``.

    Parameters
    ----------
    images : array_like, shape (band, y, x)
        The whole mosaic (a NumPy, Zarr or Dask array; read on a regular
        subsampling grid when larger than ``max_pixels`` per band).
    mask : array_like of bool or int, shape (band, y, x), optional
        Non-zero where a pixel is bad; such pixels (and NaNs) are left out.
    sigma : float
        Clipping threshold in standard deviations.

    Returns
    -------
    mean, std : ndarray, shape (band,)
        A band without measurable noise gets std 1 (``astrodask.sky.usable_std``).
    """
    n_bands, height, width = images.shape
    step = sample_step(height, width, max_pixels)
    means, stds = np.zeros(n_bands), np.zeros(n_bands)
    for b in range(n_bands):
        values = np.asarray(images[b, ::step, ::step], dtype=np.float64)
        good = np.isfinite(values)
        if mask is not None:
            good &= np.asarray(mask[b, ::step, ::step]) == 0
        if not good.any():
            raise ValueError(f"band {b} has no valid pixels")
        means[b], stds[b] = clipped_stats(values[good], sigma)
    return means, usable_std(stds)


def normalise_bands(images, mean, std, scale=1.0, channels_last=True):
    """Apply eq. 1 to a tile or batch of tiles.

    Parameters
    ----------
    images : ndarray, shape (..., band, y, x)
        Raw pixel values (band-first, as stored in a mosaic).
    mean, std : array_like, shape (band,)
        Mosaic statistics from :func:`band_statistics`.
    scale : float
        The scale ``A`` of eq. 1.
    channels_last : bool
        Return (..., y, x, band), the layout the model takes.

    Returns
    -------
    ndarray of float32
        Standardised pixels; NaNs become 0 (the sky level).
    """
    images = np.asarray(images, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    out = np.float32(scale) * (images - mean) / std
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    if channels_last:
        out = np.moveaxis(out, -3, -1)
    return np.ascontiguousarray(out, dtype=np.float32)
