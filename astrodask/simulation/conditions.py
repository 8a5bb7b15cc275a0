"""Observing conditions that vary from field to field: seeing, PSF shape, pixel scale, depth.

A preset fixes one survey; real data vary around it. :class:`Conditions`
states how one field departs from its preset (the seeing and the family
and shape of its PSF, the pixel scale, the depth, the sky level and how
correlated the noise is, the star density, cosmic rays and saturation), and
:func:`apply_conditions` turns a preset into the variant that draws such a
field. :func:`draw_conditions` picks conditions at random (seeded) from
ranges such as :data:`TRAINING_RANGES`, which is how the training pools are
domain-randomised; :data:`HELD_OUT` names settings outside those ranges,
for evaluation only.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import InputError
from .presets import get_preset

PSF_FAMILIES = ("moffat", "kolmogorov", "gaussian")
_CONDITIONS_TAG = 7


@dataclass(frozen=True)
class Conditions:
    """How one simulated field departs from its preset.

    Parameters
    ----------
    seeing : float, optional
        PSF FWHM (arcsec) in the preset's reference band; the other bands keep
        the preset's ratios to it. None keeps the preset's PSFs.
    psf : {"moffat", "kolmogorov", "gaussian"}
        PSF family (with ``seeing``).
    beta : float
        Moffat index (small: strong wings).
    shear : tuple
        ``(g1, g2)`` of the PSF (elongation from guiding, optics).
    pixel_scale : float, optional
        Arcsec per pixel (None: the preset's).
    depth_offset : float
        Magnitudes added to every band's 5-sigma depth (positive: deeper).
    sky_offset : float
        Magnitudes added to the sky surface brightness (positive: darker sky,
        less Poisson noise from the sources' share).
    noise_kernel : float, optional
        Side weight of the kernel correlating the sky noise (0: white; None:
        the preset's).
    star_density : float, optional
        Stars per arcmin² (None: the preset's).
    cosmic_rays : float
        Cosmic-ray tracks per megapixel per band.
    saturate : bool
        Saturate bright stars, with bleed trails.
    """

    seeing: float = None
    psf: str = "moffat"
    beta: float = 3.5
    shear: tuple = (0.0, 0.0)
    pixel_scale: float = None
    depth_offset: float = 0.0
    sky_offset: float = 0.0
    noise_kernel: float = None
    star_density: float = None
    cosmic_rays: float = 0.0
    saturate: bool = False

    def __post_init__(self):
        if self.psf not in PSF_FAMILIES:
            raise InputError(f"unknown PSF family {self.psf!r}; choose one of {', '.join(PSF_FAMILIES)}")
        for name in ("seeing", "pixel_scale"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise InputError(f"{name} must be > 0, got {value!r}")
        if not self.beta > 1.1:
            raise InputError(f"Moffat beta must be > 1.1, got {self.beta!r}")

    def to_dict(self):
        """Plain JSON-ready values."""
        out = asdict(self)
        out["shear"] = list(self.shear)
        return out


def apply_conditions(preset, conditions):
    """The preset that draws a field under ``conditions`` (a new frozen :class:`Preset`).

    Parameters
    ----------
    preset : str or Preset
    conditions : Conditions or dict

    Returns
    -------
    Preset
        Same name as ``preset`` (files and truth still name the survey).
    """
    preset = get_preset(preset)
    if isinstance(conditions, dict):
        conditions = Conditions(**conditions)
    ref = preset.band_names.index(preset.ref_band)
    ref_fwhm = _fwhm_of(preset.bands[ref].psf)
    bands = []
    for band in preset.bands:
        psf = band.psf
        if conditions.seeing is not None:
            if ref_fwhm is None or _fwhm_of(band.psf) is None:
                raise InputError(f"preset {preset.name} has diffraction PSFs; seeing cannot be set")
            fwhm = conditions.seeing * _fwhm_of(band.psf) / ref_fwhm
            psf = _psf_spec(conditions.psf, fwhm, conditions.beta)
        kernel = band.noise_kernel if conditions.noise_kernel is None else conditions.noise_kernel
        bands.append(replace(band, psf=psf, psf_shear=tuple(float(g) for g in conditions.shear),
                             depth=band.depth + conditions.depth_offset,
                             sky=band.sky + conditions.sky_offset, noise_kernel=float(kernel)))
    scale = preset.pixel_scale if conditions.pixel_scale is None else float(conditions.pixel_scale)
    return replace(preset, bands=tuple(bands), pixel_scale=scale)


def with_conditions(preset, conditions, star_density=None, cosmic_rays=0.0, saturate=False):
    """Preset and drawing arguments of a field under ``conditions`` (None: as given).

    Returns ``(preset, conditions, star_density, cosmic_rays, saturate)``: the
    conditions' star density, cosmic rays and saturation replace the
    arguments, ``conditions`` comes back as a :class:`Conditions` (or None).
    """
    if conditions is None:
        return preset, None, star_density, cosmic_rays, saturate
    if isinstance(conditions, dict):
        conditions = Conditions(**conditions)
    if conditions.star_density is not None:
        star_density = conditions.star_density
    return (apply_conditions(preset, conditions), conditions, star_density,
            conditions.cosmic_rays, conditions.saturate)


def _fwhm_of(spec):
    return float(spec[1]) if spec[0] in PSF_FAMILIES else None


def _psf_spec(family, fwhm, beta):
    if family == "moffat":
        return ("moffat", float(fwhm), float(beta))
    return (family, float(fwhm))


#: Ranges the Mask R-CNN's training pool is drawn from (``decam``). Keys are
#: :class:`Conditions` fields; a pair is a uniform range, a list a choice.
TRAINING_RANGES = {
    "seeing": (0.6, 2.0),
    "psf": ["moffat", "moffat", "kolmogorov"],
    "beta": (2.0, 5.0),
    "shear_max": 0.06,
    # half the fields at the survey's own pixel scale, the rest anywhere in the range
    "pixel_scale": [None, (0.18, 0.45)],
    "depth_offset": (-0.75, 0.75),
    "sky_offset": (-0.75, 0.75),
    "noise_kernel": (0.0, 0.25),
    "star_density": (0.5, 8.0),
    "cosmic_rays": [0.0, 0.0, (20.0, 200.0)],
    "saturate": [False, True],
}

#: Settings outside :data:`TRAINING_RANGES` (or of a family it leaves out),
#: for evaluation only. Every other condition stays at the preset's value.
HELD_OUT = {
    "seeing_2.2": Conditions(seeing=2.2, psf="moffat", beta=3.5),
    "seeing_0.5": Conditions(seeing=0.5, psf="moffat", beta=3.5),
    "gaussian_psf": Conditions(seeing=1.3, psf="gaussian"),
    "pixel_scale_0.6": Conditions(seeing=1.4, psf="moffat", beta=3.0, pixel_scale=0.6),
    "deeper_1.2mag": Conditions(depth_offset=1.2),
    "shallower_1.2mag": Conditions(depth_offset=-1.2),
}


def _pick(rng, spec):
    """One value from a range spec: a pair is uniform, a list a choice (of specs), else as is."""
    if isinstance(spec, list):
        return _pick(rng, spec[int(rng.integers(len(spec)))])
    if isinstance(spec, tuple):
        return float(rng.uniform(spec[0], spec[1]))
    return spec


def draw_conditions(seed, ranges=None):
    """Conditions drawn at random from ``ranges`` (default :data:`TRAINING_RANGES`).

    Parameters
    ----------
    seed : int
        Same seed, same conditions.
    ranges : dict, optional

    Returns
    -------
    Conditions
    """
    ranges = TRAINING_RANGES if ranges is None else ranges
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _CONDITIONS_TAG]))
    values = {}
    for key in ("seeing", "psf", "beta", "pixel_scale", "depth_offset", "sky_offset",
                "noise_kernel", "star_density", "cosmic_rays", "saturate"):
        if key in ranges:
            values[key] = _pick(rng, ranges[key])
    g_max = float(ranges.get("shear_max", 0.0))
    if g_max > 0:
        g = g_max * np.sqrt(rng.uniform())
        angle = rng.uniform(0.0, np.pi)
        values["shear"] = (float(g * np.cos(2 * angle)), float(g * np.sin(2 * angle)))
    return Conditions(**values)
