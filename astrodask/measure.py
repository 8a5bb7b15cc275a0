"""Per-object measurements, accumulated chunk by chunk over the exclusive label map.

Each chunk of the segmentation map contributes partial sums for the objects
it contains (:func:`chunk_sums`); :class:`Accumulator` adds them up and
:meth:`Accumulator.columns` turns them into catalog columns. An object that
spans several chunks is thus measured exactly, in bounded memory.

Conventions: pixel coordinates are 0-based with pixel centres on integers;
centroids and second-moment shapes are weighted by the positive part of
the detection image (the sum of all bands); fluxes are sums over the
object's exclusive segment in the mosaic's units; AB magnitudes use each
band's MAGZERO.
"""

import numpy as np

from .mosaic import PADDING
from .noise_correlation import LAGS, segment_pair_counts, variance_factor


def chunk_flags(flags, ys, xs):
    """A chunk's mask bits and the pixels that are flagged or touch a flagged pixel.

    One read of the chunk and a 1-pixel border.

    Parameters
    ----------
    flags : array_like of uint8, shape (band, height, width)
        The mosaic's mask (a Zarr array).
    ys, xs : slice
        The chunk.

    Returns
    -------
    bits : ndarray of uint8, shape (band, ys, xs)
        The chunk's mask bits.
    touching : ndarray of bool, shape (ys, xs)
        Flagged or 8-connected to a flagged pixel; padding (outside the
        mosaic) does not count as flagged.
    """
    from scipy import ndimage

    _, height, width = flags.shape
    y0, x0 = max(ys.start - 1, 0), max(xs.start - 1, 0)
    y1, x1 = min(ys.stop + 1, height), min(xs.stop + 1, width)
    block = np.asarray(flags[:, y0:y1, x0:x1])
    inner = (slice(None), slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    bad = (block & ~np.uint8(PADDING)).any(axis=0)
    grown = ndimage.binary_dilation(bad, structure=np.ones((3, 3), bool))
    return block[inner], grown[inner[1:]]


#: Half-width (px) of the box around an object's anchor over which its peak
#: position is the flux-weighted centroid (a 5x5 box: about the `hst` PSF's
#: core; :func:`chunk_sums`' ``anchors``).
PEAK_RADIUS = 2


#: Reach of :func:`smoothed_detection`'s Gaussian, in σ.
SMOOTH_TRUNCATE = 4.0


def smoothing_margin(sigma):
    """Pixels around a chunk that :func:`smoothed_detection` reads for a Gaussian of ``sigma``."""
    return int(SMOOTH_TRUNCATE * sigma + 0.5) + 1


def measure_margin(sigma=None):
    """Pixels around a chunk that :func:`measure_chunk` reads of ``image`` and ``flags``."""
    return max(smoothing_margin(sigma) if sigma else 0, 1)


def measure_chunk(labels, ys, xs, image, flags, weight=None, classes=None, saturation=None,
                  anchors=None, sigma=None):
    """:func:`chunk_sums` of a painted chunk, read from the mosaic's arrays.

    Parameters
    ----------
    labels : ndarray of int, shape (ys, xs)
        The chunk's object labels.
    ys, xs : slice
        The chunk, in 0-based mosaic pixels.
    image, flags : array_like, shape (band, height, width)
        The mosaic's ``image`` and ``mask``: Zarr arrays, or
        :class:`astrodask.mosaic.Block` reads of them reaching
        :func:`measure_margin` pixels around the chunk.
    weight, classes : array_like, shape (band or class, height, width), optional
        Inverse-variance weights, U-Net class probabilities (the chunk is read).
    saturation, anchors
        As for :func:`chunk_sums`.
    sigma : float, optional
        Also the moments over the detection image smoothed by this Gaussian
        (:func:`smoothed_detection`).

    Returns
    -------
    dict
        :func:`chunk_sums`' sums.
    """
    bits, touching = chunk_flags(flags, ys, xs)
    return chunk_sums(labels, ys.start, xs.start, image[:, ys, xs], bits,
                      None if weight is None else weight[:, ys, xs],
                      None if classes is None else classes[:, ys, xs],
                      touching=touching, saturation=saturation, anchors=anchors,
                      smooth=smoothed_detection(image, flags, ys, xs, sigma) if sigma else None)


def smoothed_detection(image, flags, ys, xs, sigma):
    """The positive part of the detection image smoothed by a Gaussian of ``sigma`` px, on a chunk.

    The detection image is the sum of the bands' unflagged pixels (0 where
    flagged). It is read with a margin of the filter's reach (clipped at the
    mosaic's edges, where the filter reflects), so a pixel's value does not
    depend on the chunk it is computed in.

    Parameters
    ----------
    image, flags : array_like, shape (band, height, width)
        The mosaic's ``image`` and ``mask`` (Zarr arrays).
    ys, xs : slice
        The chunk.
    sigma : float

    Returns
    -------
    ndarray of float64, shape (ys, xs)
    """
    from scipy import ndimage

    _, height, width = image.shape
    margin = smoothing_margin(sigma)
    y0, x0 = max(ys.start - margin, 0), max(xs.start - margin, 0)
    y1, x1 = min(ys.stop + margin, height), min(xs.stop + margin, width)
    values = np.asarray(image[:, y0:y1, x0:x1], dtype=np.float64)
    good = np.isfinite(values) & (np.asarray(flags[:, y0:y1, x0:x1]) == 0)
    smooth = ndimage.gaussian_filter(np.where(good, values, 0.0).sum(axis=0), sigma,
                                     truncate=SMOOTH_TRUNCATE)
    return np.clip(smooth[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0], 0.0, None)


def chunk_sums(labels, y0, x0, image, flags, weight=None, classes=None, touching=None,
               saturation=None, anchors=None, smooth=None):
    """Partial sums of every object in one chunk.

    Parameters
    ----------
    labels : ndarray of int, shape (h, w)
        Exclusive object IDs (0 = none) of the chunk.
    y0, x0 : int
        Mosaic coordinates of ``labels[0, 0]``.
    image : ndarray, shape (band, h, w)
        Pixels (NaN where bad).
    flags : ndarray of uint8, shape (band, h, w)
        Mask bits of the mosaic.
    weight : ndarray, shape (band, h, w), optional
        Inverse-variance weights.
    classes : ndarray, shape (class, h, w), optional
        U-Net class probabilities.
    touching : ndarray of bool, shape (h, w), optional
        Pixels that are flagged or touch a flagged pixel (:func:`chunk_flags`);
        ``flagged`` then counts an object's pixels there, so an object whose
        mask stops beside a masked column is flagged too. Default: the
        object's flagged pixels only.
    saturation : sequence of float or None, optional
        Each band's saturation level (:attr:`astrodask.Mosaic.saturation`);
        ``saturated`` then counts an object's pixels at or above it in any band.
    anchors : tuple of ndarray, optional
        ``(ids, anchor_y, anchor_x)`` of (at least) the objects in the chunk,
        mosaic pixels. The sums then hold each object's light-weighted
        moments over its pixels within :data:`PEAK_RADIUS` of its anchor
        (``peak_*``), and ``anchor_inner``, how many of the 3x3 pixels
        centred on the anchor lie in the object's exclusive segment.
    smooth : ndarray, shape (h, w), optional
        :func:`smoothed_detection` of the chunk; the sums then hold each
        object's moments weighted by it (``smooth_*``).

    Returns
    -------
    dict of ndarray
        ``id`` and the sums for those IDs; ``pairs``: each object's pixel pairs
        at the lags of :data:`astrodask.noise_correlation.LAGS` (for flux
        errors under correlated noise).
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    inside = ids > 0
    n = len(ids)

    def total(values):
        return np.bincount(inverse.ravel(), weights=np.ravel(values), minlength=n)[inside]

    good = np.isfinite(image) & (flags == 0)
    values = np.where(good, image, 0.0)
    detection = np.clip(values.sum(axis=0), 0.0, None)
    yy, xx = np.mgrid[y0:y0 + labels.shape[0], x0:x0 + labels.shape[1]]
    sums = {
        "id": ids[inside].astype(np.int64),
        "area": total(np.ones(labels.shape)),
        "flux": np.stack([total(v) for v in values], axis=1),
        "sum_f": total(detection),
        "sum_fy": total(detection * yy),
        "sum_fx": total(detection * xx),
        "sum_fyy": total(detection * yy * yy),
        "sum_fxx": total(detection * xx * xx),
        "sum_fxy": total(detection * xx * yy),
        "sum_y": total(yy),
        "sum_x": total(xx),
        "flagged": total((flags & ~np.uint8(PADDING)).any(axis=0) if touching is None
                         else touching),
        "pairs": segment_pair_counts(labels, inverse, n)[inside],
    }
    if anchors is not None:
        sums.update(_peak_sums(ids, inverse, total, detection, yy, xx, anchors))
    if smooth is not None:
        sums.update(smooth_f=total(smooth), smooth_fy=total(smooth * yy),
                    smooth_fx=total(smooth * xx))
    if saturation is not None and any(level is not None for level in saturation):
        from .sky import saturated_pixels

        sums["saturated"] = total(saturated_pixels(image, saturation))
    if weight is not None:
        with np.errstate(divide="ignore"):
            variance = np.where(good & (weight > 0), 1.0 / weight, 0.0)
        sums["variance"] = np.stack([total(v) for v in variance], axis=1)
    if classes is not None:
        probabilities = np.nan_to_num(classes, nan=0.0)
        sums["class_f"] = np.stack([total(detection * p) for p in probabilities], axis=1)
        # per-object minimum of the background class (last channel by convention)
        background = np.where(np.isfinite(classes[-1]), classes[-1], np.inf)
        minimum = np.full(n, np.inf)
        np.minimum.at(minimum, inverse.ravel(), background.ravel())
        sums["min_background"] = minimum[inside]
    return sums


def _peak_sums(ids, inverse, total, detection, yy, xx, anchors):
    """:func:`chunk_sums`' ``peak_*`` and ``anchor_inner`` sums (0 for objects without an anchor)."""
    anchor_ids, anchor_y, anchor_x = anchors
    lookup = dict(zip(np.asarray(anchor_ids).tolist(),
                      zip(np.asarray(anchor_y).tolist(), np.asarray(anchor_x).tolist())))
    nowhere = (-(1 << 40), -(1 << 40))
    where = np.array([lookup.get(i, nowhere) for i in ids.tolist()], dtype=np.int64).reshape(-1, 2)
    ay, ax = where[:, 0][inverse], where[:, 1][inverse]
    near = (np.abs(yy - ay) <= PEAK_RADIUS) & (np.abs(xx - ax) <= PEAK_RADIUS)
    light = np.where(near, detection, 0.0)
    return {"peak_f": total(light), "peak_fy": total(light * yy), "peak_fx": total(light * xx),
            "anchor_inner": total((np.abs(yy - ay) <= 1) & (np.abs(xx - ax) <= 1))}


class Accumulator:
    """Adds up :func:`chunk_sums` results for objects ``1..n``."""

    def __init__(self, n, n_bands, n_classes=None, with_weight=False):
        self.n = n
        self.area = np.zeros(n + 1)
        self.flux = np.zeros((n + 1, n_bands))
        self.variance = np.zeros((n + 1, n_bands)) if with_weight else None
        self.sum_f = np.zeros(n + 1)
        self.sum_fy = np.zeros(n + 1)
        self.sum_fx = np.zeros(n + 1)
        self.sum_fyy = np.zeros(n + 1)
        self.sum_fxx = np.zeros(n + 1)
        self.sum_fxy = np.zeros(n + 1)
        self.sum_y = np.zeros(n + 1)
        self.sum_x = np.zeros(n + 1)
        self.flagged = np.zeros(n + 1)
        self.saturated = np.zeros(n + 1)
        self.pairs = np.zeros((n + 1, len(LAGS)))
        self.peak_f = np.zeros(n + 1)
        self.peak_fy = np.zeros(n + 1)
        self.peak_fx = np.zeros(n + 1)
        self.anchor_inner = np.zeros(n + 1)
        self.smooth_f = np.zeros(n + 1)
        self.smooth_fy = np.zeros(n + 1)
        self.smooth_fx = np.zeros(n + 1)
        self.class_f = np.zeros((n + 1, n_classes)) if n_classes else None
        self.min_background = np.full(n + 1, np.inf) if n_classes else None

    def add(self, sums):
        """Add one chunk's sums."""
        ids = sums["id"]
        for name in ("area", "flux", "sum_f", "sum_fy", "sum_fx", "sum_fyy", "sum_fxx",
                     "sum_fxy", "sum_y", "sum_x", "flagged",
                     "saturated", "variance", "class_f", "pairs", "peak_f", "peak_fy",
                     "peak_fx", "anchor_inner", "smooth_f", "smooth_fy", "smooth_fx"):
            target = getattr(self, name)
            if target is not None and name in sums:
                target[ids] += sums[name]
        if self.min_background is not None and "min_background" in sums:
            self.min_background[ids] = np.minimum(self.min_background[ids],
                                                  sums["min_background"])

    def columns(self, bands, noise=None, correlation=None):
        """Measured columns (arrays of length ``n``, object ``k`` at index ``k - 1``).

        ``noise``: per-band pixel noise (σ) used for flux errors when no
        weights were ingested: error = σ √area. ``correlation``: per band,
        the sky noise's correlation coefficients at
        :data:`astrodask.noise_correlation.LAGS` (the ingest's
        ``noise_correlation["rho"]``) or None; each flux variance is then
        multiplied by :func:`astrodask.noise_correlation.variance_factor`.
        """
        area = self.area[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            weighted = self.sum_f[1:] > 0
            y = np.where(weighted, self.sum_fy[1:] / self.sum_f[1:], self.sum_y[1:] / area)
            x = np.where(weighted, self.sum_fx[1:] / self.sum_f[1:], self.sum_x[1:] / area)
            # a peak only where the anchor lies inside the object's segment, not on its
            # edge (there the brightest pixel may be the wing of a brighter neighbour)
            peaked = (self.anchor_inner[1:] == 9) & (self.peak_f[1:] > 0)
            y_peak = np.where(peaked, self.peak_fy[1:] / self.peak_f[1:], np.nan)
            x_peak = np.where(peaked, self.peak_fx[1:] / self.peak_f[1:], np.nan)
            # the centroid weighted by the smoothed detection image, where it was summed
            smoothed = self.smooth_f[1:] > 0
            y_smooth = np.where(smoothed, self.smooth_fy[1:] / self.smooth_f[1:], np.nan)
            x_smooth = np.where(smoothed, self.smooth_fx[1:] / self.smooth_f[1:], np.nan)
        a_image, b_image, theta_image = self._ellipse(x, y)
        out = {"x": x, "y": y, "x_peak": x_peak, "y_peak": y_peak,
               "a_image": a_image, "b_image": b_image, "theta_image": theta_image,
               "x_smooth": x_smooth, "y_smooth": y_smooth,
               "area": area.astype(np.int64),
               "masked_pixels": self.flagged[1:].astype(np.int64),
               "saturated_pixels": self.saturated[1:].astype(np.int64)}
        correlation = correlation or [None] * len(bands)
        for b, band in enumerate(bands):
            out[f"flux_{band}"] = self.flux[1:, b]
            factor = variance_factor(self.pairs[1:], area, correlation[b])
            if self.variance is not None:
                out[f"flux_err_{band}"] = np.sqrt(self.variance[1:, b] * factor)
            elif noise is not None:
                out[f"flux_err_{band}"] = noise[b] * np.sqrt(area * factor)
        if self.class_f is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                out["class_probabilities"] = self.class_f[1:] / self.sum_f[1:, None]
            out["min_background"] = np.where(np.isfinite(self.min_background[1:]),
                                             self.min_background[1:], np.nan)
        return out

    def _ellipse(self, x, y):
        """Semi-axes (px) and angle (deg) of each object's flux-weighted second moments.

        As SExtractor's ``A_IMAGE``, ``B_IMAGE``, ``THETA_IMAGE``: the RMS
        extent along the major and minor axes of the detection image's
        positive light over the exclusive segment, and the major axis's
        angle counter-clockwise from +x, in (-90, 90]. NaN for an object
        without positive light.
        """
        f = self.sum_f[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            cyy = np.where(f > 0, self.sum_fyy[1:] / f - y * y, np.nan)
            cxx = np.where(f > 0, self.sum_fxx[1:] / f - x * x, np.nan)
            cxy = np.where(f > 0, self.sum_fxy[1:] / f - x * y, np.nan)
        # rounding of the raw sums may leave a one-pixel object slightly negative
        cyy, cxx = np.clip(cyy, 0.0, None), np.clip(cxx, 0.0, None)
        mean = (cxx + cyy) / 2
        spread = np.hypot((cxx - cyy) / 2, cxy)
        theta = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))
        theta = np.where(theta <= -90.0, theta + 180.0, theta)
        return (np.sqrt(mean + spread), np.sqrt(np.clip(mean - spread, 0.0, None)), theta)


def measurement_noise(mosaic):
    """What flux errors rest on: ``(noise, correlation)`` for :meth:`Accumulator.columns`.

    ``noise`` is each band's pixel σ (the ingest's ``mad_std``), or None where
    the mosaic has weight maps; ``correlation`` each band's sky-noise
    correlation at :data:`astrodask.noise_correlation.LAGS`, None for stores
    ingested before it was measured (independent pixels).
    """
    stats = mosaic.attrs["band_stats"]
    noise = None if mosaic.has_weight else [stats[b]["mad_std"] for b in mosaic.bands]
    correlation = [(stats[b].get("noise_correlation") or {}).get("rho") for b in mosaic.bands]
    return noise, correlation


def total_snr(measured, bands):
    """S/N over all bands, ``sum(flux) / sqrt(sum(flux_err**2))``; NaN without an error."""
    flux = sum(np.asarray(measured[f"flux_{b}"], dtype=np.float64) for b in bands)
    error = np.sqrt(sum(np.asarray(measured[f"flux_err_{b}"], dtype=np.float64) ** 2
                        for b in bands))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error > 0, flux / error, np.nan)


def ab_magnitude(flux, zeropoint):
    """AB magnitude ``zp − 2.5 log10(flux)``; NaN for non-positive flux or no zero point."""
    flux = np.asarray(flux, dtype=np.float64)
    if zeropoint is None:
        return np.full(flux.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)


def ab_magnitude_error(flux, flux_err, zeropoint):
    """Error of :func:`ab_magnitude` from the flux's, ``2.5 / ln 10 · flux_err / flux``
    (SExtractor's ``MAGERR``); NaN where the magnitude is NaN or the error unknown."""
    flux = np.asarray(flux, dtype=np.float64)
    flux_err = np.asarray(flux_err, dtype=np.float64)
    if zeropoint is None:
        return np.full(flux.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, 2.5 / np.log(10.0) * flux_err / flux, np.nan)


def sky_coordinates(wcs, x, y):
    """RA, Dec in degrees (ICRS) of 0-based pixel positions; NaN without a WCS."""
    if wcs is None or len(x) == 0:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)
    sky = wcs.pixel_to_world(np.asarray(x), np.asarray(y)).icrs
    return sky.ra.deg, sky.dec.deg
