"""In-memory simulated fields: truth, masks, label maps, noise and determinism."""

import numpy as np
import pytest

from astrodask.classes import MORPHOLOGY_CODE, OBJECT_CODE
from astrodask.errors import InputError
from astrodask.simulation import simulate_field, simulate_fields
from astrodask.simulation.draw import bleed_columns, draw_object
from astrodask.simulation.render import DEFAULT_MASK_FRACTION, FieldPlan


@pytest.fixture(scope="module")
def decam():
    return simulate_field((384, 320), preset="decam", seed=3, density=60, star_density=8,
                          noiseless=True)


@pytest.fixture(scope="module")
def hst():
    return simulate_field((256, 256), preset="hst", seed=5, noiseless=True)


def test_field_layout_and_dtypes(decam):
    assert decam.bands == ("g", "r", "z")
    assert decam.images.shape == (3, 384, 320) and decam.images.dtype == np.float32
    assert decam.noiseless.shape == decam.images.shape
    assert decam.label_map.dtype == np.int32 and decam.label_map.shape == (384, 320)
    assert decam.morphology_map.dtype == np.uint8
    t = decam.truth.to_pydict()
    assert t["id"] == list(range(1, decam.truth.num_rows + 1))
    assert set(t["class"]) <= {"star", "galaxy"}
    for cls, code in zip(t["class"], t["class_code"]):
        assert OBJECT_CODE[cls] == code
    for morph, code in zip(t["morphology"], t["morphology_code"]):
        assert MORPHOLOGY_CODE[morph] == code
    for name in ("flux_g", "mag_z", "ra", "dec", "bulge_n", "hlr", "ellipticity", "n_neighbours"):
        assert name in t


def test_masks_follow_noiseless_flux_and_label_map(decam):
    # redraw every object alone, as the simulator states its rule
    plan = FieldPlan((384, 320), preset="decam", seed=3, density=60, star_density=8)
    shape = decam.label_map.shape
    masks = {m.id: m for m in decam.object_masks()}
    assert len(masks) > 20
    total = np.zeros_like(decam.noiseless)
    best = np.zeros(shape, np.float32)
    owner = np.zeros(shape, np.int32)
    is_star = dict(zip(decam.truth.column("id").to_pylist(),
                       np.array(decam.truth.column("class").to_pylist()) == "star"))
    full = {}
    for i in range(len(plan.population)):
        stamp = draw_object(plan.population, i, plan.models, plan.preset.pixel_scale)
        y0, x0, y1, x1 = stamp.box
        total[:, y0:y1, x0:x1] += stamp.images
        det = np.zeros(shape, np.float32)
        det[y0:y1, x0:x1] = stamp.detection(plan.weights)
        oid = i + 1
        peak = det.max()
        frac = DEFAULT_MASK_FRACTION["star" if is_star[oid] else "galaxy"]
        expected = det >= max(1.0, frac * peak) if peak >= 1.0 else np.zeros(shape, bool)
        got = decam.full_mask(oid)
        np.testing.assert_array_equal(got, expected)
        full[oid] = expected
        assert (oid in masks) == bool(expected.any())
        take = expected & (det > best)
        owner[take] = oid
        best[take] = det[take]
    np.testing.assert_allclose(total, decam.noiseless, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(owner, decam.label_map)
    # morphology map agrees with the owners' classes
    morph = dict(zip(decam.truth.column("id").to_pylist(),
                     decam.truth.column("morphology_code").to_pylist()))
    expected = np.full(shape, MORPHOLOGY_CODE["background"], np.uint8)
    for oid in np.unique(owner[owner > 0]):
        expected[owner == oid] = morph[int(oid)]
    np.testing.assert_array_equal(decam.morphology_map, expected)
    # a pixel's owner holds it in its own mask; every masked pixel has an owner
    union = np.zeros(shape, bool)
    for m in masks.values():
        y0, x0, y1, x1 = m.box
        union[y0:y1, x0:x1] |= m.mask
    np.testing.assert_array_equal(union, decam.label_map > 0)
    # neighbours: objects whose masks share a pixel with the object's mask
    stack = np.array([full[oid] for oid in sorted(full)]).reshape(len(full), -1).astype(np.int32)
    shared = (stack @ stack.T) > 0
    expected_neighbours = shared.sum(axis=1) - np.diag(shared)
    np.testing.assert_array_equal(decam.truth.column("n_neighbours").to_numpy(),
                                  expected_neighbours)
    assert expected_neighbours.max() >= 1


def test_noise_level_matches_preset(decam, hst):
    for field in (decam, hst):
        residual = field.images - field.noiseless
        for b, band in enumerate(field.bands):
            sky = residual[b][field.label_map == 0]
            assert abs(np.std(sky) / field.sigma[band] - 1) < 0.1
            assert abs(np.mean(sky)) < 0.05 * field.sigma[band]


def test_same_seed_same_field_other_seed_differs():
    a = simulate_field((128, 128), preset="decam", seed=11)
    b = simulate_field((128, 128), preset="decam", seed=11)
    c = simulate_field((128, 128), preset="decam", seed=12)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.truth.equals(b.truth)
    assert a.images.tobytes() != c.images.tobytes()


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        simulate_field((64, 64), preset="sdss")
    with pytest.raises(InputError):
        simulate_field((64, 64), density=-1)
    with pytest.raises(InputError):
        simulate_field((0, 64))


def test_bleed_columns_conserves_charge_and_fills_to_full_well():
    image = np.zeros((12, 3), np.float32)
    image[5, 1] = 10.0
    image[6, 1] = 4.0
    bleed_columns(image, np.float32(3.0))
    column = image[:, 1]
    assert column.sum() == pytest.approx(14.0)
    assert column.max() == 3.0
    # 8 units of excess: 4 up (rows 4, 3 full; row 2 gets 1... ) and 4 down
    np.testing.assert_allclose(column, [0, 0, 0, 1, 3, 3, 3, 3, 1, 0, 0, 0])
    assert not image[:, [0, 2]].any()


def test_saturation_bleed_trails_and_cosmic_rays():
    kw = dict(preset="decam", seed=8, density=20, star_density=80)
    plain = simulate_field((256, 256), **kw, noiseless=True)
    sat = simulate_field((256, 256), **kw, noiseless=True, saturate=True, cosmic_rays=40)
    plan = FieldPlan((256, 256), **kw)
    levels = np.array([m.saturation for m in plan.models], np.float32)
    assert np.all(sat.images.max(axis=(1, 2)) <= levels)
    assert np.all((sat.images == levels[:, None, None]).sum(axis=(1, 2)) > 0)
    # bleeding moves charge within a stamp tall enough for the trail (off the field it is lost)
    sat_plan = FieldPlan((256, 256), **kw, saturate=True)
    bled = 0
    for i in range(len(sat_plan.population)):
        stamp = draw_object(sat_plan.population, i, sat_plan.models, 0.262)
        if tuple(sat_plan.population.stamp[i]) != stamp.box:
            continue
        before = stamp.images.sum(axis=(1, 2))
        for b, model in enumerate(sat_plan.models):
            bleed_columns(stamp.images[b], np.float32(model.saturation))
        np.testing.assert_allclose(stamp.images.sum(axis=(1, 2)), before, rtol=1e-5)
        bled += bool(np.any(stamp.images.max(axis=(1, 2)) >= levels))
    assert bled >= 1
    # the truth does not change
    assert sat.truth.column("flux_g").equals(plain.truth.column("flux_g"))
    # cosmic rays only touch the noisy images, far above the noise
    hot = (sat.images - sat.noiseless) / np.array(list(sat.sigma.values()))[:, None, None]
    assert (hot > 20).sum() > 20


def test_simulate_fields_in_processes_equals_one_by_one():
    fields = list(simulate_fields([4, 7], workers=2, shape=(96, 128), preset="hst"))
    for seed, field in zip([4, 7], fields):
        alone = simulate_field((96, 128), preset="hst", seed=seed)
        assert field.seed == seed
        assert field.images.tobytes() == alone.images.tobytes()
        assert field.truth.equals(alone.truth)
    with pytest.raises(InputError):
        next(simulate_fields([1], workers=0))
