"""Observing conditions: preset variants, seeded random draws, held-out settings, training pools."""

import json

import numpy as np
import pytest

from astrodask.errors import InputError
from astrodask.simulation import simulate_field
from astrodask.simulation.conditions import (HELD_OUT, TRAINING_RANGES, Conditions,
                                             apply_conditions, draw_conditions)
from astrodask.simulation.optics import band_models
from astrodask.simulation.presets import DECAM


def test_apply_conditions_sets_seeing_family_scale_and_depth():
    variant = apply_conditions("decam", Conditions(seeing=2.0, psf="kolmogorov", pixel_scale=0.4,
                                                   depth_offset=-1.0, shear=(0.05, 0.0)))
    assert variant.name == "decam" and variant.pixel_scale == 0.4
    r = variant.band_names.index("r")
    assert variant.bands[r].psf == ("kolmogorov", 2.0)
    # the other bands keep the preset's ratio to the reference band
    g = variant.band_names.index("g")
    assert variant.bands[g].psf[1] == pytest.approx(2.0 * 1.10 / 1.00)
    assert variant.bands[r].depth == pytest.approx(DECAM.bands[r].depth - 1.0)
    models = band_models(variant)
    # FWHM in pixels follows seeing and pixel scale (shear widens it a little)
    assert models[r].fwhm_px == pytest.approx(2.0 / 0.4, rel=0.08)
    # shallower images are noisier; the preset itself is not touched (cached apart)
    assert models[r].sigma > band_models("decam")[r].sigma
    assert band_models("decam")[r].fwhm_px == pytest.approx(1.0 / 0.262, rel=0.02)


def test_draw_conditions_is_seeded_and_inside_the_ranges():
    draws = [draw_conditions(seed) for seed in range(60)]
    assert draws[7] == draw_conditions(7) and draws[7] != draws[8]
    lo, hi = TRAINING_RANGES["seeing"]
    assert all(lo <= c.seeing <= hi for c in draws)
    assert {c.psf for c in draws} == {"moffat", "kolmogorov"}
    scales = [c.pixel_scale for c in draws]
    assert any(s is None for s in scales) and any(s is not None for s in scales)
    assert all(np.hypot(*c.shear) <= TRAINING_RANGES["shear_max"] + 1e-12 for c in draws)


def test_held_out_settings_lie_outside_the_training_ranges():
    lo, hi = TRAINING_RANGES["seeing"]
    assert HELD_OUT["seeing_2.2"].seeing > hi and HELD_OUT["seeing_0.5"].seeing < lo
    assert HELD_OUT["gaussian_psf"].psf not in TRAINING_RANGES["psf"]
    assert HELD_OUT["pixel_scale_0.6"].pixel_scale > TRAINING_RANGES["pixel_scale"][1][1]
    d_lo, d_hi = TRAINING_RANGES["depth_offset"]
    assert HELD_OUT["deeper_1.2mag"].depth_offset > d_hi
    assert HELD_OUT["shallower_1.2mag"].depth_offset < d_lo


def test_simulate_field_under_conditions():
    plain = simulate_field(shape=(96, 96), seed=4)
    coarse = simulate_field(shape=(96, 96), seed=4, conditions=Conditions(pixel_scale=0.5))
    assert coarse.pixel_scale == 0.5
    # a coarser pixel covers more sky: more objects in the same number of pixels
    assert len(coarse.truth) > len(plain.truth)
    again = simulate_field(shape=(96, 96), seed=4, conditions={"pixel_scale": 0.5})
    assert np.array_equal(coarse.images, again.images)


def test_bad_conditions_are_refused():
    with pytest.raises(InputError, match="PSF family"):
        Conditions(seeing=1.0, psf="airy")
    with pytest.raises(InputError, match="seeing"):
        Conditions(seeing=-1.0)
    with pytest.raises(InputError, match="diffraction"):
        apply_conditions("hst", Conditions(seeing=1.0))


def test_training_pool_records_its_randomised_part(tmp_path):
    from astrodask.train.maskrcnn import build_pool

    pool = build_pool(tmp_path, 3, 64, seed=50, randomised=2, log=lambda line: None)
    assert len(pool) == 3
    info = json.loads((tmp_path / "pool.json").read_text())
    assert [part["seeds"] for part in info["parts"]] == [[50, 50], [51, 52]]
    assert "conditions" in info["parts"][1] and info["parts"][1]["condition_ranges"]["seeing"] == [0.6, 2.0]
    with pytest.raises(InputError, match="randomised"):
        build_pool(tmp_path / "x", 2, 64, seed=0, randomised=3, log=lambda line: None)


def test_training_pool_puts_its_deep_fields_first(tmp_path):
    from astrodask.simulation import simulate_field
    from astrodask.train.maskrcnn import build_pool
    from astrodask.train.maskrcnn_data import example_from_field

    pool = build_pool(tmp_path, 3, 64, seed=60, deep=1, randomised=1, log=lambda line: None)
    info = json.loads((tmp_path / "pool.json").read_text())
    assert [part["seeds"] for part in info["parts"]] == [[60, 60], [61, 61], [62, 62]]
    assert info["parts"][0]["deep"] and "deep" not in info["parts"][1]
    deep = example_from_field(simulate_field((64, 64), seed=60, deep=True))
    plain = example_from_field(simulate_field((64, 64), seed=61))
    assert np.array_equal(pool[0].image, deep.image)
    assert np.array_equal(pool[1].image, plain.image)
    with pytest.raises(InputError, match="deep fields"):
        build_pool(tmp_path / "x", 2, 64, seed=0, deep=2, randomised=1, log=lambda line: None)


def test_augmentation_adds_gradients_and_bad_columns_to_the_image_only():
    from astrodask.train.maskrcnn_data import Example, augment

    image = np.zeros((32, 32, 3), np.float32)
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 10:14, 10:14] = True
    example = Example(image, np.array([[10, 10, 14, 14]], np.float32), np.array([2]), masks)
    plain = augment(example, np.random.default_rng(3), 0.0, 0.0)
    assert not plain.image.any()
    both = augment(example, np.random.default_rng(3), 0.0, 0.0, 1.0, 1.0)
    # a plane per band plus one column far off it
    column_offsets = np.abs(np.diff(both.image, axis=1)).max(axis=(0, 2))
    assert column_offsets.max() >= 1.0 and np.count_nonzero(column_offsets >= 1.0) <= 2
    assert np.ptp(both.image) > 0 and both.masks.sum() == masks.sum()


def test_evaluation_conditions_by_name_and_the_sep_psf_scale():
    from astrodask.train.maskrcnn_eval import psf_half_light_radius, resolve_conditions

    assert resolve_conditions("seeing_2.2") is HELD_OUT["seeing_2.2"]
    assert resolve_conditions(None) is None
    assert resolve_conditions({"seeing": 1.0}).seeing == 1.0
    with pytest.raises(InputError, match="held-out settings"):
        resolve_conditions("full_moon")
    plain = psf_half_light_radius("decam")
    assert psf_half_light_radius(apply_conditions("decam", HELD_OUT["seeing_2.2"])) == \
        pytest.approx(plain * 2.2, rel=0.05)
    # a PSF family without a Moffat index still has a scale for SEP
    assert psf_half_light_radius(apply_conditions("decam", HELD_OUT["gaussian_psf"])) > plain


def test_simulate_to_files_records_the_conditions(tmp_path):
    from astrodask.simulation import simulate

    manifest = simulate(tmp_path / "f", size=(256, 256), seed=3,
                        conditions=Conditions(seeing=1.5, pixel_scale=0.3))
    assert manifest["conditions"]["seeing"] == 1.5 and manifest["pixel_scale"] == 0.3
    assert manifest["psf_fwhm_px"]["r"] == pytest.approx(1.5 / 0.3, rel=0.03)


def test_mask_fraction_takes_one_number_or_a_dict():
    one = simulate_field(shape=(64, 64), seed=5, mask_fraction=0.01)
    same = simulate_field(shape=(64, 64), seed=5, mask_fraction={"star": 0.01, "galaxy": 0.01})
    assert np.array_equal(one.label_map, same.label_map)
    with pytest.raises(InputError, match="mask_fraction"):
        simulate_field(shape=(64, 64), seed=5, mask_fraction="wide")
    with pytest.raises(InputError, match="star and galaxy"):
        simulate_field(shape=(64, 64), seed=5, mask_fraction={"quasar": 0.1})
