"""Second-moment shapes of catalog objects (a_image, b_image, theta_image), chunk by chunk."""

import numpy as np
import pytest

from astrodask.measure import Accumulator, chunk_sums


def elliptical_gaussian(shape, y, x, sigma_major, sigma_minor, angle_deg, flux=1000.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    t = np.radians(angle_deg)
    u = (xx - x) * np.cos(t) + (yy - y) * np.sin(t)
    v = -(xx - x) * np.sin(t) + (yy - y) * np.cos(t)
    return flux * np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))


def measure(image, labels, chunks, origin=(0, 0)):
    accumulator = Accumulator(int(labels.max()), 1)
    flags = np.zeros((1,) + image.shape, np.uint8)
    for ys, xs in chunks:
        accumulator.add(chunk_sums(labels[ys, xs], origin[0] + ys.start, origin[1] + xs.start,
                                   image[None, ys, xs], flags[:, ys, xs]))
    return accumulator.columns(["r"], noise=[1.0])


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_an_elliptical_gaussian_gives_its_axes_and_angle_whatever_the_chunks(angle):
    image = elliptical_gaussian((80, 100), 41.3, 52.7, 6.0, 3.0, angle)
    labels = np.ones(image.shape, np.int64)
    whole = measure(image, labels, [(slice(0, 80), slice(0, 100))])
    split = measure(image, labels, [(slice(0, 40), slice(0, 55)), (slice(0, 40), slice(55, 100)),
                                    (slice(40, 80), slice(0, 100))])
    for measured in (whole, split):
        assert measured["a_image"][0] == pytest.approx(6.0, rel=0.01)
        assert measured["b_image"][0] == pytest.approx(3.0, rel=0.01)
        # counter-clockwise from +x, in (-90, 90] (an axis: angles 180 degrees apart agree)
        theta = measured["theta_image"][0]
        assert -90 < theta <= 90
        assert (theta - angle + 90) % 180 - 90 == pytest.approx(0.0, abs=0.2)
    for name in ("a_image", "b_image"):
        assert split[name][0] == pytest.approx(whole[name][0], rel=1e-9)
    turn = (split["theta_image"][0] - whole["theta_image"][0] + 90) % 180 - 90
    assert turn == pytest.approx(0.0, abs=1e-6)


def test_far_from_the_origin_a_one_pixel_object_and_a_dark_one():
    image = np.zeros((20, 20))
    image[5, 5] = 10.0                         # object 1: one bright pixel
    labels = np.zeros((20, 20), np.int64)
    labels[4:7, 4:7] = 1
    labels[12:15, 12:15] = 2                   # object 2: no positive light
    image[12:15, 12:15] = -1.0
    # mosaic coordinates of 10^5 px: the raw sums must not lose the moments
    measured = measure(image, labels, [(slice(0, 20), slice(0, 20))], origin=(99_990, 99_990))
    assert measured["a_image"][0] == pytest.approx(0.0, abs=1e-3)
    assert measured["b_image"][0] == pytest.approx(0.0, abs=1e-3)
    assert np.isnan(measured["a_image"][1]) and np.isnan(measured["theta_image"][1])
    round_source = elliptical_gaussian((40, 40), 20, 20, 4.0, 4.0, 0.0)
    far = measure(round_source, np.ones((40, 40), np.int64), [(slice(0, 40), slice(0, 40))],
                  origin=(123_456, 98_765))
    assert far["a_image"][0] == pytest.approx(4.0, rel=0.01)
    assert far["b_image"][0] == pytest.approx(4.0, rel=0.01)
