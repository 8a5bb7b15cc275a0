"""Fill one rectangular region of a field: noiseless bands, truth masks, label map.

A :class:`FieldPlan` holds everything fixed for a field (preset, band
models, the global object list, the WCS and the mask rules).
:meth:`FieldPlan.render` draws every object whose stamp touches a region, in
id order, so each pixel sums the same contributions in the same order
whatever the region: tiles and the whole field agree to the bit.

Truth masks: an object owns a pixel where its noiseless flux in the
detection image (bands weighted by their inverse per-pixel noise, summed and
divided by sqrt(n_bands), so the noise of that image is 1 per pixel) is at
least ``max(mask_sigma, mask_fraction[class] * peak)``. An object whose peak
is below ``mask_sigma`` has an empty mask. The exclusive label map gives a
pixel to the object with the most detection-image flux there among those
whose mask holds it (the lower id on an exact tie).
"""

from dataclasses import dataclass, field

import numpy as np

from ..classes import MORPHOLOGY_CODE
from ..errors import InputError
from .draw import bleed_columns, draw_object
from .noise import add_noise
from .optics import band_models
from .population import make_population
from .presets import get_preset

#: Default share of an object's detection-image peak below which it owns no
#: pixel, per class (Astro R-CNN style); the floor ``mask_sigma`` also applies.
DEFAULT_MASK_FRACTION = {"star": 0.001, "galaxy": 0.005}
DEFAULT_MASK_SIGMA = 1.0


def make_wcs(shape, pixel_scale, center):
    """TAN WCS with north up, east left, ``center`` (ra, dec) at the field centre."""
    from astropy.wcs import WCS

    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(center[0]), float(center[1])]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    scale = pixel_scale / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    wcs.wcs.radesys = "ICRS"
    return wcs


@dataclass
class ObjectTruth:
    """What the drawing learns about one object from its whole stamp."""

    mask_box: tuple  # (y0, x0, y1, x1) of the tight mask crop, or None
    mask: np.ndarray  # bool crop over mask_box (None when empty)
    snr: float  # optimal S/N: sqrt(sum of detection image^2)
    peak_snr: float
    area: int = 0  # pixels in the mask
    image_flux: tuple = ()  # noiseless flux drawn in the field, per band


@dataclass
class RegionResult:
    """Output of :meth:`FieldPlan.render` for one region."""

    region: tuple
    noiseless: np.ndarray  # (band, h, w) float32
    label: np.ndarray  # (h, w) int32, 0 = no object
    owned: dict  # id -> ObjectTruth for objects whose centre pixel is in the region
    pairs: set = field(default_factory=set)  # (id_a, id_b), id_a < id_b, masks overlap


class FieldPlan:
    """Everything fixed about one simulated field; renders regions of it.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    preset : str or Preset
    seed : int
    density, star_density : float, optional
        Galaxies / stars per arcmin^2 (preset defaults when None).
    deep : bool
        Ultra-deep field.
    mask_sigma : float
        Floor of the truth masks in detection-image sigma.
    mask_fraction : dict or float, optional
        ``{"star": f, "galaxy": f}``: share of the peak a masked pixel needs
        (one number: the same for both classes).
    center : tuple, optional
        ``(ra, dec)`` of the field centre in degrees.
    saturate : bool
        Saturate pixels above each band's full well, with bleed trails along
        columns. Truth masks and fluxes ignore the saturation.
    cosmic_rays : float
        Mean cosmic-ray tracks per megapixel per band in the noisy images.
    pairs : float
        Share of the galaxies placed next to another galaxy
        (:func:`~.population.place_companions`).
    large_galaxies : float
        Large, bright galaxies (most of them spirals) added per arcmin^2
        (:func:`~.population.add_large_galaxies`).
    """

    def __init__(self, shape, preset="decam", seed=0, density=None, star_density=None,
                 deep=False, mask_sigma=DEFAULT_MASK_SIGMA, mask_fraction=None, center=None,
                 saturate=False, cosmic_rays=0.0, pairs=0.0, large_galaxies=0.0):
        self.shape = validate_shape(shape)
        self.preset = get_preset(preset)
        for name, value in (("density", density), ("star density", star_density)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a number >= 0, got {value!r}")
        if not (np.isfinite(large_galaxies) and large_galaxies >= 0):
            raise InputError(f"large-galaxy density must be >= 0, got {large_galaxies!r}")
        if not (np.isfinite(cosmic_rays) and cosmic_rays >= 0):
            raise InputError(f"cosmic-ray rate must be >= 0, got {cosmic_rays!r}")
        self.cosmic_rays = float(cosmic_rays)
        self.large_galaxies = float(large_galaxies)
        if not (np.isfinite(mask_sigma) and mask_sigma > 0):
            raise InputError(f"mask_sigma must be > 0, got {mask_sigma!r}")
        self.seed = int(seed)
        self.deep = bool(deep)
        self.saturate = bool(saturate)
        self.models = band_models(self.preset, self.deep)
        self.mask_sigma = float(mask_sigma)
        self.mask_fraction = _mask_fractions(mask_fraction)
        self.center = tuple(center) if center is not None else self.preset.center
        self.wcs = make_wcs(self.shape, self.preset.pixel_scale, self.center)
        self.population = make_population(self.shape, self.preset, self.seed, density,
                                          star_density, self.deep, self.saturate, pairs,
                                          large_galaxies)
        sig = np.array([m.sigma for m in self.models])
        self.weights = 1.0 / sig / np.sqrt(len(self.models))
        pop = self.population
        self._boxes = np.stack([np.clip(pop.stamp[:, 0], 0, None), np.clip(pop.stamp[:, 1], 0, None),
                                np.minimum(pop.stamp[:, 2], self.shape[0]),
                                np.minimum(pop.stamp[:, 3], self.shape[1])], axis=1)
        self.centre_pixel = np.stack([
            np.clip(np.round(pop.y), 0, self.shape[0] - 1),
            np.clip(np.round(pop.x), 0, self.shape[1] - 1)], axis=1).astype(np.int64)

    @property
    def bands(self):
        return self.preset.band_names

    def objects_in(self, region):
        """Rows of the objects whose (field-clipped) stamp touches ``region``, in id order."""
        y0, x0, y1, x1 = region
        b = self._boxes
        hit = (b[:, 0] < y1) & (b[:, 2] > y0) & (b[:, 1] < x1) & (b[:, 3] > x0)
        return np.flatnonzero(hit)

    def _object_truth(self, stamp, det):
        i = stamp.index
        peak = float(det.max()) if det.size else 0.0
        snr = float(np.sqrt(np.sum(det.astype(np.float64) ** 2)))
        image_flux = tuple(float(v) for v in stamp.images.sum(axis=(1, 2), dtype=np.float64))
        if peak < self.mask_sigma:
            return ObjectTruth(None, None, snr, peak, 0, image_flux)
        cls = "star" if self.population.is_star[i] else "galaxy"
        threshold = max(self.mask_sigma, self.mask_fraction[cls] * peak)
        mask = det >= threshold
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        ty0, ty1, tx0, tx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sy0, sx0 = stamp.box[0], stamp.box[1]
        box = (sy0 + ty0, sx0 + tx0, sy0 + ty1, sx0 + tx1)
        return ObjectTruth(tuple(int(v) for v in box), mask[ty0:ty1, tx0:tx1].copy(), snr, peak,
                           int(mask.sum()), image_flux)

    def render(self, region):
        """Draw the noiseless bands, truth masks and label map of ``region``.

        Parameters
        ----------
        region : tuple of int
            ``(y0, x0, y1, x1)`` inside the field, exclusive ends.

        Returns
        -------
        RegionResult
        """
        y0, x0, y1, x1 = region
        h, w = y1 - y0, x1 - x0
        pop = self.population
        noiseless = np.zeros((len(self.models), h, w), dtype=np.float32)
        label = np.zeros((h, w), dtype=np.int32)
        best = np.zeros((h, w), dtype=np.float32)
        owned, drawn = {}, []
        for i in self.objects_in(region):
            stamp = draw_object(pop, i, self.models, self.preset.pixel_scale)
            if stamp is None:
                continue
            det = stamp.detection(self.weights)
            truth = self._object_truth(stamp, det)
            oid = int(pop.id[i])
            cy, cx = self.centre_pixel[i]
            if y0 <= cy < y1 and x0 <= cx < x1:
                owned[oid] = truth
            if self.saturate:
                for b, model in enumerate(self.models):
                    bleed_columns(stamp.images[b], np.float32(model.saturation))
            sy0, sx0, sy1, sx1 = stamp.box
            iy0, ix0, iy1, ix1 = max(sy0, y0), max(sx0, x0), min(sy1, y1), min(sx1, x1)
            if iy0 >= iy1 or ix0 >= ix1:
                continue
            noiseless[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] += \
                stamp.images[:, iy0 - sy0:iy1 - sy0, ix0 - sx0:ix1 - sx0]
            if truth.mask is None:
                continue
            drawn.append((oid, truth))
            my0, mx0, my1, mx1 = truth.mask_box
            jy0, jx0, jy1, jx1 = max(my0, y0), max(mx0, x0), min(my1, y1), min(mx1, x1)
            if jy0 >= jy1 or jx0 >= jx1:
                continue
            m = truth.mask[jy0 - my0:jy1 - my0, jx0 - mx0:jx1 - mx0]
            d = det[jy0 - sy0:jy1 - sy0, jx0 - sx0:jx1 - sx0]
            lab = label[jy0 - y0:jy1 - y0, jx0 - x0:jx1 - x0]
            bst = best[jy0 - y0:jy1 - y0, jx0 - x0:jx1 - x0]
            take = m & ((d > bst) | (lab == 0))
            lab[take] = oid
            bst[take] = d[take]
        return RegionResult(region=tuple(region), noiseless=noiseless, label=label,
                            owned=owned, pairs=overlapping_pairs(drawn))

    def add_noise(self, noiseless, origin):
        """Noisy, sky-subtracted float32 images of a rendered region at ``origin``."""
        return add_noise(noiseless, origin, self.models, self.seed, self.cosmic_rays,
                         self.saturate)

    def morphology_lookup(self):
        """Array mapping a label (0 = none, else id) to its morphology code."""
        lut = np.empty(len(self.population) + 1, dtype=np.uint8)
        lut[0] = MORPHOLOGY_CODE["background"]
        lut[1:] = self.population.morphology
        return lut


def overlapping_pairs(items):
    """Pairs ``(id_a, id_b)`` of objects whose masks share a pixel.

    ``items`` is a list of ``(id, ObjectTruth)`` with non-empty masks.
    """
    pairs = set()
    if len(items) < 2:
        return pairs
    boxes = np.array([t.mask_box for _, t in items])
    ys = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    xs = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    ye = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    xe = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    cand = np.argwhere(np.triu((ys < ye) & (xs < xe), k=1))
    for a, b in cand:
        (ia, ta), (ib, tb) = items[a], items[b]
        sl = (slice(ys[a, b], ye[a, b]), slice(xs[a, b], xe[a, b]))
        ma = ta.mask[sl[0].start - ta.mask_box[0]:sl[0].stop - ta.mask_box[0],
                     sl[1].start - ta.mask_box[1]:sl[1].stop - ta.mask_box[1]]
        mb = tb.mask[sl[0].start - tb.mask_box[0]:sl[0].stop - tb.mask_box[0],
                     sl[1].start - tb.mask_box[1]:sl[1].stop - tb.mask_box[1]]
        if np.any(ma & mb):
            pairs.add((min(ia, ib), max(ia, ib)))
    return pairs


def _mask_fractions(value):
    """Per-class mask fractions from a dict, one number for both classes, or None."""
    if value is None:
        return dict(DEFAULT_MASK_FRACTION)
    if isinstance(value, dict):
        unknown = set(value) - set(DEFAULT_MASK_FRACTION)
        if unknown:
            raise InputError(f"mask_fraction classes are star and galaxy, got {sorted(unknown)}")
        fractions = dict(DEFAULT_MASK_FRACTION, **value)
    else:
        try:
            fractions = dict.fromkeys(DEFAULT_MASK_FRACTION, float(value))
        except (TypeError, ValueError):
            raise InputError(f"mask_fraction must be a number or a dict per class, "
                             f"got {value!r}") from None
    if not all(0 <= f < 1 for f in fractions.values()):
        raise InputError(f"mask fractions must be in [0, 1), got {fractions}")
    return fractions


def validate_shape(shape):
    """Return ``(ny, nx)`` as ints, or raise InputError for a bad size."""
    if isinstance(shape, str):
        shape = parse_size(shape)
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"bad field size {shape!r}; expected (ny, nx)") from None
    if ny < 1 or nx < 1:
        raise InputError(f"bad field size {shape!r}; both sides must be >= 1 pixel")
    return (ny, nx)


def parse_size(text):
    """Parse ``WIDTHxHEIGHT`` (or one number for a square) into ``(ny, nx)``."""
    parts = str(text).lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"bad --size {text!r}; expected WIDTHxHEIGHT such as 4096x4096") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"bad --size {text!r}; expected WIDTHxHEIGHT such as 4096x4096")
    nx, ny = values
    return (ny, nx)
