"""Symmetric templates take a bright galaxy out and leave its faint companion."""

import numpy as np
import pytest

from astrodask.symmetric_residual import symmetric_residual


def _gaussian(shape, y, x, sigma, flux):
    yy, xx = np.indices(shape)
    return flux / (2 * np.pi * sigma**2) * np.exp(-((yy - y)**2 + (xx - x)**2) / (2 * sigma**2))


def test_the_companion_stays_and_the_galaxy_goes():
    shape = (80, 80)
    galaxy = _gaussian(shape, 40, 40, 6.0, 5000.0)
    companion = _gaussian(shape, 40, 52, 1.2, 100.0)
    segmap = np.zeros(shape, np.int32)
    segmap[20:61, 20:61] = 3            # the galaxy's segment holds the companion
    segmap[0:5, 0:5] = 7                # another object, not taken out
    image = galaxy + companion
    residual, region = symmetric_residual(image, segmap, [(3, 40.0, 40.0)])
    assert np.array_equal(region, segmap == 3)
    # outside the segment nothing changes
    assert np.array_equal(residual[segmap != 3], image[segmap != 3])
    # the companion keeps most of its light, the galaxy leaves little of its own
    near = _gaussian(shape, 40, 52, 1.2, 1.0) > 1e-3
    assert residual[near].sum() > 0.8 * companion[near].sum()
    far = (segmap == 3) & ~(_gaussian(shape, 40, 52, 4.0, 1.0) > 1e-4) \
        & ~(_gaussian(shape, 40, 28, 4.0, 1.0) > 1e-4)
    # (the template is smoothed: a few per cent of the peak stay at the core, the
    # light is conserved)
    assert np.abs(residual[far]).max() < 0.08 * galaxy.max()
    assert abs(residual[far].sum()) < 0.05 * galaxy[far].sum()
    # a detector would see one peak, at the companion
    peak = np.unravel_index(np.argmax(residual), shape)
    assert abs(peak[0] - 40) <= 1 and abs(peak[1] - 52) <= 1


def test_mirrors_off_the_image_use_the_pixel_itself_and_bad_inputs_are_refused():
    image = _gaussian((30, 30), 2, 2, 2.0, 100.0)
    segmap = np.zeros((30, 30), np.int32)
    segmap[0:12, 0:12] = 1
    residual, region = symmetric_residual(image, segmap, [(1, 2.0, 2.0), (9, 5.0, 5.0)])
    assert region.sum() == 144 and np.isfinite(residual).all()
    untouched, none = symmetric_residual(image, segmap, [])
    assert not none.any() and np.array_equal(untouched, image)
    with pytest.raises(ValueError, match="differ in shape"):
        symmetric_residual(image, segmap[:10], [(1, 2.0, 2.0)])
