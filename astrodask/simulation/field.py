"""In-memory simulated fields for training and tests: :func:`simulate_field`."""

from dataclasses import dataclass

import numpy as np

from .conditions import with_conditions
from .render import FieldPlan
from .truth import ObjectMask, truth_table


@dataclass
class SimulatedField:
    """A simulated multi-band field with its truth.

    Attributes
    ----------
    images : ndarray, float32, (band, y, x)
        Noisy, sky-subtracted images in ``bunit``.
    noiseless : ndarray or None
        Noiseless images (same shape), when asked for.
    bands : tuple of str
    truth : pyarrow.Table
        One row per object, the columns of ``truth.parquet``.
    label_map : ndarray, int32, (y, x)
        Exclusive truth labels: 0 = no object, else the object's ``id``.
    morphology_map : ndarray, uint8, (y, x)
        Codes of :data:`astrodask.classes.MORPHOLOGY_CLASSES`; 4 = background.
    wcs : astropy.wcs.WCS
    zeropoints, sigma : dict
        AB zero point (``MAGZERO``) and per-pixel noise of each band.
    """

    images: np.ndarray
    noiseless: object
    bands: tuple
    truth: object
    label_map: np.ndarray
    morphology_map: np.ndarray
    wcs: object
    preset: str
    pixel_scale: float
    bunit: str
    zeropoints: dict
    sigma: dict
    seed: int
    _masks: dict

    def object_masks(self, min_area=1):
        """Per-object truth masks (they may overlap), sorted by id.

        Parameters
        ----------
        min_area : int
            Leave out objects whose mask has fewer pixels (objects below the
            mask threshold have none).

        Returns
        -------
        list of ObjectMask
            ``(id, box, mask)``: ``box = (y0, x0, y1, x1)`` (exclusive ends)
            and ``mask`` the bool crop over it.
        """
        out = []
        for oid in sorted(self._masks):
            t = self._masks[oid]
            if t.mask is not None and int(t.mask.sum()) >= min_area:
                out.append(ObjectMask(oid, t.mask_box, t.mask))
        return out

    def full_mask(self, object_id):
        """The mask of one object as a bool image of the whole field."""
        out = np.zeros(self.label_map.shape, dtype=bool)
        t = self._masks[int(object_id)]
        if t.mask is not None:
            y0, x0, y1, x1 = t.mask_box
            out[y0:y1, x0:x1] = t.mask
        return out


def simulate_field(shape=(512, 512), preset="decam", seed=0, density=None, star_density=None,
                   deep=False, noiseless=False, cosmic_rays=0.0, saturate=False,
                   mask_sigma=1.0, mask_fraction=None, center=None, conditions=None,
                   pairs=0.0, large_galaxies=0.0):
    """Simulate a field in memory, with its truth.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` in pixels.
    preset : {"decam", "hst"}
        Survey preset (:mod:`astrodask.simulation.presets`).
    seed : int
        Same seed and arguments, same field, to the bit.
    density, star_density : float, optional
        Galaxies / stars per arcmin^2 (defaults from the preset).
    deep : bool
        Ultra-deep field (~750 galaxies/arcmin^2, deeper images).
    noiseless : bool
        Keep the noiseless images in ``.noiseless``.
    cosmic_rays : float
        Mean cosmic-ray tracks per megapixel per band (0: none).
    saturate : bool
        Clip pixels at each band's saturation level, with bleed trails along
        columns (truth masks and fluxes ignore it).
    mask_sigma : float
        Truth-mask floor in detection-image sigma.
    mask_fraction : dict or float, optional
        Per-class share of the peak a masked pixel needs
        (``{"star": 0.001, "galaxy": 0.005}`` by default; one number: both classes).
    center : tuple, optional
        ``(ra, dec)`` of the field centre, degrees.
    conditions : Conditions or dict, optional
        Seeing, PSF, pixel scale, depth... of this field
        (:class:`~.conditions.Conditions`); its star density, cosmic rays and
        saturation replace those arguments.
    pairs : float
        Share of the galaxies placed next to another one (blended pairs for
        training; :func:`~.population.place_companions`); 0: positions
        uniform over the field.
    large_galaxies : float
        Large, bright galaxies added per arcmin^2, most of them spirals with
        star-forming knots along their arms
        (:func:`~.population.add_large_galaxies`); 0: none added.

    Returns
    -------
    SimulatedField

    Examples
    --------
    >>> from astrodask import simulate_field
    >>> field = simulate_field(shape=(64, 64), preset="decam", seed=1)
    >>> field.images.shape, field.bands, field.label_map.shape
    ((3, 64, 64), ('g', 'r', 'z'), (64, 64))
    >>> field.truth.num_rows > 0, set(field.truth.column("class").to_pylist()) <= {"star", "galaxy"}
    (True, True)
    """
    preset, _, star_density, cosmic_rays, saturate = with_conditions(
        preset, conditions, star_density, cosmic_rays, saturate)
    plan = FieldPlan(shape, preset=preset, seed=seed, density=density, star_density=star_density,
                     deep=deep, mask_sigma=mask_sigma, mask_fraction=mask_fraction, center=center,
                     saturate=saturate, cosmic_rays=cosmic_rays, pairs=pairs,
                     large_galaxies=large_galaxies)
    ny, nx = plan.shape
    result = plan.render((0, 0, ny, nx))
    images = plan.add_noise(result.noiseless, (0, 0))
    return SimulatedField(
        images=images,
        noiseless=result.noiseless if noiseless else None,
        bands=plan.bands,
        truth=truth_table(plan, result.owned, result.pairs),
        label_map=result.label,
        morphology_map=plan.morphology_lookup()[result.label],
        wcs=plan.wcs,
        preset=plan.preset.name,
        pixel_scale=plan.preset.pixel_scale,
        bunit=plan.preset.bunit,
        zeropoints={m.name: m.zeropoint for m in plan.models},
        sigma={m.name: m.sigma for m in plan.models},
        seed=plan.seed,
        _masks=result.owned,
    )


def _field_from_kwargs(kwargs):
    return simulate_field(**kwargs)


def simulate_fields(seeds, workers=1, **kwargs):
    """Simulate one field per seed, in order, optionally in parallel processes.

    Parameters
    ----------
    seeds : iterable of int
    workers : int
        Processes to draw in (1: here). The fields do not depend on it.
    **kwargs
        Any other argument of :func:`simulate_field` (``shape``, ``preset``, ...).

    Yields
    ------
    SimulatedField
        In the order of ``seeds``; at most ``2 * workers`` wait in memory.
    """
    from .tiles import check_workers, ordered_map

    workers = check_workers(workers)
    jobs = (dict(kwargs, seed=int(seed)) for seed in seeds)
    yield from ordered_map(_field_from_kwargs, jobs, workers)
