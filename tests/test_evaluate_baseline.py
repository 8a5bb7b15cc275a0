"""SEP baseline: masks, star/galaxy rule and the Moffat half-light radius."""

import numpy as np
import pytest

from astrodask.baselines.sep_baseline import moffat_half_light_radius, sep_detect
from astrodask.evaluate import box_iou, boxes_from_masks

pytest.importorskip("sep")


def test_moffat_half_light_radius_encloses_half_the_flux():
    fwhm, beta = 4.0, 3.5
    r50 = moffat_half_light_radius(fwhm, beta)
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    r = np.linspace(0, 400, 400001)
    profile = (1 + (r / alpha) ** 2) ** -beta * r
    enclosed = np.cumsum(profile)
    assert enclosed[np.searchsorted(r, r50)] / enclosed[-1] == pytest.approx(0.5, abs=1e-3)
    # the FWHM really is the full width at half maximum
    assert (1 + (fwhm / 2 / alpha) ** 2) ** -beta == pytest.approx(0.5)


def test_sep_finds_stars_and_galaxies_with_masks():
    rng = np.random.default_rng(0)
    shape = (128, 128)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = rng.normal(0, 1, size=(3,) + shape)
    sigma_psf = 1.5
    stars = [(30, 30), (90, 40)]
    galaxies = [(40, 90), (100, 100)]
    for cy, cx in stars:
        image += 200 * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / sigma_psf ** 2)
    for cy, cx in galaxies:
        image += 30 * np.exp(-0.5 * (((yy - cy) / 6.0) ** 2 + ((xx - cx) / 3.0) ** 2))
    psf_r50 = sigma_psf * np.sqrt(2 * np.log(2))
    found = sep_detect(image.astype(np.float32), psf_r50, threshold=3.0)
    assert len(found) == 4
    np.testing.assert_array_equal(found.boxes, boxes_from_masks(found.masks))
    centres = np.array(stars + galaxies, float)
    truth_boxes = np.concatenate([centres - 2, centres + 2], axis=1)
    owner = box_iou(found.boxes, truth_boxes).argmax(axis=1)
    assert sorted(owner) == [0, 1, 2, 3]
    np.testing.assert_array_equal(found.class_ids, np.where(owner < 2, 1, 2))
    # masks are exclusive (a segmentation map)
    assert found.masks.sum(axis=0).max() == 1


def test_sep_catalog_gives_shapes_in_the_catalogs_convention():
    from astrodask.baselines.sep_baseline import sep_catalog

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    image = rng.normal(0, 1, size=(3, 128, 128))
    # a galaxy elongated along the line 30 deg counter-clockwise from +x (x = columns)
    t = np.radians(30.0)
    u = (xx - 60) * np.cos(t) + (yy - 64) * np.sin(t)
    v = -(xx - 60) * np.sin(t) + (yy - 64) * np.cos(t)
    image += 50 * np.exp(-0.5 * ((u / 6.0) ** 2 + (v / 2.5) ** 2))
    found = sep_catalog(image.astype(np.float32), 1.5)
    k = int(np.argmax(found["snr"]))
    assert found["theta_image"][k] == pytest.approx(30.0, abs=3.0)
    assert found["b_image"][k] / found["a_image"][k] == pytest.approx(2.5 / 6.0, abs=0.1)
    # SExtractor's FLUX_AUTO on SEP's own ellipse, segmentation and background map
    auto = sep_catalog(image.astype(np.float32), 1.5, auto=True)
    total = 50 * 2 * np.pi * 6.0 * 2.5
    assert auto["flux_auto"].shape == (len(auto["x"]), 3)
    assert auto["flux_auto"][k] == pytest.approx([total] * 3, rel=0.1)
    assert "flux_auto" not in found and auto["x"][k] == found["x"][k]
