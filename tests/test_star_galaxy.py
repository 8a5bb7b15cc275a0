"""PSF-aware star/galaxy: concentration against the PSF, the logistic model, the engine's use."""

import numpy as np
import pyarrow as pa
import pytest

from astrodask.classes import OBJECT_CODE
from astrodask.instances import SCHEMA, encode_mask
from astrodask.psf import BandPSF, aperture_radii, concentration, measure_psf
from astrodask.star_galaxy import (FEATURES, FEATURES_WITHOUT_FWHM, StarGalaxyModel,
                                   design_matrix, fit_star_galaxy, psf_reference,
                                   reclassify_instances, use_psf_classes)
from astrodask.sky import saturated_pixels


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


def test_design_matrix_holds_the_deficit_the_snr_and_the_fwhm():
    features = design_matrix([1.0, 0.6], [50.0, 0.5], 4.0)
    assert features.shape == (2, len(FEATURES))
    np.testing.assert_allclose(features[:, 0], [0.0, 0.4])
    np.testing.assert_allclose(features[:, 1], [np.log10(50), 0.0])  # S/N below 1 counts as 1
    np.testing.assert_allclose(features[:, 2], features[:, 0] * features[:, 1])
    np.testing.assert_allclose(features[:, 3], np.log10(4.0))
    np.testing.assert_allclose(features[:, 4], features[:, 0] * np.log10(4.0))
    # clipped to the fitted range: no extrapolation in FWHM
    np.testing.assert_allclose(design_matrix([0.9, 0.9], [20, 20], [1.0, 9.0],
                                             fwhm_range_px=(2.0, 7.5))[:, 3],
                               np.log10([2.0, 7.5]))
    old = design_matrix([1.0, 0.6], [50.0, 0.5], features=FEATURES_WITHOUT_FWHM)
    np.testing.assert_array_equal(old, features[:, :3])
    with pytest.raises(ValueError, match="need the PSF FWHM"):
        design_matrix([1.0], [50.0])


def synthetic_samples(n, seed, fwhm=None):
    """Relative concentrations of stars (about 1) and galaxies (less), noisier when faint.

    With ``fwhm`` (px, one per source), galaxies stand out from the PSF less
    under a wider PSF: their deficit falls by 0.4 per factor 10 of the FWHM
    from 2 px on.
    """
    rng = np.random.default_rng(seed)
    is_star = rng.uniform(size=n) < 0.3
    snr = 10 ** rng.uniform(1, 3, n)
    shrink = 0.0 if fwhm is None else 0.4 * np.log10(np.asarray(fwhm) / 2.0)
    relative = np.where(is_star, 1.0, 1.0 - rng.uniform(0.1, 0.6, n) + shrink) \
        + rng.normal(0, 1 / snr)
    return relative, snr, is_star


def test_fitted_model_separates_by_concentration_and_round_trips():
    relative, snr, is_star = synthetic_samples(3000, 1)
    fwhm = np.full(3000, 4.0)
    model = fit_star_galaxy(design_matrix(relative, snr, fwhm), is_star, fwhm_range_px=(4, 4))
    relative, snr, is_star = synthetic_samples(1000, 2)
    p = model.star_probability(relative, snr, fwhm_px=4.0)
    assert ((p >= 0.5) == is_star).mean() > 0.95
    again = StarGalaxyModel.from_dict(model.to_dict())
    assert again.fwhm_range_px == (4.0, 4.0) and again.features == FEATURES
    np.testing.assert_array_equal(again.star_probability(relative, snr, fwhm_px=4.0), p)
    assert np.isnan(model.star_probability([np.nan], [30.0], fwhm_px=4.0)[0])
    with pytest.raises(ValueError, match="both stars and galaxies"):
        fit_star_galaxy(design_matrix(relative[is_star], snr[is_star], 4.0), is_star[is_star])
    with pytest.raises(ValueError, match="need the PSF FWHM"):
        model.star_probability(relative, snr)


def test_the_fwhm_moves_the_cut_where_galaxies_stand_out_less():
    fwhm = 10 ** np.random.default_rng(30).uniform(np.log10(2), np.log10(8), 6000)
    relative, snr, is_star = synthetic_samples(6000, 3, fwhm)
    aware = fit_star_galaxy(design_matrix(relative, snr, fwhm), is_star)
    blind = fit_star_galaxy(design_matrix(relative, snr, features=FEATURES_WITHOUT_FWHM),
                            is_star, names=FEATURES_WITHOUT_FWHM)
    worst = {"aware": 1.0, "blind": 1.0}
    for width in (2.0, 8.0):
        relative, snr, is_star = synthetic_samples(2000, 4, np.full(2000, width))
        for name, star in (("aware", aware.star_probability(relative, snr, fwhm_px=width)),
                           ("blind", blind.star_probability(relative, snr))):
            star = star >= 0.5
            worst[name] = min(worst[name], star[is_star].mean(), (~star[~is_star]).mean())
    # the worse class at the worse seeing: one cut for every FWHM fails the wide PSF's galaxies
    assert worst["aware"] > worst["blind"] + 0.05


def test_a_card_fitted_before_the_fwhm_was_a_feature_still_reads():
    d = {"mean": [0, 0, 0], "scale": [1, 1, 1], "coefficients": [-50, 0, 0], "intercept": 10.0,
         "features": list(FEATURES_WITHOUT_FWHM)}
    model = StarGalaxyModel.from_dict(d)
    assert model.features == FEATURES_WITHOUT_FWHM and model.fwhm_range_px is None
    np.testing.assert_allclose(model.star_probability([1.0, 0.5], [30.0, 30.0]) >= 0.5,
                               [True, False])


def test_a_card_with_other_features_is_refused():
    d = StarGalaxyModel(mean=(0,) * 5, scale=(1,) * 5, coefficients=(0,) * 5,
                        intercept=0.0).to_dict()
    d["features"] = ["something", "else"]
    with pytest.raises(ValueError, match="other features"):
        StarGalaxyModel.from_dict(d)
    with pytest.raises(ValueError, match="one value per feature"):
        StarGalaxyModel(mean=(0,) * 3, scale=(1,) * 3, coefficients=(0,) * 3, intercept=0.0)


@pytest.mark.parametrize("mode, fwhm, use, why", [
    ("auto", 4.0, False, "lies within the 3.6-4.3 px the network was trained on"),
    ("auto", 8.4, True, "lies outside the network's training"),
    ("on", 4.0, True, "psf_classes is on"),
    ("off", 8.4, False, "psf_classes is off"),
    ("auto", None, False, "no measured PSF concentration"),
])
def test_auto_mode_uses_the_psf_only_outside_the_networks_training(mode, fwhm, use, why):
    card = {"star_galaxy": {"mean": [0, 0, 0]}, "trained_psf_fwhm_px": [3.6, 4.3]}
    got, reason = use_psf_classes(mode, card, fwhm)
    assert got is use and why in reason
    assert use_psf_classes("on", {}, 8.4) == (False, "the card has no star_galaxy model")


def test_the_warning_says_why_a_band_has_no_psf_concentration():
    from astrodask.star_galaxy import missing_psf

    few = "only 2 bright (S/N >= 30), clean source(s) (need 5) in 1 sampled block(s)"
    psf = {"g": BandPSF("g", reason=few), "r": BandPSF("r", fwhm_px=3.6, concentration=0.42),
           "z": BandPSF("z", reason=few), "i": BandPSF("i", fwhm_px=3.0, source="given")}
    assert missing_psf(psf, ["g", "r", "z", "i"]) == (
        f"g, z: not measured at ingest: {few}; i: given with --psf-fwhm, without a concentration")
    assert missing_psf(psf, ["r"]) is None
    assert missing_psf(None, ["g"]) == "the store holds no PSF: ingested by an earlier version"
    card = {"star_galaxy": {"mean": [0, 0, 0]}, "trained_psf_fwhm_px": [3.6, 4.3]}
    use, why = use_psf_classes("on", card, None, missing_psf(psf, ["g", "r"]))
    assert not use and why == ("the store has no measured PSF concentration in every band "
                               f"(g: not measured at ingest: {few})")


def test_psf_reference_needs_every_band():
    psf = {"g": BandPSF("g", fwhm_px=4.0, concentration=0.40),
           "r": BandPSF("r", fwhm_px=3.6, concentration=0.42),
           "z": BandPSF("z", fwhm_px=3.4, concentration=0.44)}
    assert psf_reference(psf, ["g", "r", "z"]) == {"fwhm_px": 3.6, "concentration": 0.42}
    psf["z"] = BandPSF("z", fwhm_px=3.4, source="given")
    assert psf_reference(psf, ["g", "r", "z"]) is None
    assert psf_reference(None, ["g"]) is None


def test_saturated_pixels_any_band_at_its_level():
    data = np.zeros((3, 4, 4), np.float32)
    data[0, 1, 1] = 100.0
    data[1, 2, 2] = 50.0
    data[2, 3, 3] = np.nan
    got = saturated_pixels(data, [100.0, None, 60.0])
    assert got.dtype == bool and np.argwhere(got).tolist() == [[1, 1]]
    assert saturated_pixels(data, [None, None, None]) is None


def window_table(boxes, class_ids, scores):
    rows = {name: [] for name in SCHEMA.names}
    for det, ((y0, x0, y1, x1), class_id, score) in enumerate(zip(boxes, class_ids, scores)):
        values = dict(tile_iy=0, tile_ix=0, det=det, class_id=class_id,
                      **{"class": ["background", "star", "galaxy"][class_id]},
                      score=score, y0=y0, x0=x0, y1=y1, x1=x1, area=(y1 - y0) * (x1 - x0),
                      anchor_y=(y0 + y1) // 2, anchor_x=(x0 + x1) // 2, in_core=True,
                      cut=False, centre_y=np.nan, centre_x=np.nan,
                      mask=encode_mask(np.ones((y1 - y0, x1 - x0), bool)))
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
    model = StarGalaxyModel(mean=(0,) * 3, scale=(1,) * 3, coefficients=(-50, 0, 0),
                            intercept=10.0, features=FEATURES_WITHOUT_FWHM)
    out = reclassify_instances(table, detection, origin, reference, model, noise=1.0)
    assert out.column("class").to_pylist() == ["star", "galaxy"]
    assert out.column("class_id").to_pylist() == [OBJECT_CODE["star"], OBJECT_CODE["galaxy"]]
    assert out.column("score").to_pylist() == table.column("score").to_pylist()
    flagged = detection.copy()
    flagged[:, :] = -np.inf
    kept = reclassify_instances(table, flagged, origin, reference, model, noise=1.0)
    assert kept.column("class").to_pylist() == ["galaxy", "galaxy"]
    # a saturated pixel in the second (extended) instance's mask makes it a star
    saturated = np.zeros(detection.shape, bool)
    saturated[90, 85] = True
    clipped = reclassify_instances(table, detection, origin, reference, model, noise=1.0,
                                   saturated=saturated)
    assert clipped.column("class").to_pylist() == ["star", "star"]


def test_a_neighbours_light_is_kept_out_of_a_stars_concentration():
    from astrodask.star_galaxy import instance_features

    fwhm = 8.0
    sigma = fwhm / 2.3548
    # a compact neighbour 11 px away, inside the star's outer aperture (12 px)
    detection = (gaussian((96, 96), 40, 40, sigma, 3000.0)
                 + gaussian((96, 96), 40, 51, 0.5 * sigma, 3000.0)).astype(np.float32)
    star_ratio = concentration(gaussian((64, 64), 32, 32, sigma), [32.0], [32.0], fwhm)[0][0]
    reference = {"fwhm_px": fwhm, "concentration": star_ratio}
    star, neighbour = (33, 33, 47, 47), (33, 47, 48, 56)
    alone = instance_features(window_table([star], [OBJECT_CODE["star"]], [0.9]),
                              detection, (0, 0), reference, noise=1.0)
    both = instance_features(window_table([star, neighbour], [OBJECT_CODE["star"]] * 2,
                                          [0.9, 0.9]), detection, (0, 0), reference, noise=1.0)
    # without the neighbour's instance its light fills the star's outer aperture
    assert alone["relative_concentration"][0] < 0.7
    assert both["relative_concentration"][0] > 0.85
    assert np.allclose(both["x"][0], alone["x"][0]) and both["rows"].tolist() == [0, 1]


def test_psf_classes_option_takes_auto_on_off_or_a_boolean():
    from astrodask.engine.run import resolve_config
    from astrodask.errors import InputError

    assert resolve_config().maskrcnn.psf_classes == "auto"
    assert resolve_config(maskrcnn={"psf_classes": True}).maskrcnn.psf_classes == "on"
    assert resolve_config(maskrcnn={"psf_classes": False}).maskrcnn.psf_classes == "off"
    with pytest.raises(InputError, match="psf_classes must be auto, on or off, got 'maybe'"):
        resolve_config(maskrcnn={"psf_classes": "maybe"})


def test_fit_from_samples_uses_each_fields_fwhm_and_records_their_range():
    from astrodask.train.star_galaxy import fit_from_samples

    fwhm = np.repeat([2.5, 6.0], 1500)
    relative, snr, is_star = synthetic_samples(3000, 5, fwhm)
    true_snr = snr.copy()
    true_snr[:10] = 2.0                                   # under min_snr: left out
    saturated = np.zeros(3000, bool)
    saturated[-5:] = True                                 # left out: the engine calls them stars
    model = fit_from_samples({"relative_concentration": relative, "snr": snr,
                              "fwhm_px": fwhm, "is_star": is_star, "true_snr": true_snr,
                              "saturated": saturated})
    assert model.features == FEATURES and model.fwhm_range_px == (2.5, 6.0)
    p = model.star_probability(relative, snr, fwhm_px=fwhm)
    assert ((p >= 0.5) == is_star).mean() > 0.8   # galaxies under the 6 px PSF overlap the stars
