"""PSF-aware star/galaxy: concentration against the PSF, the logistic model, the engine's use."""

import numpy as np
import pyarrow as pa
import pytest

from astrodask.classes import OBJECT_CODE
from astrodask.instances import SCHEMA, encode_mask
from astrodask.psf import BandPSF, aperture_radii, concentration, measure_psf
from astrodask.star_galaxy import (FEATURES, StarGalaxyModel, design_matrix, fit_star_galaxy,
                                   psf_reference, reclassify_instances)


def gaussian(shape, y, x, sigma, flux=1000.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return flux / (2 * np.pi * sigma ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2)
                                                    / (2 * sigma ** 2))


def test_apertures_follow_the_fwhm_with_a_floor_of_one_pixel():
    assert aperture_radii(4.0) == (2.0, 6.0)
    assert aperture_radii(1.2) == (1.0, 3.0)


@pytest.mark.parametrize("fwhm", [3.0, 6.0, 10.0])
def test_a_point_source_has_the_same_concentration_at_any_seeing(fwhm):
    sigma = fwhm / 2.3548
    image = gaussian((96, 96), 48.3, 47.6, sigma)
    ratio, error, snr = concentration(image, [47.6], [48.3], fwhm, noise=0.01)
    # A Gaussian holds half its flux within FWHM/2 and all but 2^-9 within 1.5 FWHM,
    # whatever its width (up to its sampling by the pixels)
    assert ratio[0] == pytest.approx(0.5 / (1 - 2 ** -9), rel=0.05)
    assert error[0] < 0.01 and snr[0] > 100
    wider = gaussian((96, 96), 48.3, 47.6, 1.6 * sigma)
    assert concentration(wider, [47.6], [48.3], fwhm)[0][0] < 0.75 * ratio[0]


def test_flagged_pixels_are_left_out_and_an_empty_aperture_gives_nan():
    image = gaussian((64, 64), 32, 32, 2.0)
    mask = np.zeros(image.shape, bool)
    mask[:, 34:] = True
    image[mask] = 1e6
    ratio, _, _ = concentration(image, [32.0, 10.0], [32.0, 10.0], 4.7, mask=mask)
    assert 0 < ratio[0] < 1
    assert np.isnan(concentration(np.zeros((32, 32)), [16.0], [16.0], 4.0)[0][0])


def test_measured_psf_concentration_makes_stars_one_and_galaxies_less():
    from astrodask.simulation import simulate_field
    from astrodask.simulation.conditions import Conditions

    field = simulate_field((512, 512), seed=5, conditions=Conditions(
        seeing=2.0, psf="kolmogorov", star_density=40), density=10)
    truth = field.truth.to_pydict()
    band = 1
    psf = measure_psf(field.images[band], band=field.bands[band], pixel_scale=field.pixel_scale)
    assert psf.concentration is not None and 0.2 < psf.concentration < 0.7
    ratio, _, snr = concentration(field.images[band] - np.median(field.images[band]),
                                  truth["x"], truth["y"], psf.fwhm_px,
                                  noise=field.sigma[field.bands[band]])
    relative = ratio / psf.concentration
    kind = np.asarray(truth["class"])
    stars = relative[(snr > 100) & (kind == "star")]
    galaxies = relative[(snr > 30) & (kind == "galaxy")]
    assert len(stars) >= 50 and len(galaxies) >= 10
    # (a crowded field: some apertures hold a brighter neighbour)
    assert np.median(stars) == pytest.approx(1.0, abs=0.08)
    assert np.median(galaxies) < 0.85


def test_design_matrix_takes_one_fwhm_or_one_per_source():
    one = design_matrix([0.9, 0.1], [1.0, 0.6], [50.0, 20.0], 7.6, 3.8)
    each = design_matrix([0.9, 0.1], [1.0, 0.6], [50.0, 20.0], [7.6, 7.6], 3.8)
    assert one.shape == (2, len(FEATURES))
    np.testing.assert_allclose(one, each)
    assert one[0, FEATURES.index("fwhm_offset")] == pytest.approx(np.log(2))
    assert one[1, FEATURES.index("concentration_deficit")] == pytest.approx(0.4)


def synthetic_samples(n, seed):
    """A network that says "star" for whatever is small in pixels, and the truth."""
    rng = np.random.default_rng(seed)
    fwhm = rng.choice([2.0, 3.8, 8.0], n)
    is_star = rng.uniform(size=n) < 0.3
    snr = 10 ** rng.uniform(1, 3, n)
    relative = np.where(is_star, 1.0, rng.uniform(0.4, 0.9, n)) + rng.normal(0, 3 / snr)
    # in its own seeing (3.8 px) the network is right; at 8 px it calls everything a galaxy
    network = np.where(fwhm == 3.8, np.where(is_star, 0.9, 0.1), 0.1)
    return network, relative, snr, fwhm, is_star


def test_fitted_model_learns_the_psf_where_the_network_fails():
    network, relative, snr, fwhm, is_star = synthetic_samples(3000, 1)
    model = fit_star_galaxy(design_matrix(network, relative, snr, fwhm, 3.8), is_star, 3.8)
    network, relative, snr, fwhm, is_star = synthetic_samples(1000, 2)
    p = model.star_probability(network, relative, snr, fwhm)
    far = fwhm == 8.0
    hybrid = ((p >= 0.5) == is_star)[far].mean()
    alone = ((network >= 0.5) == is_star)[far].mean()
    assert hybrid > 0.85 and hybrid > alone + 0.15
    again = StarGalaxyModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.star_probability(network, relative, snr, fwhm), p)


def test_without_a_concentration_the_networks_probability_stands():
    model = StarGalaxyModel(mean=(0,) * 7, scale=(1,) * 7, coefficients=(0, -5, 0, 0, 0, 0, 0),
                            intercept=0.0, trained_fwhm_px=3.8)
    p = model.star_probability([0.8, 0.8], [np.nan, 1.0], [30.0, 30.0], 3.8)
    assert p[0] == pytest.approx(0.8) and p[1] == pytest.approx(0.5)


def test_a_card_with_other_features_is_refused():
    d = StarGalaxyModel(mean=(0,) * 7, scale=(1,) * 7, coefficients=(0,) * 7, intercept=0.0,
                        trained_fwhm_px=3.8).to_dict()
    d["features"] = ["something", "else"]
    with pytest.raises(ValueError, match="other features"):
        StarGalaxyModel.from_dict(d)


def test_psf_reference_needs_every_band():
    psf = {"g": BandPSF("g", fwhm_px=4.0, concentration=0.40),
           "r": BandPSF("r", fwhm_px=3.6, concentration=0.42),
           "z": BandPSF("z", fwhm_px=3.4, concentration=0.44)}
    assert psf_reference(psf, ["g", "r", "z"]) == {"fwhm_px": 3.6, "concentration": 0.42}
    psf["z"] = BandPSF("z", fwhm_px=3.4, source="given")
    assert psf_reference(psf, ["g", "r", "z"]) is None
    assert psf_reference(None, ["g"]) is None


def window_table(boxes, class_ids, scores):
    rows = {name: [] for name in SCHEMA.names}
    for det, ((y0, x0, y1, x1), class_id, score) in enumerate(zip(boxes, class_ids, scores)):
        values = dict(tile_iy=0, tile_ix=0, det=det, class_id=class_id,
                      **{"class": ["background", "star", "galaxy"][class_id]},
                      score=score, y0=y0, x0=x0, y1=y1, x1=x1, area=(y1 - y0) * (x1 - x0),
                      anchor_y=(y0 + y1) // 2, anchor_x=(x0 + x1) // 2, in_core=True,
                      cut=False, mask=encode_mask(np.ones((y1 - y0, x1 - x0), bool)))
        for name, value in values.items():
            rows[name].append(value)
    return pa.table(rows, schema=SCHEMA)


def test_engine_reclassifies_a_point_source_the_network_called_a_galaxy():
    fwhm = 8.0
    sigma = fwhm / 2.3548
    rng = np.random.default_rng(0)
    detection = (gaussian((128, 128), 40, 40, sigma, 3000.0)
                 + gaussian((128, 128), 90, 85, 2.5 * sigma, 3000.0)
                 + rng.normal(0, 1, (128, 128))).astype(np.float32)
    star_ratio = concentration(gaussian((64, 64), 32, 32, sigma), [32.0], [32.0], fwhm)[0][0]
    reference = {"fwhm_px": fwhm, "concentration": star_ratio}
    origin = (1000, 2000)
    table = window_table([(1020, 2020, 1061, 2061), (1060, 2050, 1121, 2121)],
                         [OBJECT_CODE["galaxy"], OBJECT_CODE["galaxy"]], [0.9, 0.9])
    # relies on the concentration alone: a deficit of 0.2 or more means galaxy
    model = StarGalaxyModel(mean=(0,) * 7, scale=(1,) * 7,
                            coefficients=(0, -50, 0, 0, 0, 0, 0), intercept=10.0,
                            trained_fwhm_px=3.8)
    out = reclassify_instances(table, detection, origin, reference, model, noise=1.0)
    assert out.column("class").to_pylist() == ["star", "galaxy"]
    assert out.column("class_id").to_pylist() == [OBJECT_CODE["star"], OBJECT_CODE["galaxy"]]
    assert out.column("score").to_pylist() == table.column("score").to_pylist()
    flagged = detection.copy()
    flagged[:, :] = -np.inf
    kept = reclassify_instances(table, flagged, origin, reference, model, noise=1.0)
    assert kept.column("class").to_pylist() == ["galaxy", "galaxy"]
