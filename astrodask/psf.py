"""PSF measurement: each band's FWHM from its bright, isolated point sources.

:func:`measure_psf` samples a bounded number of blocks spread over one band
(never the whole mosaic), finds sources with SEP, keeps the bright, clean,
isolated ones on the stellar locus (the tight cluster of the smallest
half-light radii: galaxies are larger) and fits each with a circular Moffat
profile integrated over the pixels. The band's FWHM is the median of the
fitted FWHMs, in pixels and, given the pixel scale, in arcsec. A band with
too few such stars gets no FWHM and a reason, never a guess.

The fit models the pixel response, so the FWHM is the optical PSF's (what
GalSim's ``calculateFWHM`` gives), also when stars are undersampled.
"""

from dataclasses import asdict, dataclass
import math

import numpy as np

from .band_values import parse_band_values
from .errors import InputError

#: Side of the blocks sampled per band, and how many at most (a 4 x 4 lattice).
BLOCK = 512
MAX_BLOCKS = 16
#: Sources kept as PSF stars: isophotal S/N at least this, and no saturated plateau.
MIN_SNR = 30.0
#: Fewer stars than this and the band's FWHM is left unknown.
MIN_STARS = 5
#: This many bright sources clearly smaller than the apparent stellar locus, in one tight
#: group, are the real stars (see ``_stellar_locus``).
SMALLER_GROUP = 3
#: ... or two or more of S/N at least this, whose half-light radii (precise at that S/N)
#: agree within :data:`TWIN_TOLERANCE`: a pair of bright stars beside a locus of compact
#: galaxies (a deep field at high resolution holds a handful of stars).
BRIGHT_SMALLER_SNR = 300.0
TWIN_TOLERANCE = 0.05
#: At most this many stars (the highest S/N) are fitted per band.
MAX_FIT_STARS = 60
#: No other source closer than ISOLATION FWHMs plus that source's isophotal radius.
ISOLATION = 3.0
#: Relative accuracy of a measured FWHM (the measurement's target; the worst error on the
#: simulated conditions of BENCHMARKS.md is 5.8%): a band this close to a model's trained
#: FWHM range counts as inside it.
FWHM_TOLERANCE = 0.10
#: FWHM (px) that the shipped Mask R-CNN saw in training (median over its bands).
TARGET_FWHM_PX = 3.8
METHOD = ("SEP detection on up to 16 sampled 512x512 blocks; S/N >= 30, flags 0, no "
          "flagged pixels, isolated, on the half-light-radius stellar locus; median FWHM "
          "of pixel-integrated circular Moffat fits")


@dataclass(frozen=True)
class BandPSF:
    """The PSF of one band of a mosaic.

    Attributes
    ----------
    band : str
    fwhm_px : float or None
        FWHM in pixels; ``None`` when it could not be measured (see ``reason``).
    fwhm_arcsec : float or None
        FWHM in arcsec (``None`` without a pixel scale or without a FWHM).
    n_stars : int
        Stars whose fits the FWHM is the median of (0 when given).
    source : str
        ``"measured"`` or ``"given"``.
    reason : str or None
        Why ``fwhm_px`` is ``None``.
    concentration : float or None
        Median aperture concentration of the PSF stars
        (:func:`concentration` at this FWHM); ``None``
        when given or not measured.
    """

    band: str
    fwhm_px: float = None
    fwhm_arcsec: float = None
    n_stars: int = 0
    source: str = "measured"
    reason: str = None
    concentration: float = None

    def to_dict(self):
        """JSON-ready values (stored in the mosaic's attributes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


def given_psf(band, fwhm_arcsec, pixel_scale):
    """The PSF of ``band`` as given by the user, in arcsec.

    Parameters
    ----------
    band : str
    fwhm_arcsec : float
    pixel_scale : float or None
        Arcsec per pixel of the mosaic.

    Returns
    -------
    BandPSF

    Raises
    ------
    InputError
        A FWHM that is not a positive number, or no pixel scale to convert it.
    """
    try:
        value = float(fwhm_arcsec)
    except (TypeError, ValueError):
        raise InputError(f"PSF FWHM of band {band} must be a number (arcsec), "
                         f"got {fwhm_arcsec!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"PSF FWHM of band {band} must be > 0 arcsec, got {fwhm_arcsec!r}")
    if not pixel_scale:
        raise InputError("a given PSF FWHM (arcsec) needs the mosaic's pixel scale, and its "
                         "WCS has none")
    return BandPSF(band=band, fwhm_px=value / pixel_scale, fwhm_arcsec=value, source="given")


def rescale_for_fwhm(fwhm_px, target=TARGET_FWHM_PX):
    """The resampling factor that brings a PSF of ``fwhm_px`` to about ``target`` px.

    Resampled stars keep the blur of the original pixel (a box of side
    ``F`` new pixels), which the FWHM measured on the new grid includes:
    with Gaussian equivalents, ``F**2 * (s**2 + 1/12) = t**2 + 1/12`` for
    ``s``, ``t`` the FWHMs over 2.3548. Rounded to two decimals.

    Parameters
    ----------
    fwhm_px : float
        FWHM on the current grid (pixels, the PSF without the pixel).
    target : float
        FWHM wanted on the resampled grid.

    Returns
    -------
    float
    """
    box = 1.0 / 12.0
    s2 = (fwhm_px / 2.3548) ** 2
    t2 = (target / 2.3548) ** 2
    return round(math.sqrt((t2 + box) / (s2 + box)), 2)


def parse_psf_fwhm(text):
    """Parse ``"g=1.1,r=1.0"`` (arcsec per band) into ``{"g": 1.1, "r": 1.0}``.

    Raises
    ------
    InputError
        Entries that are not ``BAND=NUMBER`` or a band named twice.
    """
    return parse_band_values(text, "--psf-fwhm", "g=1.1,r=1.0", unit="ARCSEC")


def aperture_radii(fwhm_px):
    """The inner and outer aperture radii (px) used at a PSF FWHM of ``fwhm_px``."""
    inner = max(0.5 * float(fwhm_px), 1.0)
    return inner, 3.0 * inner


def concentration(image, x, y, fwhm_px, noise=1.0, mask=None):
    """Aperture concentration ``F(r1) / F(r2)`` of sources, its error and the S/N in ``r2``.

    Parameters
    ----------
    image : ndarray, shape (y, x)
        Background-subtracted pixels (flagged pixels may hold anything; give
        them in ``mask``).
    x, y : array_like
        0-based source centres.
    fwhm_px : float
        The PSF FWHM that sets the apertures (:func:`aperture_radii`).
    noise : float
        Per-pixel noise of ``image``.
    mask : ndarray of bool, optional
        Flagged pixels, left out of both apertures.

    Returns
    -------
    ratio, error, snr : ndarray of float64
        ``ratio`` is NaN where the outer flux is not positive.
    """
    import sep

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    data = np.ascontiguousarray(image, dtype=np.float64)
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        data = np.where(mask, 0.0, data)
    inner, outer = aperture_radii(fwhm_px)
    kwargs = dict(err=float(noise), mask=mask, subpix=5)
    f1, e1, _ = sep.sum_circle(data, x, y, np.full(x.shape, inner), **kwargs)
    f2, e2, _ = sep.sum_circle(data, x, y, np.full(x.shape, outer), **kwargs)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(f2 > 0, f1 / f2, np.nan)
        # The inner aperture lies inside the outer one: its noise is shared.
        variance = ratio ** 2 * (e1 ** 2 / f1 ** 2 + e2 ** 2 / f2 ** 2 - 2 * e1 ** 2 / (f1 * f2))
        snr = np.where(e2 > 0, f2 / e2, 0.0)
    return ratio, np.sqrt(np.maximum(variance, 0.0)), snr


def sample_blocks(height, width, block=BLOCK, max_blocks=MAX_BLOCKS):
    """Non-overlapping blocks spread evenly over a ``height x width`` image.

    At most ``max_blocks`` (a square lattice); an axis shorter than two
    blocks is covered by one block as long as the axis.

    Returns
    -------
    list of (slice, slice)
    """
    per_axis = max(1, int(math.isqrt(max_blocks)))

    def axis(n):
        count = max(1, min(per_axis, n // block))
        size = n if count == 1 and n < 2 * block else block
        starts = np.round(np.linspace(0, n - size, count)).astype(int)
        return [slice(int(s), int(s) + size) for s in starts]

    return [(ys, xs) for ys in axis(height) for xs in axis(width)]


def measure_psf(image, mask=None, *, band="", pixel_scale=None, block=BLOCK,
                max_blocks=MAX_BLOCKS):
    """Measure one band's PSF FWHM from its bright, isolated point sources.

    Parameters
    ----------
    image : array-like, (y, x)
        The band; anything sliceable as ``image[ys, xs]`` (NumPy, Zarr, Dask).
        Only the sampled blocks are read. NaN marks pixels without data.
    mask : array-like, (y, x), optional
        Non-zero where a pixel is flagged.
    band : str
        Name recorded in the result.
    pixel_scale : float, optional
        Arcsec per pixel, for ``fwhm_arcsec``.
    block, max_blocks : int
        Side of the sampled blocks and how many at most.

    Returns
    -------
    BandPSF
        ``fwhm_px`` is ``None`` (with ``reason``) when fewer than
        :data:`MIN_STARS` stars pass the cuts.
    """
    height, width = image.shape[-2:]
    candidates = []
    for ys, xs in sample_blocks(height, width, block, max_blocks):
        data = np.asarray(image[ys, xs], dtype=np.float64)
        bad = ~np.isfinite(data)
        if mask is not None:
            bad |= np.asarray(mask[ys, xs]) != 0
        candidates.extend(_block_candidates(data, bad))
    n_blocks = len(sample_blocks(height, width, block, max_blocks))
    stars, why = _stellar_locus(candidates)
    if stars is None:
        return BandPSF(band=band, reason=f"{why} in {n_blocks} sampled block(s)")
    fitted = _fit_stars(stars)
    if len(fitted) < MIN_STARS:
        return BandPSF(band=band, n_stars=len(fitted),
                       reason=f"only {len(fitted)} PSF star(s) fitted in {n_blocks} sampled "
                              f"block(s) (need {MIN_STARS})")
    fwhm = float(np.median([f for f, _ in fitted]))
    arcsec = fwhm * pixel_scale if pixel_scale else None
    return BandPSF(band=band, fwhm_px=fwhm, fwhm_arcsec=arcsec, n_stars=len(fitted),
                   concentration=_concentration([s for _, s in fitted], fwhm))


@dataclass
class _Candidate:
    """A bright, clean source and the stamp around it (background subtracted)."""

    snr: float
    r50: float
    isolation: float  # distance to the nearest other source minus its isophotal radius
    stamp: np.ndarray
    centre: tuple  # (y, x) of the source in the stamp


def _block_candidates(data, bad):
    import sep

    if bad.all():
        return []
    filled = np.ascontiguousarray(np.where(bad, 0.0, data))
    background = sep.Background(filled, mask=bad, bw=64, bh=64)
    sub = filled - background.back()
    sub[bad] = 0.0
    rms = float(background.globalrms)
    if not rms > 0:
        return []
    objects = sep.extract(sub, 3.0, err=rms, mask=bad, minarea=5)
    if len(objects) < 2:
        return []
    snr = objects["flux"] / (rms * np.sqrt(objects["npix"]))
    r_iso = np.sqrt(objects["npix"] / np.pi)
    keep = np.flatnonzero((objects["flag"] == 0) & (snr >= MIN_SNR)
                          & (objects["b"] >= 0.6 * objects["a"]))
    if keep.size == 0:
        return []
    x, y = objects["x"][keep], objects["y"][keep]
    r50, flags = sep.flux_radius(sub, x, y, 6.0 * objects["a"][keep], 0.5, subpix=5)
    out = []
    for k, i in enumerate(keep):
        if flags[k] != 0 or not r50[k] > 0:
            continue
        half = int(np.ceil(3.0 * r50[k] * 2.0)) + 3  # about 3 FWHM
        cy, cx = int(round(y[k])), int(round(x[k]))
        box = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
        if cy - half < 0 or cx - half < 0 or cy + half >= sub.shape[0] \
                or cx + half >= sub.shape[1] or bad[box].any():
            continue
        stamp = sub[box]
        if _saturated(stamp):
            continue
        others = np.arange(len(objects)) != i
        distance = np.hypot(objects["x"][others] - x[k], objects["y"][others] - y[k])
        isolation = float(np.min(distance - r_iso[others]))
        out.append(_Candidate(snr=float(snr[i]), r50=float(r50[k]), isolation=isolation,
                              stamp=stamp.copy(), centre=(y[k] - cy + half, x[k] - cx + half)))
    return out


def _saturated(stamp):
    """A flat top: several pixels sharing the brightest value (clipped at saturation)."""
    peak = stamp.max()
    return int(np.count_nonzero(stamp >= peak - 1e-6 * abs(peak))) >= 3


def _lowest_cluster(values, width, fraction):
    """The values in the lowest window ``[v, v * (1 + width))`` that is well populated.

    Point sources pile up at the small end of a size distribution and galaxies
    spread above them: scanning up from the smallest value, the first window
    holding at least :data:`MIN_STARS` and ``fraction`` of the most populous
    window's count is the stellar locus. Returns the sorted values in it
    (empty when no window holds :data:`MIN_STARS`).
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    if ordered.size == 0:
        return ordered
    ends = np.searchsorted(ordered, ordered * (1.0 + width), side="left")
    counts = ends - np.arange(ordered.size)
    need = max(MIN_STARS, math.ceil(fraction * counts.max()))
    first = np.flatnonzero(counts >= need)
    if first.size == 0:
        return ordered[:0]
    return ordered[first[0]:ends[first[0]]]


def _stellar_locus(candidates):
    """The isolated candidates whose half-light radii lie on the stellar locus.

    A coarse cut (half-light radii are noisy): the FWHM fits refine it.
    Returns ``(stars, None)`` or ``(None, reason)``.
    """
    if len(candidates) < MIN_STARS:
        return None, (f"only {len(candidates)} bright (S/N >= {MIN_SNR:g}), clean source(s) "
                      f"(need {MIN_STARS})")
    sizes = np.sort([c.r50 for c in candidates])
    locus = _lowest_cluster(sizes, 0.2, 0.25)
    if locus.size == 0:
        return None, "no cluster of point-like sizes among the bright sources"
    low, high = locus[0] / 1.1, locus[0] * 1.3
    # Nothing real is smaller than the PSF: a tight group of smaller sources below the
    # locus means the stars are that group, and the "locus" is compact galaxies (a deep
    # field at high resolution with few stars).
    group = _smaller_group(candidates, low)
    if group:
        ratio = locus[0] / min(c.r50 for c in group)
        if len(group) < MIN_STARS:
            return None, (f"only {len(group)} point-like source(s) with S/N >= {MIN_SNR:g} "
                          f"(need {MIN_STARS}); the next group of sizes, {ratio:.1f}x larger, "
                          "is taken for galaxies")
        return None, (f"{len(group)} sources with S/N >= {MIN_SNR:g} lie below the apparent "
                      f"stellar locus; that locus, {ratio:.1f}x larger, is taken for galaxies "
                      "and the smaller group for stars mixed with compact galaxies")
    # For a Moffat or Gaussian PSF the FWHM is 1.6-2.0 half-light radii.
    fwhm_guess = 1.8 * float(np.median(locus))
    stars = [c for c in candidates
             if low <= c.r50 <= high and c.isolation > ISOLATION * fwhm_guess]
    if len(stars) < MIN_STARS:
        return None, (f"only {len(stars)} isolated point-like source(s) with S/N >= "
                      f"{MIN_SNR:g} (need {MIN_STARS})")
    stars.sort(key=lambda c: -c.snr)
    return stars[:MAX_FIT_STARS], None


def _smaller_group(candidates, below):
    """The tight group of candidates smaller than ``below`` that the real stars form, or [].

    The smallest such candidate and those within 20% of its half-light radius,
    when they are :data:`SMALLER_GROUP` or more; else the candidates of S/N
    >= :data:`BRIGHT_SMALLER_SNR` within :data:`TWIN_TOLERANCE` of the
    smallest bright one, when there are two or more.
    """
    smaller = sorted((c for c in candidates if c.r50 < below), key=lambda c: c.r50)
    if not smaller:
        return []
    group = [c for c in smaller if c.r50 < smaller[0].r50 * 1.2]
    if len(group) >= SMALLER_GROUP:
        return group
    bright = [c for c in smaller if c.snr >= BRIGHT_SMALLER_SNR]
    twins = [c for c in bright if c.r50 <= bright[0].r50 * (1 + TWIN_TOLERANCE)]
    return twins if len(twins) >= 2 else []


def _fit_stars(stars):
    """(FWHM, star) of the fitted stars on the FWHM locus (compact galaxies left out)."""
    fitted = [(f, s) for f, s in ((_fit_moffat(s), s) for s in stars) if f is not None]
    # Stars' fitted FWHMs agree within a few per cent; galaxies' are larger and spread.
    locus = _lowest_cluster([f for f, _ in fitted], 0.1, 0.5)
    if not locus.size:
        return []
    return [(f, s) for f, s in fitted if locus[0] <= f <= locus[-1]]


def _concentration(stars, fwhm):
    """Median aperture concentration of the PSF stars at the band's FWHM."""
    values = []
    for star in stars:
        ratio, _, _ = concentration(star.stamp, [star.centre[1]], [star.centre[0]], fwhm)
        values.append(ratio[0])
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _fit_moffat(star):
    """FWHM (px) of a circular Moffat, integrated over the pixels, fitted to a stamp."""
    from scipy.optimize import least_squares

    stamp = star.stamp
    n = stamp.shape[0]
    guess = 1.8 * star.r50
    # Sub-pixel samples stand in for the pixel integral where it matters.
    sub = 5 if guess < 3 else (3 if guess < 8 else 1)
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.arange(n)
    yy = (grid[:, None] + offsets[None, :]).ravel()
    xx = yy

    def model(p):
        amplitude, y0, x0, log_alpha, log_beta1, sky = p
        alpha2, beta = math.exp(2 * log_alpha), 1.0 + math.exp(log_beta1)
        py = (yy - y0) ** 2
        px = (xx - x0) ** 2
        profile = (1.0 + (py[:, None] + px[None, :]) / alpha2) ** (-beta)
        profile = profile.reshape(n, sub, n, sub).mean(axis=(1, 3))
        return amplitude * profile + sky

    beta0 = 3.0
    alpha0 = guess / (2.0 * math.sqrt(2.0 ** (1.0 / beta0) - 1.0))
    p0 = [float(stamp.max()), star.centre[0], star.centre[1], math.log(alpha0),
          math.log(beta0 - 1.0), 0.0]
    try:
        fit = least_squares(lambda p: (model(p) - stamp).ravel(), p0, method="lm",
                            max_nfev=400)
    except (ValueError, FloatingPointError):
        return None
    amplitude, y0, x0, log_alpha, log_beta1, _ = fit.x
    beta = 1.0 + math.exp(min(log_beta1, 50.0))
    if not fit.success or amplitude <= 0 or not (0 <= y0 < n and 0 <= x0 < n):
        return None
    fwhm = 2.0 * math.exp(log_alpha) * math.sqrt(2.0 ** (1.0 / beta) - 1.0)
    return fwhm if math.isfinite(fwhm) and 0 < fwhm < n else None
