"""Per-band PSFs and noise levels derived from a preset.

:func:`band_models` turns the survey numbers of a :class:`~.presets.Preset`
into what the drawing and noise code need: a GalSim PSF, the per-pixel noise
of the sky-subtracted image, the sky level and effective gain for the
Poisson part, the read noise, the saturation level and a PSF envelope that
tells how far out a source of a given flux stays above a given level.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .presets import get_preset

#: GalSim accuracy settings used for every profile: a little looser than the
#: defaults, which keeps FFTs small; far below the noise of any preset.
GSPARAMS_KW = dict(folding_threshold=1e-2, maxk_threshold=2e-3)


@dataclass(frozen=True)
class BandModel:
    """Everything the simulator needs to know about one band."""

    name: str
    filter: str
    zeropoint: float
    psf: object  # galsim.GSObject, unit flux, without the pixel
    fwhm_px: float
    sigma: float  # per-pixel noise of the sky-subtracted image (image units)
    noise_kernel: np.ndarray  # 1-D [a, 1, a] kernel correlating the sky noise, unit norm
    sky: float  # sky level per pixel before subtraction (image units)
    gain: float  # electrons per image unit (effective, as in a coadd)
    read_noise: float  # image units
    saturation: float  # image units per pixel
    psf_peak: float  # fraction of a point source's flux in its brightest pixel
    envelope_r: np.ndarray  # radii (px), increasing
    envelope: np.ndarray  # max PSF pixel fraction at radius >= envelope_r
    loss_r: np.ndarray  # radii (px), increasing
    loss_per_noise: np.ndarray  # PSF flux outside loss_r / (sqrt(pi) * loss_r), decreasing

    def psf_radius(self, flux_over_level):
        """Radius (px) beyond which a point source of ``flux/level`` stays below level."""
        ratio = np.atleast_1d(np.asarray(flux_over_level, dtype=float))
        # envelope is non-increasing in r: find the first radius where it drops below 1/ratio
        idx = np.searchsorted(-self.envelope, -1.0 / np.maximum(ratio, 1e-30), side="left")
        idx = np.clip(idx, 0, len(self.envelope_r) - 1)
        return self.envelope_r[idx]

    def complete_radius(self, flux, tolerance):
        """Radius (px) outside which a point source loses less than ``tolerance`` of its
        aperture noise (``sigma * sqrt(pi) * r``) through the PSF wings."""
        target = tolerance * self.sigma / np.maximum(np.atleast_1d(flux), 1e-30)
        idx = np.searchsorted(-self.loss_per_noise, -target, side="left")
        return self.loss_r[np.clip(idx, 0, len(self.loss_r) - 1)]


def gsparams():
    """The shared :class:`galsim.GSParams`."""
    import galsim

    return galsim.GSParams(**GSPARAMS_KW)


def _make_psf(spec, shear=(0.0, 0.0)):
    psf = _round_psf(spec)
    if shear[0] or shear[1]:
        psf = psf.shear(g1=float(shear[0]), g2=float(shear[1]))
    return psf


def _round_psf(spec):
    import galsim

    gsp = gsparams()
    kind = spec[0]
    if kind == "moffat":
        _, fwhm, beta = spec
        return galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=gsp)
    if kind == "kolmogorov":
        _, fwhm = spec
        return galsim.Kolmogorov(fwhm=fwhm, gsparams=gsp)
    if kind == "gaussian":
        _, fwhm = spec
        return galsim.Gaussian(fwhm=fwhm, gsparams=gsp)
    if kind == "airy":
        _, wavelength_nm, diameter_m, obscuration, blur = spec
        lam_over_diam = wavelength_nm * 1e-9 / diameter_m * 206264.806
        airy = galsim.Airy(lam_over_diam=lam_over_diam, obscuration=obscuration, gsparams=gsp)
        return galsim.Convolve(airy, galsim.Gaussian(fwhm=blur, gsparams=gsp), gsparams=gsp)
    raise ValueError(f"unknown PSF model {kind!r}")


def _psf_image(psf, pixel_scale, radius):
    import galsim

    n = 2 * radius + 1
    image = galsim.ImageD(n, n, scale=pixel_scale)
    psf.drawImage(image=image, method="auto")
    arr = image.array / image.array.sum()
    return np.clip(arr, 0.0, None)


def _envelope(arr):
    n = arr.shape[0]
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - c, xx - c).ravel()
    v = arr.ravel()
    order = np.argsort(-r, kind="stable")
    env = np.maximum.accumulate(v[order])[::-1]
    radii = r[order][::-1]
    return radii, env


def band_models(preset, deep=False):
    """Return a tuple of :class:`BandModel`, one per band of ``preset``.

    ``deep`` makes the images deeper by half of the preset's
    ``deep_faint_extra`` magnitudes (an ultra-deep field is deeper imaging of
    a denser sky). Results are cached per preset (a variant made by
    :func:`~.conditions.apply_conditions` is its own entry).
    """
    return _band_models(_PresetKey(get_preset(preset)), bool(deep))


class _PresetKey:
    """Hashable stand-in for a preset (presets hold dicts), equal when their values are."""

    def __init__(self, preset):
        self.preset = preset
        self.text = repr(preset)

    def __hash__(self):
        return hash(self.text)

    def __eq__(self, other):
        return isinstance(other, _PresetKey) and self.text == other.text


def correlated_noise_factor(psf, kernel):
    """How much correlated noise raises the PSF-fit flux error over white noise.

    For noise ``sigma * (k x k) * white`` (``k`` of unit norm), the error of
    a PSF-weighted flux is ``sigma * sqrt(n_eff)`` times this factor:
    ``sqrt(sum((psf * K)^2) / sum(psf^2))`` with ``K`` the 2-D kernel.
    """
    from scipy.ndimage import correlate1d

    smoothed = correlate1d(correlate1d(psf, kernel, axis=0, mode="constant"), kernel, axis=1,
                           mode="constant")
    return float(np.sqrt(np.sum(smoothed ** 2) / np.sum(psf ** 2)))


def _wing_loss(arr):
    n = arr.shape[0]
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - c, xx - c)
    radii = np.arange(1.0, c + 1.0)
    ring = np.bincount(np.minimum(np.ceil(r).astype(int), c + 1).ravel(), weights=arr.ravel())
    inside = np.cumsum(ring)[1:c + 1]
    outside = np.clip(1.0 - inside, 0.0, None)
    loss = outside / (np.sqrt(np.pi) * radii)
    return radii, np.minimum.accumulate(loss)


@lru_cache(maxsize=32)
def _band_models(key, deep):
    preset = key.preset
    deeper = 0.5 * preset.deep_faint_extra if deep else 0.0
    models = []
    for band in preset.bands:
        psf = _make_psf(band.psf, band.psf_shear)
        arr = _psf_image(psf, preset.pixel_scale, preset.max_stamp_radius)
        n_eff = 1.0 / float(np.sum(arr ** 2))
        flux5 = 10 ** (-0.4 * (band.depth + deeper - band.zeropoint))
        kernel = np.array([band.noise_kernel, 1.0, band.noise_kernel])
        kernel /= np.sqrt(np.sum(kernel ** 2))
        sigma = flux5 / 5.0 / np.sqrt(n_eff) / correlated_noise_factor(arr, kernel)
        sky = 10 ** (-0.4 * (band.sky - band.zeropoint)) * preset.pixel_scale ** 2
        read_var = preset.read_variance_fraction * sigma ** 2
        gain = sky / (sigma ** 2 - read_var)
        peak = float(arr.max())
        saturation = 10 ** (-0.4 * (preset.saturation_mag - band.zeropoint)) * peak
        radii, env = _envelope(arr)
        loss_r, loss = _wing_loss(arr)
        fwhm_px = psf.calculateFWHM() / preset.pixel_scale
        models.append(BandModel(
            name=band.name, filter=band.filter, zeropoint=band.zeropoint, psf=psf,
            fwhm_px=float(fwhm_px), sigma=float(sigma), noise_kernel=kernel,
            sky=float(sky), gain=float(gain),
            read_noise=float(np.sqrt(read_var)), saturation=float(saturation),
            psf_peak=peak, envelope_r=radii, envelope=env,
            loss_r=loss_r, loss_per_noise=loss,
        ))
    return tuple(models)
