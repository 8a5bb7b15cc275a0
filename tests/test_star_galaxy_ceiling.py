"""benchmarks/star_galaxy_ceiling.py: the ceiling and the PSF-matched statistic behave."""

import numpy as np
from scipy import ndimage as ndi

from benchmark_scripts import load_benchmark


def load():
    return load_benchmark("star_galaxy_ceiling")


def moffat(radius, fwhm, beta=3.0):
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    image = (1 + (xx ** 2 + yy ** 2) / alpha ** 2) ** -beta
    return image / image.sum()


def test_ceiling_is_one_when_separable_and_a_half_when_not():
    ceiling = load().ceiling
    is_star = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert ceiling(np.r_[np.zeros(50), np.ones(50)], is_star) == 1.0
    assert ceiling(np.r_[np.arange(50), np.arange(50)].astype(float), is_star) < 0.6
    # NaN scores are left out; one class alone has no ceiling
    assert ceiling(np.r_[np.zeros(50), np.ones(49), np.nan], is_star) == 1.0
    assert np.isnan(ceiling(np.zeros(10), np.ones(10, bool)))


def test_spread_is_zero_for_the_psf_and_grows_with_the_source_size():
    module = load()
    fwhm, radius = 4.0, 10
    psf = moffat(radius, fwhm)
    extended = module.extended_psf(psf, fwhm)
    assert abs(module.spread(5.0 * psf, psf, extended)) < 1e-12
    values = [module.spread(ndi.gaussian_filter(psf, sigma, mode="constant"), psf, extended)
              for sigma in (0.5, 1.0, 2.0)]
    assert 0 < values[0] < values[1] < values[2]
    assert np.isnan(module.spread(-psf, psf, extended))


def test_stamps_are_centred_on_sub_pixel_positions():
    module = load()
    image = np.zeros((41, 41))
    image[20, 20] = 1.0
    image = ndi.gaussian_filter(image, 1.5)
    moved = ndi.shift(image, (0.3, -0.4), order=3)
    cut = module.stamp(moved, 20 - 0.4, 20 + 0.3, 5)
    centre = ndi.center_of_mass(cut)
    assert np.allclose(centre, (5, 5), atol=0.05)
    assert module.stamp(image, 2.0, 20.0, 5) is None
