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


def test_sections_put_together_give_the_whole_residual():
    from astrodask.symmetric_residual import residual_section

    rng = np.random.default_rng(5)
    shape = (70, 90)
    image = (_gaussian(shape, 30, 40, 7.0, 8000.0) + _gaussian(shape, 33, 50, 1.3, 90.0)
             + _gaussian(shape, 3, 85, 3.0, 900.0) + rng.normal(0, 0.5, shape))
    segmap = np.zeros(shape, np.int32)
    segmap[8:55, 15:66] = 2
    segmap[0:12, 76:90] = 5             # cut by the image's edge: mirrors fall outside
    objects = [(2, 30.2, 40.4), (5, 3.0, 85.0)]
    whole, region = symmetric_residual(image, segmap, objects)
    boxes = {2: (8, 15, 55, 66), 5: (0, 76, 12, 90)}
    with_boxes = [(i, y, x, boxes[i]) for i, y, x in objects]
    pieces = np.zeros(shape)
    for rows in (slice(0, 25), slice(25, 70)):
        for cols in (slice(0, 41), slice(41, 80), slice(80, 90)):
            part, changed = residual_section(lambda r, c: image[r, c], segmap[rows, cols],
                                             with_boxes, rows, cols, shape)
            assert np.array_equal(changed, region[rows, cols])
            pieces[rows, cols] = part
    assert np.allclose(pieces, whole, rtol=0, atol=1e-9)
    assert not np.array_equal(whole, image)


def test_a_symmetric_galaxy_off_the_pixel_grid_leaves_no_dipole_at_its_core():
    # centre between pixels: the pixel (y, x) mirrors onto (81 - y, 79 - x)
    shape = (82, 80)
    galaxy = _gaussian(shape, 40.5, 39.5, 3.0, 20000.0)
    segmap = np.zeros(shape, np.int32)
    segmap[10:72, 10:70] = 1
    residual, _ = symmetric_residual(galaxy, segmap, [(1, 40.5, 39.5)])
    # what stays (the template's smoothing) is as symmetric as the galaxy;
    # mirrored about the nearest pixel, one flank kept ~10% of the peak more
    assert np.abs(residual - residual[::-1, ::-1]).max() < 1e-3 * galaxy.max()
    assert np.abs(residual).max() > 0.05 * galaxy.max()
