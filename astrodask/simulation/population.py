"""The global object list of a field: every star and galaxy with its truth.

One random generator, seeded from the field seed, draws the whole list
before any pixel is drawn, so a field cut into tiles and a field drawn in one
piece see exactly the same objects. Each object also gets the pixel box of
its stamp (where its noiseless flux is worth drawing) and a seed of its own
for anything random inside its profile (the clumps of irregulars).
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import gamma, gammainc, gammaincinv

from ..classes import MORPHOLOGY_CODE
from .optics import band_models

_POPULATION_TAG = 1
_PAIRS_TAG = 77  # its own stream: fields without pairs stay as they were
_LARGE_TAG = 78  # the same for the large galaxies added on request
#: Large galaxies (:func:`add_large_galaxies`): reference-band magnitudes,
#: half-light radii (arcsec, drawn log-uniform) and the share of each kind.
LARGE_MAGS = (15.0, 18.5)
LARGE_HLR = (1.5, 8.0)
LARGE_KINDS = {"spiral": 0.7, "irregular": 0.15, "spheroid": 0.15}
#: Sersic indices of bulges are drawn on this grid so that GalSim can reuse
#: its per-index tables (a new index costs a few ms to set up).
_BULGE_N_STEP = 0.5
#: Bulges are Sersic profiles truncated at this many half-light radii (the
#: half-light radius is that of the truncated profile; the flux is all drawn).
BULGE_TRUNCATION = 6.0
#: Stamps extend to where the object's detection-image flux drops below this
#: many sigma per pixel (half the default mask threshold).
STAMP_EDGE_SIGMA = 0.25
#: ... and far enough that the PSF wings outside carry less than this share of
#: the noise of an aperture as large as the stamp.
WING_LOSS_TOLERANCE = 0.2


@dataclass
class Population:
    """Column arrays of the objects of one field (row ``i`` has ``id = i + 1``).

    Fluxes are per band in image units (``flux``, ``bulge_flux``,
    ``disk_flux``, ``knot_flux`` of shape ``(n, n_bands)``); sizes in arcsec;
    ``stamp`` holds ``(y0, x0, y1, x1)`` with exclusive ends, not clipped to
    the field.
    """

    shape: tuple
    bands: tuple
    id: np.ndarray
    is_star: np.ndarray
    morphology: np.ndarray  # codes of astrodask.classes.MORPHOLOGY_CLASSES
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    bulge_flux: np.ndarray
    disk_flux: np.ndarray
    knot_flux: np.ndarray
    bulge_n: np.ndarray
    bulge_hlr: np.ndarray
    disk_hlr: np.ndarray
    bulge_fraction: np.ndarray  # B/T in the reference band
    hlr: np.ndarray  # half-light radius of the whole (unconvolved) object
    q: np.ndarray
    position_angle: np.ndarray  # degrees, counter-clockwise from +x
    n_knots: np.ndarray
    knot_offset: np.ndarray  # (n, 2) arcsec, lopsidedness of irregulars
    arms: np.ndarray  # spiral arms the knots lie along (0: knots spread as in irregulars)
    arm_pitch: np.ndarray  # pitch angle of the arms, degrees
    object_seed: np.ndarray
    stamp: np.ndarray

    def __len__(self):
        return len(self.id)


def _truncated_power_law_mags(rng, n, bright, faint, slope):
    """Magnitudes with dN/dm proportional to 10**(slope*m) between two limits."""
    lo, hi = 10 ** (slope * bright), 10 ** (slope * faint)
    return np.log10(lo + rng.random(n) * (hi - lo)) / slope


def _fluxes(ref_flux, offsets, zeropoints, ref_index):
    """Per-band fluxes of components with reference-band flux and colour offsets."""
    zp = np.asarray(zeropoints)
    mag_offset = offsets + (zp[ref_index] - zp)[None, :]
    return ref_flux[:, None] * 10 ** (-0.4 * mag_offset)


def _sersic_b(n):
    return gammaincinv(2 * n, 0.5)


def _truncated_scale(n):
    """Scale radius / half-light radius of a Sersic truncated at BULGE_TRUNCATION hlr."""
    import galsim

    out = np.ones_like(n, dtype=float)
    for value in np.unique(n):
        if value > 0:
            prof = galsim.Sersic(n=float(value), half_light_radius=1.0, trunc=BULGE_TRUNCATION)
            out[n == value] = prof.scale_radius
    return out


def composite_hlr(bulge_fraction, bulge_n, bulge_hlr, disk_hlr):
    """Half-light radius of circular truncated-Sersic bulge + exponential disk (vectorised)."""
    b1 = _sersic_b(1.0)
    bt = np.asarray(bulge_fraction, dtype=float)
    bulge_n = np.asarray(bulge_n, dtype=float)
    r0 = _truncated_scale(bulge_n) * bulge_hlr
    inv_n = 1.0 / bulge_n
    bulge_total = gammainc(2 * bulge_n, (BULGE_TRUNCATION * bulge_hlr / r0) ** inv_n)

    def enclosed(r):
        rb = np.minimum(r, BULGE_TRUNCATION * bulge_hlr)
        bulge = gammainc(2 * bulge_n, (rb / r0) ** inv_n) / bulge_total
        disk = gammainc(2.0, b1 * r / disk_hlr)
        return bt * bulge + (1 - bt) * disk

    # the whole's half-light radius lies between those of its parts
    lo = np.minimum(bulge_hlr, disk_hlr)
    hi = np.maximum(bulge_hlr, disk_hlr)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        below = enclosed(mid) < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _sersic_radius(flux, level, n, hlr_px, q):
    """Major-axis radius (px) where a Sersic profile's surface brightness falls to ``level``."""
    n = np.asarray(n, dtype=float)
    b = _sersic_b(n)
    norm = 2 * np.pi * n * np.exp(b) * b ** (-2 * n) * gamma(2 * n) * hlr_px ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        i_e = np.where(norm > 0, np.asarray(flux) / norm, 0.0)
    ratio = np.where(i_e > 0, i_e / level, 0.0)
    arg = 1.0 + np.log(np.maximum(ratio, 1e-300)) / b
    r = hlr_px / np.sqrt(q) * np.maximum(arg, 0.0) ** n
    return np.where(arg > 0, r, 0.0)


def stamp_radii(parts, models, pixel_scale, max_radius):
    """Half-size (px) of each object's stamp.

    The stamp reaches where the object's flux in the detection image (bands
    weighted by their inverse noise) falls below :data:`STAMP_EDGE_SIGMA`,
    by the analytic profile plus the PSF, and by the PSF alone for the total
    flux as a point source.
    """
    flux, bulge, disk, knots, bulge_n, bulge_hlr, disk_hlr, q = parts
    sig = np.array([m.sigma for m in models])
    w = 1.0 / sig / np.sqrt(len(models))
    level = STAMP_EDGE_SIGMA
    fwhm = max(m.fwhm_px for m in models)
    r_psf = np.zeros(len(flux))
    for b, model in enumerate(models):
        r_psf = np.maximum(r_psf, model.psf_radius(flux[:, b] * w[b] / level))
        r_psf = np.maximum(r_psf, model.complete_radius(flux[:, b], WING_LOSS_TOLERANCE))
    bulge_det, disk_det, knot_det = bulge @ w, disk @ w, knots @ w
    r_bulge = _sersic_radius(bulge_det, level, bulge_n, bulge_hlr / pixel_scale, q)
    r_bulge = np.minimum(r_bulge, BULGE_TRUNCATION * bulge_hlr / pixel_scale / np.sqrt(q))
    r_disk = _sersic_radius(disk_det + knot_det, level, 1.0, disk_hlr / pixel_scale, q)
    r_prof = np.maximum(r_bulge, r_disk)
    extended = np.maximum(bulge_hlr, disk_hlr) / pixel_scale
    radius = np.maximum(r_prof + 1.5 * fwhm, r_psf)
    radius = np.maximum(radius, 2.5 * extended + 2 * fwhm)
    radius = np.where(extended > 0, radius, r_psf)
    radius = np.maximum(radius, 2 * fwhm + 3)
    return np.minimum(np.ceil(radius), max_radius).astype(np.int64)


def make_population(shape, preset, seed, density=None, star_density=None, deep=False,
                    saturate=False, pairs=0.0, large_galaxies=0.0):
    """Draw the object list of a field.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the field in pixels.
    preset : Preset
        Survey and sky description (:mod:`.presets`).
    seed : int
        Seed of the field; same seed, same list.
    density, star_density : float, optional
        Galaxies / stars per arcmin^2 between the preset's magnitude limits;
        default from the preset (``deep`` uses the ultra-deep density).
    deep : bool
        Ultra-deep field: denser and fainter galaxies.
    saturate : bool
        Make stamps of sources that can saturate tall enough for their
        bleed trails.
    pairs : float
        Share of the galaxies moved next to another galaxy (see
        :func:`place_companions`): blends for training fields. 0 leaves
        the field as it is without the argument.
    large_galaxies : float
        Mean number per arcmin^2 of large, bright galaxies added (most of
        them spirals whose star-forming knots lie along their arms; see
        :func:`add_large_galaxies`): sources whose knots must not count as
        objects, for training. 0 leaves the field as it is.

    Returns
    -------
    Population
    """
    ny, nx = shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _POPULATION_TAG]))
    area = ny * nx * (preset.pixel_scale / 60.0) ** 2  # arcmin^2
    if density is None:
        density = preset.deep_density if deep else preset.galaxy_density
    if star_density is None:
        star_density = preset.star_density
    # one generator in a fixed order: galaxies, then stars, then the objects' own seeds
    galaxies = _draw_galaxies(rng, preset, shape, density * area, deep)
    if pairs:
        place_companions(galaxies, shape, preset.pixel_scale, pairs, seed)
    if large_galaxies:
        galaxies = add_large_galaxies(galaxies, preset, shape, large_galaxies * area, seed)
    stars = _draw_stars(rng, preset, shape, star_density * area)
    n = len(galaxies["x"]) + len(stars["x"])
    cat = {k: np.r_[galaxies[k], stars[k]] for k in galaxies}
    cat["object_seed"] = rng.integers(1, 2 ** 31 - 1, n)
    # ids follow raster order of the (rounded) centre pixel: a stable, readable order
    order = np.lexsort((cat["x"], cat["y"]))
    cat = {k: v[order] for k, v in cat.items()}
    stamp = _stamps(cat, band_models(preset, deep), preset, saturate)
    return Population(shape=(int(ny), int(nx)), bands=preset.band_names,
                      id=np.arange(1, n + 1, dtype=np.int64), stamp=stamp, **cat)


def check_pair_fraction(fraction):
    """Raise :class:`~astrodask.errors.InputError` unless ``fraction`` is a number in [0, 1]."""
    from ..errors import InputError

    if not (np.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise InputError(f"pair fraction must be between 0 and 1, got {fraction!r}")


def place_companions(galaxies, shape, pixel_scale, fraction, seed):
    """Move a share of the galaxies next to another galaxy, in place.

    Each galaxy is picked with probability ``fraction`` and, in id order,
    placed at a distance of 0.5-2.5 times the larger of the two half-light
    radii (at least 3 px) from a host drawn among the galaxies, at an angle
    drawn uniformly, clipped to the field: pairs from touching to just
    separated, which uniform positions rarely give. A host is taken where
    it stands at that moment (moved or not), so small groups form too.

    Parameters
    ----------
    galaxies : dict
        Galaxy columns (``x``, ``y`` in pixels, 0-based; ``hlr`` in arcsec).
    shape : tuple of int
        ``(ny, nx)`` of the field.
    pixel_scale : float
        Arcsec per pixel.
    fraction : float
        In [0, 1].
    seed : int
        Seed of the field (its own stream: the other draws do not change).
    """
    check_pair_fraction(fraction)
    n = len(galaxies["x"])
    if n < 2 or fraction == 0:
        return
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _PAIRS_TAG]))
    ny, nx = shape
    x, y, hlr = galaxies["x"], galaxies["y"], galaxies["hlr"]
    for i in np.flatnonzero(rng.random(n) < fraction):
        host = int(rng.integers(n))
        if host == i:
            continue
        size = max(hlr[i], hlr[host]) / pixel_scale
        distance = rng.uniform(0.5, 2.5) * max(size, 3.0)
        angle = rng.uniform(0.0, 2 * np.pi)
        x[i] = np.clip(x[host] + distance * np.cos(angle), -0.5, nx - 0.5)
        y[i] = np.clip(y[host] + distance * np.sin(angle), -0.5, ny - 0.5)


def add_large_galaxies(galaxies, preset, shape, mean_count, seed):
    """The galaxy columns with large, bright galaxies added at random positions.

    Magnitudes uniform in :data:`LARGE_MAGS`, half-light radii log-uniform in
    :data:`LARGE_HLR`, kinds drawn by :data:`LARGE_KINDS`: spirals (a small
    bulge, an exponential disk, and 20-45% of the disk's light in 25-70
    blue knots along 2-4 logarithmic arms), irregulars (30-60% of the
    light in 10-30 knots) and spheroids (B/T 0.7-1). Such galaxies, tens of
    pixels across with star-forming regions, are rare in a survey's random
    fields but are what a detector must not cut into pieces.

    Parameters
    ----------
    galaxies : dict
        Galaxy columns of :func:`_draw_galaxies`.
    preset : Preset
    shape : tuple of int
        ``(ny, nx)`` of the field.
    mean_count : float
        Mean number of galaxies added (Poisson).
    seed : int
        Seed of the field (its own stream: the other draws do not change).

    Returns
    -------
    dict
        The columns with the new galaxies appended.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _LARGE_TAG]))
    ny, nx = shape
    ref, zps = _reference(preset)
    n = int(rng.poisson(mean_count))
    mag = rng.uniform(*LARGE_MAGS, n)
    hlr = np.exp(rng.uniform(*np.log(LARGE_HLR), n))
    names = list(LARGE_KINDS)
    share = np.array([LARGE_KINDS[k] for k in names])
    kind = np.array(names)[rng.choice(len(names), size=n, p=share / share.sum())]
    spiral, irr, sph = kind == "spiral", kind == "irregular", kind == "spheroid"
    bt = np.where(sph, rng.uniform(0.7, 1.0, n), np.where(spiral, rng.uniform(0.05, 0.35, n), 0.0))
    bulge_n = np.round(rng.uniform(2.0, 5.0, n) / _BULGE_N_STEP) * _BULGE_N_STEP
    bulge_hlr = np.where(sph, 0.7 * hlr, 0.2 * hlr)
    knot_share = np.where(spiral, rng.uniform(0.2, 0.45, n),
                          np.where(irr, rng.uniform(0.3, 0.6, n), 0.0))
    n_knots = np.where(spiral, rng.integers(25, 70, n, endpoint=True),
                       np.where(irr, rng.integers(10, 30, n, endpoint=True), 0))
    arms = np.where(spiral, rng.choice([2, 2, 3, 4], size=n), 0)
    pitch = np.where(spiral, rng.uniform(12.0, 30.0, n), 0.0)
    q = np.where(sph, rng.uniform(0.5, 1.0, n), rng.uniform(0.35, 1.0, n))
    offset = rng.normal(0.0, 0.1, (n, 2)) * hlr[:, None] * irr[:, None]
    colours = _scattered_colours(rng, preset, n)
    total = 10 ** (-0.4 * (mag - zps[ref]))
    bulge_flux = _fluxes(total * bt, colours["bulge"], zps, ref)
    disk_flux = _fluxes(total * (1 - bt) * (1 - knot_share), colours["disk"], zps, ref)
    knot_flux = _fluxes(total * (1 - bt) * knot_share, colours["irregular"], zps, ref)
    morph = np.where(irr, MORPHOLOGY_CODE["irregular"],
                     np.where(sph, MORPHOLOGY_CODE["spheroid"], MORPHOLOGY_CODE["disk"]))
    whole_hlr = np.where(irr, hlr, composite_hlr(bt, bulge_n, bulge_hlr, hlr))
    bulge_n = np.where(irr, 0.0, bulge_n)
    bulge_hlr = np.where(irr, 0.0, bulge_hlr)
    added = dict(
        is_star=np.zeros(n, bool), morphology=morph.astype(np.uint8),
        x=rng.uniform(-0.5, nx - 0.5, n), y=rng.uniform(-0.5, ny - 0.5, n),
        flux=bulge_flux + disk_flux + knot_flux, bulge_flux=bulge_flux, disk_flux=disk_flux,
        knot_flux=knot_flux, bulge_n=bulge_n, bulge_hlr=bulge_hlr, disk_hlr=hlr,
        bulge_fraction=bt, hlr=whole_hlr,
        q=q, position_angle=rng.uniform(0.0, 180.0, n), n_knots=n_knots.astype(np.int32),
        knot_offset=offset, arms=arms.astype(np.int32), arm_pitch=pitch)
    return {k: np.concatenate([galaxies[k], added[k]]) for k in galaxies}


def _scattered_colours(rng, preset, n):
    """Colour offsets of ``n`` galaxies' bulges, disks and knots (``{component: (n, band)}``).

    The preset's offsets with Gaussian scatter of ``color_scatter`` mag in every
    band but the reference; drawn bulge, disk, knots in that order.
    """
    ref = _reference(preset)[0]
    colours = {}
    for name in ("bulge", "disk", "irregular"):
        offsets = np.tile(np.asarray(preset.galaxy_colors[name], dtype=float), (n, 1))
        noise = rng.normal(0.0, preset.color_scatter, (n, len(preset.bands)))
        noise[:, ref] = 0.0
        colours[name] = offsets + noise
    return colours


def _reference(preset):
    """Index of the reference band and the zero points of all bands."""
    return preset.band_names.index(preset.ref_band), [b.zeropoint for b in preset.bands]


def _draw_galaxies(rng, preset, shape, mean_count, deep):
    """Galaxy columns of a population (the draws of ``rng`` in their fixed order)."""
    ny, nx = shape
    ref, zps = _reference(preset)
    bright, faint = preset.galaxy_mags
    if deep:
        faint += preset.deep_faint_extra
    n_gal = int(rng.poisson(mean_count))
    mag = _truncated_power_law_mags(rng, n_gal, bright, faint, preset.galaxy_slope)
    kinds = np.array(["spheroid", "disk", "irregular"])
    fractions = np.array([preset.type_fractions[k] for k in kinds], dtype=float)
    kind = rng.choice(3, size=n_gal, p=fractions / fractions.sum())
    is_sph, is_disk, is_irr = kind == 0, kind == 1, kind == 2
    bt = np.where(is_sph, rng.uniform(0.6, 1.0, n_gal), 0.45 * rng.random(n_gal) ** 2)
    bt = np.where(is_irr, 0.0, bt)
    m0, r0, size_slope = preset.size_at_mag
    base = r0 * 10 ** (-size_slope * (mag - m0) + rng.normal(0, preset.size_scatter_dex, n_gal))
    base = np.clip(base, 0.6 * preset.pixel_scale, 40 * r0)
    disk_hlr = np.where(is_sph, 1.05 * base, base)
    bulge_hlr = np.where(is_sph, 0.7 * base, 0.45 * base)
    n_raw = np.where(is_sph, rng.uniform(3.0, 5.0, n_gal), rng.uniform(1.5, 4.0, n_gal))
    bulge_n = np.round(n_raw / _BULGE_N_STEP) * _BULGE_N_STEP
    q = np.where(is_sph, rng.uniform(0.5, 1.0, n_gal),
                 np.where(is_disk, rng.uniform(0.2, 1.0, n_gal), rng.uniform(0.4, 1.0, n_gal)))
    pa = rng.uniform(0.0, 180.0, n_gal)
    n_knots = np.where(is_irr, rng.integers(5, 20, n_gal, endpoint=True), 0)
    knot_share = np.where(is_irr, rng.uniform(0.3, 0.6, n_gal), 0.0)
    offset = rng.normal(0.0, 0.15, (n_gal, 2)) * disk_hlr[:, None] * is_irr[:, None]

    total_ref = 10 ** (-0.4 * (mag - zps[ref]))
    colours = _scattered_colours(rng, preset, n_gal)
    bulge_flux = _fluxes(total_ref * bt, colours["bulge"], zps, ref)
    disk_flux = _fluxes(total_ref * (1 - bt) * (1 - knot_share), colours["disk"], zps, ref)
    knot_flux = _fluxes(total_ref * knot_share, colours["irregular"], zps, ref)
    morph = np.where(is_irr, MORPHOLOGY_CODE["irregular"],
                     np.where(bt >= 0.5, MORPHOLOGY_CODE["spheroid"], MORPHOLOGY_CODE["disk"]))
    hlr = np.where(is_irr, disk_hlr, composite_hlr(bt, bulge_n, bulge_hlr, disk_hlr))
    gx = rng.uniform(-0.5, nx - 0.5, n_gal)
    gy = rng.uniform(-0.5, ny - 0.5, n_gal)
    return dict(
        is_star=np.zeros(n_gal, bool), morphology=morph.astype(np.uint8), x=gx, y=gy,
        flux=bulge_flux + disk_flux + knot_flux, bulge_flux=bulge_flux, disk_flux=disk_flux,
        knot_flux=knot_flux, bulge_n=np.where(is_irr, 0.0, bulge_n),
        bulge_hlr=np.where(is_irr, 0.0, bulge_hlr), disk_hlr=disk_hlr, bulge_fraction=bt,
        hlr=hlr, q=q, position_angle=pa, n_knots=n_knots.astype(np.int32), knot_offset=offset,
        arms=np.zeros(n_gal, np.int32), arm_pitch=np.zeros(n_gal))


def _draw_stars(rng, preset, shape, mean_count):
    """Star columns of a population, drawn after the galaxies."""
    ny, nx = shape
    nb = len(preset.bands)
    ref, zps = _reference(preset)
    n_star = int(rng.poisson(mean_count))
    smag = _truncated_power_law_mags(rng, n_star, *preset.star_mags, preset.star_slope)
    blue, red = (np.asarray(c, dtype=float) for c in preset.star_colors)
    t = rng.random(n_star)[:, None]
    soff = blue + t * (red - blue) + rng.normal(0.0, 0.03, (n_star, nb))
    soff[:, ref] = 0.0
    star_flux = _fluxes(10 ** (-0.4 * (smag - zps[ref])), soff, zps, ref)
    sx = rng.uniform(-0.5, nx - 0.5, n_star)
    sy = rng.uniform(-0.5, ny - 0.5, n_star)
    zeros, zero_flux = np.zeros(n_star), np.zeros((n_star, nb))
    return dict(
        is_star=np.ones(n_star, bool),
        morphology=np.full(n_star, MORPHOLOGY_CODE["point_source"], dtype=np.uint8),
        x=sx, y=sy, flux=star_flux, bulge_flux=zero_flux, disk_flux=zero_flux,
        knot_flux=zero_flux, bulge_n=zeros, bulge_hlr=zeros, disk_hlr=zeros,
        bulge_fraction=zeros, hlr=zeros, q=np.ones(n_star), position_angle=zeros,
        n_knots=np.zeros(n_star, np.int32), knot_offset=np.zeros((n_star, 2)),
        arms=np.zeros(n_star, np.int32), arm_pitch=zeros)


def _stamps(cat, models, preset, saturate):
    """Stamp boxes ``(y0, x0, y1, x1)`` of the objects (taller for bleed trails when asked)."""
    parts = (cat["flux"], cat["bulge_flux"], cat["disk_flux"], cat["knot_flux"],
             np.where(cat["bulge_n"] > 0, cat["bulge_n"], 1.0), cat["bulge_hlr"],
             cat["disk_hlr"], cat["q"])
    radius = stamp_radii(parts, models, preset.pixel_scale, preset.max_stamp_radius)
    cy = np.round(cat["y"]).astype(np.int64)
    cx = np.round(cat["x"]).astype(np.int64)
    half_height = radius
    if saturate:
        for b, model in enumerate(models):
            flux = cat["flux"][:, b]
            can_bleed = flux * model.psf_peak > model.saturation
            trail = np.ceil(flux / model.saturation / 2).astype(np.int64) + radius // 2
            half_height = np.where(can_bleed, np.maximum(half_height, trail), half_height)
        half_height = np.minimum(half_height, preset.max_stamp_radius)
    return np.stack([cy - half_height, cx - radius, cy + half_height + 1, cx + radius + 1],
                    axis=1)
