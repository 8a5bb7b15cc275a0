"""Survey presets: bands, PSFs, noise and source populations of a simulated field.

A preset states what a survey *is* (pixel scale, PSF per band, depth, sky,
units and zero points) and what the sky *holds* (magnitude ranges, number
count slopes, colours and sizes of galaxies and stars). Everything the
simulator draws comes from these numbers, so they are the place to tune
realism.

Noise is set from the 5-sigma point-source depth of each band: the per-pixel
noise of the sky-subtracted image is the one that gives that depth through
the band's PSF. The sky level and an effective gain (electrons per image
unit) then make the Poisson part; a small share of the variance is read
noise. Coadds are resampled images, so their sky noise is correlated between
neighbouring pixels: a band's ``noise_kernel`` is the side weight ``a`` of
the separable ``[a, 1, a]`` kernel that correlates it (0: white noise).
"""

from dataclasses import dataclass, field

from ..errors import InputError


@dataclass(frozen=True)
class Band:
    """One band of a preset.

    Parameters
    ----------
    name : str
        Short band name used in file names and truth columns (``g``, ``h``).
    filter : str
        FITS ``FILTER`` value (``DECam g``, ``F160W``).
    zeropoint : float
        AB magnitude of one image unit (``MAGZERO``).
    psf : tuple
        ``("moffat", fwhm_arcsec, beta)`` or
        ``("kolmogorov", fwhm_arcsec)``, ``("gaussian", fwhm_arcsec)`` or
        ``("airy", wavelength_nm, diameter_m, obscuration, blur_fwhm_arcsec)``.
    depth : float
        5-sigma point-source AB depth of the image.
    sky : float
        Sky surface brightness in AB mag/arcsec^2 (sets the Poisson share).
    noise_kernel : float
        Side weight ``a`` of the ``[a, 1, a]`` kernel correlating the sky noise.
    psf_shear : tuple
        ``(g1, g2)`` reduced shear applied to the PSF (an elongated PSF).
    """

    name: str
    filter: str
    zeropoint: float
    psf: tuple
    depth: float
    sky: float
    noise_kernel: float = 0.0
    psf_shear: tuple = (0.0, 0.0)


@dataclass(frozen=True)
class Preset:
    """A survey and the population of its sky.

    Magnitudes of galaxies and stars are drawn in ``ref_band``; the other
    bands follow from the colour offsets (``mag_band - mag_ref``) of each
    component. ``*_colors`` map a component to one offset per band.
    """

    name: str
    bands: tuple
    pixel_scale: float  # arcsec / pixel
    bunit: str
    ref_band: str
    center: tuple  # default (ra, dec) of the field centre, degrees
    read_variance_fraction: float
    # galaxies
    galaxy_density: float  # per arcmin^2 between the galaxy magnitude limits
    deep_density: float
    galaxy_mags: tuple  # (bright, faint) in ref_band
    deep_faint_extra: float  # --deep pushes the faint limit and the depth this much
    galaxy_slope: float  # dlog10 N / dm
    type_fractions: dict  # spheroid / disk / irregular share of galaxies
    size_at_mag: tuple  # (mag, median half-light radius arcsec, dlog10 r / dm)
    size_scatter_dex: float
    galaxy_colors: dict  # component -> offsets per band
    color_scatter: float
    # stars
    star_density: float
    star_mags: tuple
    star_slope: float
    star_colors: tuple  # (bluest offsets, reddest offsets)
    saturation_mag: float  # point source whose peak pixel just saturates
    max_stamp_radius: int = 256
    extras: dict = field(default_factory=dict)

    @property
    def band_names(self):
        return tuple(b.name for b in self.bands)


DECAM = Preset(
    name="decam",
    bands=(
        # Lanczos-resampled coadds: neighbouring pixels' noise correlates (0.23)
        Band("g", "DECam g", 22.5, ("moffat", 1.10, 3.5), 24.6, 22.0, noise_kernel=0.12),
        Band("r", "DECam r", 22.5, ("moffat", 1.00, 3.5), 24.0, 21.0, noise_kernel=0.12),
        Band("z", "DECam z", 22.5, ("moffat", 0.95, 3.5), 23.1, 19.9, noise_kernel=0.12),
    ),
    pixel_scale=0.262,
    bunit="nanomaggy",
    ref_band="r",
    center=(150.10, 2.20),
    read_variance_fraction=0.05,
    galaxy_density=30.0,
    deep_density=750.0,
    galaxy_mags=(16.0, 24.5),
    deep_faint_extra=2.5,
    galaxy_slope=0.33,
    type_fractions={"spheroid": 0.25, "disk": 0.55, "irregular": 0.20},
    size_at_mag=(20.0, 0.9, 0.10),
    size_scatter_dex=0.18,
    galaxy_colors={
        "bulge": (0.95, 0.0, -0.75),
        "disk": (0.55, 0.0, -0.40),
        "irregular": (0.30, 0.0, -0.15),
    },
    color_scatter=0.08,
    star_density=1.5,
    star_mags=(14.0, 24.0),
    star_slope=0.12,
    star_colors=((0.25, 0.0, -0.05), (1.45, 0.0, -1.10)),
    saturation_mag=16.5,
    max_stamp_radius=256,
)

HST = Preset(
    name="hst",
    bands=(
        # White noise: with drizzle-like correlated noise (a = 0.08 ACS, 0.2 IR) the
        # published Morpheus model agreed less with the truth (BENCHMARKS.md, Simulate).
        Band("v", "F606W", 26.49, ("airy", 606.0, 2.4, 0.33, 0.07), depth=28.6, sky=23.0),
        Band("z", "F850LP", 24.87, ("airy", 905.0, 2.4, 0.33, 0.08), depth=28.0, sky=22.6),
        Band("j", "F125W", 26.23, ("airy", 1250.0, 2.4, 0.33, 0.13), depth=27.9, sky=22.4),
        Band("h", "F160W", 25.95, ("airy", 1540.0, 2.4, 0.33, 0.14), depth=27.7, sky=22.3),
    ),
    pixel_scale=0.06,
    bunit="electrons/s",
    ref_band="h",
    center=(53.12, -27.80),
    read_variance_fraction=0.15,
    galaxy_density=150.0,
    deep_density=750.0,
    galaxy_mags=(18.0, 28.0),
    deep_faint_extra=2.0,
    galaxy_slope=0.28,
    type_fractions={"spheroid": 0.25, "disk": 0.50, "irregular": 0.25},
    size_at_mag=(22.0, 0.55, 0.09),
    size_scatter_dex=0.2,
    galaxy_colors={
        "bulge": (2.0, 1.0, 0.35, 0.0),
        "disk": (1.0, 0.5, 0.15, 0.0),
        "irregular": (0.35, 0.15, 0.05, 0.0),
    },
    color_scatter=0.1,
    star_density=1.5,
    star_mags=(17.0, 27.0),
    star_slope=0.10,
    star_colors=((0.4, 0.2, 0.05, 0.0), (3.2, 1.6, 0.45, 0.0)),
    saturation_mag=18.5,
    max_stamp_radius=384,
)

PRESETS = {p.name: p for p in (DECAM, HST)}


def get_preset(name):
    """Return the :class:`Preset` called ``name`` (``decam`` or ``hst``)."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[str(name).lower()]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
