"""How a band's sky noise correlates between neighbouring pixels, and what that does to flux errors.

A resampled coadd (Lanczos, drizzle) correlates each pixel's noise with its
neighbours': the flux summed over a segment of ``A`` pixels then varies by
more than ``σ √A``. On the ``decam`` simulations (neighbour correlation
0.23) a flux error that treats the pixels as independent is 1.2-1.5 times
too small for typical segments.

- At ingest, :class:`NoiseCorrelation` measures the correlation coefficient
  ``ρ`` of each band's sky pixels at the lags of :data:`LAGS` (up to 2 px),
  on a lattice of window cores (:func:`core_step`), with sources masked
  (:func:`sky_pixels`); the summary goes into the band's ``band_stats`` as
  ``noise_correlation``.
- At merge, :func:`segment_pair_counts` counts, per object and lag, the pixel
  pairs of its segment at that lag, and :func:`variance_factor` turns them
  into the factor between the variance of the summed flux and the sum of
  the pixel variances: ``1 + 2 Σ_d ρ_d N_d / A`` (each pair at lag ``d`` or
  ``-d`` counted once, hence the 2).

Lags beyond 2 px are left out (a Lanczos-3 or drizzle kernel correlates the
noise of pixels 1 and 2 apart; the correlation at 2 px is already ~0.01 on
``decam``); the covariance at :data:`FAR_LAGS` (8 px) is subtracted as the
floor that faint undetected sources and sky structure leave at every lag.
"""

import numpy as np

#: Lags ``(dy, dx)`` of one half-plane within 2 px: each unordered pixel pair once.
LAGS = ((0, 1), (0, 2), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2),
        (2, -2), (2, -1), (2, 0), (2, 1), (2, 2))
#: Lags far beyond the correlation of resampling kernels: the covariance floor.
FAR_LAGS = ((0, 8), (8, 0))
#: A core's pixels are sources where its 5x5 mean exceeds the mean's median by this
#: many of the mean's robust σ (grown by :data:`SOURCE_GROW` px). Between the two
#: thresholds tried on the ``decam`` test fields against the simulator's noise: 2.0
#: put the large-segment variance factor 13% under to 5% over the true one
#: (standard, crowded, large), 3.0 0% to 20% over (faint sources left in).
SOURCE_THRESHOLD = 2.5
SOURCE_GROW = 4
#: Fewer sky pixels than this in all cores together: no measurement (ρ = 0).
MIN_PIXELS = 10_000
#: Cores measured per band at most (~0.1 s each; one core's ~10^5 sky pixels
#: already give ρ to ~0.003).
MAX_CORES = 32


def core_step(shape):
    """Measure the cores whose row and column indices are multiples of this.

    Parameters
    ----------
    shape : tuple of int
        Windows (cores) of the mosaic, ``(rows, columns)``.

    Returns
    -------
    int
        The smallest step that leaves at most about :data:`MAX_CORES` cores
        (a fixed lattice: the same cores whatever the ingest's block size).
    """
    return max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / MAX_CORES))))


def _pairs(shape, dy, dx):
    """Slices ``a``, ``b`` of an array of ``shape`` such that ``b`` is ``a`` shifted by (dy, dx).

    Both empty where the array is no larger than the lag (a sliver at the
    mosaic's edge).
    """
    height, width = shape
    rows, columns = max(height - dy, 0), max(width - abs(dx), 0)
    a = (slice(0, rows), slice(max(0, -dx), max(0, -dx) + columns))
    b = (slice(dy, dy + rows), slice(max(dx, 0), max(dx, 0) + columns))
    return a, b


def sky_pixels(values, good):
    """Pixels of one core that hold only sky: good, off sources, not extreme.

    Parameters
    ----------
    values : ndarray of float, shape (h, w)
    good : ndarray of bool, shape (h, w)
        Pixels with data.

    Returns
    -------
    ndarray of bool, shape (h, w)
    """
    from astropy.stats import mad_std
    from scipy import ndimage

    if good.sum() < 100:
        return np.zeros_like(good)
    level = np.median(values[good])
    sigma = mad_std(values[good])
    smooth = ndimage.uniform_filter(np.where(good, values, level).astype(np.float64), 5)
    smooth_level = np.median(smooth[good])
    smooth_sigma = mad_std(smooth[good])
    sources = ndimage.binary_dilation(smooth - smooth_level > SOURCE_THRESHOLD * smooth_sigma,
                                      iterations=SOURCE_GROW)
    return good & ~sources & (np.abs(values - level) < 5.0 * sigma)


class NoiseCorrelation:
    """Pooled sky covariances of one band at :data:`LAGS`, core by core.

    Each core is centred on its own mean sky, so a sky level that drifts
    across the mosaic does not count as correlation.
    """

    def __init__(self):
        # Each core's sums, in the order added: totals summed from them in that
        # order do not depend on how cores were grouped (blocks, tasks).
        self.cores = []

    def add(self, values, good):
        """Add one core's pixels (``good``: pixels with data; weight-scaled if weighted)."""
        sky = sky_pixels(values, good)
        if sky.sum() < 100:
            return
        centred = np.where(sky, values - values[sky].mean(), 0.0)
        lags = ((0, 0),) + LAGS + FAR_LAGS
        products, counts = np.zeros(len(lags)), np.zeros(len(lags))
        for k, (dy, dx) in enumerate(lags):
            a, b = _pairs(centred.shape, dy, dx)
            both = sky[a] & sky[b]
            products[k] = float((centred[a] * centred[b])[both].sum())
            counts[k] = float(both.sum())
        self.cores.append((products, counts))

    def extend(self, other):
        """Add the cores of ``other`` after this one's."""
        self.cores.extend(other.cores)

    def totals(self):
        """``(products, counts)`` summed over the cores, one per lag (lag 0 first)."""
        products = np.zeros(len(LAGS) + len(FAR_LAGS) + 1)
        counts = np.zeros_like(products)
        for core_products, core_counts in self.cores:
            products += core_products
            counts += core_counts
        return products, counts

    def summary(self):
        """``{"lags": [[dy, dx], ...], "rho": [...], "n_pixels": n}``; ρ all 0 when the
        band had fewer than :data:`MIN_PIXELS` sky pixels."""
        rho = np.zeros(len(LAGS))
        products, counts = self.totals()
        if counts[0] >= MIN_PIXELS and np.all(counts > 0):
            covariance = products / counts
            floor = covariance[1 + len(LAGS):].mean()
            variance = covariance[0] - floor
            if variance > 0:
                rho = (covariance[1:1 + len(LAGS)] - floor) / variance
        return {"lags": [list(lag) for lag in LAGS], "rho": [round(float(r), 6) for r in rho],
                "n_pixels": int(counts[0])}


def segment_pair_counts(labels, inverse, n):
    """Per object and lag, the pairs of its pixels at that lag (within this chunk).

    Parameters
    ----------
    labels : ndarray of int, shape (h, w)
        Object IDs (0 = none).
    inverse : ndarray of int, shape (h, w)
        Each pixel's index into the chunk's sorted unique IDs (``np.unique``).
    n : int
        Number of unique IDs (0 included).

    Returns
    -------
    ndarray of float, shape (n, len(LAGS))
        Pairs that straddle the chunk's edge are not counted: for an object
        cut by a chunk edge the variance factor comes out a little low.
    """
    counts = np.zeros((n, len(LAGS)))
    for k, (dy, dx) in enumerate(LAGS):
        a, b = _pairs(labels.shape, dy, dx)
        same = (labels[a] == labels[b]) & (labels[a] > 0)
        counts[:, k] = np.bincount(inverse[a][same], minlength=n)
    return counts


def variance_factor(pairs, area, rho):
    """Variance of a segment's summed noise over the sum of its pixel variances.

    Parameters
    ----------
    pairs : ndarray, shape (n, len(LAGS))
        :func:`segment_pair_counts` summed over the chunks.
    area : ndarray, shape (n,)
    rho : sequence of float, shape (len(LAGS),) or None
        The band's correlation coefficients (``noise_correlation["rho"]``);
        None: independent pixels (factor 1).

    Returns
    -------
    ndarray, shape (n,)
        At least 0 (an estimate of ρ cannot make a variance negative).
    """
    area = np.asarray(area, dtype=np.float64)
    if rho is None:
        return np.ones(area.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = 1.0 + 2.0 * (np.asarray(pairs) @ np.asarray(rho, dtype=np.float64)) / area
    return np.where(area > 0, np.maximum(factor, 0.0), 1.0)
