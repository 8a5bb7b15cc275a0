"""Simulated populations follow their configured distributions; photometry matches truth."""

import numpy as np
import pytest
from scipy import stats

from astrodask.classes import MORPHOLOGY_CODE
from astrodask.simulation import simulate_field
from astrodask.simulation.population import make_population
from astrodask.simulation.presets import get_preset
from astrodask.simulation.render import FieldPlan


def _power_law_cdf(bright, faint, slope):
    lo, hi = 10 ** (slope * bright), 10 ** (slope * faint)
    return lambda m: (10 ** (slope * np.asarray(m)) - lo) / (hi - lo)


@pytest.mark.parametrize("name, deep", [("decam", False), ("hst", False), ("hst", True)])
def test_counts_and_magnitudes_follow_the_preset(name, deep):
    preset = get_preset(name)
    shape = (3000, 3000)
    pop = make_population(shape, preset, seed=17, deep=deep)
    area = shape[0] * shape[1] * (preset.pixel_scale / 60) ** 2
    ref = preset.band_names.index(preset.ref_band)
    zp = preset.bands[ref].zeropoint
    mag = zp - 2.5 * np.log10(pop.flux[:, ref])
    bright, faint = preset.galaxy_mags
    faint += preset.deep_faint_extra if deep else 0.0
    density = preset.deep_density if deep else preset.galaxy_density
    for is_star, expected, (lo, hi), slope in (
            (False, density * area, (bright, faint), preset.galaxy_slope),
            (True, preset.star_density * area, preset.star_mags, preset.star_slope)):
        sel = pop.is_star == is_star
        # Poisson number within 4 sigma
        assert abs(sel.sum() - expected) < 4 * np.sqrt(expected)
        assert mag[sel].min() >= lo - 1e-9 and mag[sel].max() <= hi + 1e-9
        assert stats.kstest(mag[sel], _power_law_cdf(lo, hi, slope)).pvalue > 1e-3
    # galaxy types: irregulars by their share; spheroid/disk split by bulge fraction
    galaxies = pop.morphology[~pop.is_star]
    n = len(galaxies)
    for kind in ("spheroid", "disk", "irregular"):
        share = preset.type_fractions[kind] / sum(preset.type_fractions.values())
        got = np.sum(galaxies == MORPHOLOGY_CODE[kind])
        assert abs(got - share * n) < 4 * np.sqrt(n * share * (1 - share))
    assert np.all(pop.morphology[pop.is_star] == MORPHOLOGY_CODE["point_source"])
    bt = pop.bulge_fraction[~pop.is_star]
    spheroid = galaxies == MORPHOLOGY_CODE["spheroid"]
    assert np.all(bt[spheroid] >= 0.5) and np.all(bt[galaxies == MORPHOLOGY_CODE["disk"]] < 0.5)
    # fainter galaxies are smaller (size-magnitude relation)
    gal_mag, hlr = mag[~pop.is_star], pop.hlr[~pop.is_star]
    assert np.median(hlr[gal_mag < np.median(gal_mag)]) > np.median(hlr[gal_mag >= np.median(gal_mag)])


def test_density_options_scale_counts():
    preset = get_preset("decam")
    a = make_population((2000, 2000), preset, seed=1, density=10, star_density=0)
    b = make_population((2000, 2000), preset, seed=1, density=40, star_density=5)
    area = 4e6 * (0.262 / 60) ** 2
    assert a.is_star.sum() == 0
    assert abs((~b.is_star).sum() / (~a.is_star).sum() - 4) < 0.6
    assert abs(b.is_star.sum() - 5 * area) < 4 * np.sqrt(5 * area)


def test_pairs_move_only_positions_and_bring_galaxies_together():
    from scipy.spatial import cKDTree

    from astrodask.errors import InputError

    preset = get_preset("hst")
    plain = make_population((1500, 1500), preset, seed=4)
    paired = make_population((1500, 1500), preset, seed=4, pairs=0.5)
    again = make_population((1500, 1500), preset, seed=4, pairs=0.5)
    gal = ~plain.is_star
    # the same objects (ids follow position, so rows are compared sorted by flux)
    key = lambda p: np.lexsort((p.flux[:, 0],))
    for name in ("flux", "hlr", "q", "morphology", "is_star"):
        np.testing.assert_array_equal(getattr(plain, name)[key(plain)],
                                      getattr(paired, name)[key(paired)])
    np.testing.assert_array_equal(paired.x, again.x)
    moved = ~np.isin(paired.x, plain.x)
    share = moved[~paired.is_star].mean()
    assert 0.4 < share < 0.6
    assert not moved[paired.is_star].any()

    def close_pairs(p):
        g = np.c_[p.x, p.y][~p.is_star]
        d, _ = cKDTree(g).query(g, k=2)
        size = np.maximum(p.hlr[~p.is_star] / preset.pixel_scale, 3.0)
        return np.mean(d[:, 1] < 2.5 * size)

    assert close_pairs(paired) > close_pairs(plain) + 0.25
    assert gal.sum() == (~paired.is_star).sum()
    with pytest.raises(InputError, match="pair fraction"):
        make_population((100, 100), preset, seed=4, pairs=1.5)


def test_large_galaxies_are_added_without_changing_the_others():
    from astrodask.errors import InputError
    from astrodask.simulation.population import LARGE_HLR, LARGE_MAGS

    preset = get_preset("decam")
    shape = (1500, 1500)
    plain = make_population(shape, preset, seed=6)
    more = make_population(shape, preset, seed=6, large_galaxies=3.0)
    again = make_population(shape, preset, seed=6, large_galaxies=3.0)
    np.testing.assert_array_equal(more.flux, again.flux)
    old = np.isin(more.x, plain.x)
    assert old.sum() == len(plain)
    np.testing.assert_array_equal(np.sort(more.flux[old, 1]), np.sort(plain.flux[:, 1]))
    added = ~old
    area = shape[0] * shape[1] * (preset.pixel_scale / 60) ** 2
    assert abs(added.sum() - 3.0 * area) < 4 * np.sqrt(3.0 * area)
    assert not more.is_star[added].any()
    zp = preset.bands[1].zeropoint
    mag = zp - 2.5 * np.log10(more.flux[added, 1])
    assert mag.min() >= LARGE_MAGS[0] - 1e-9 and mag.max() <= LARGE_MAGS[1] + 1e-9
    assert (more.disk_hlr[added] >= LARGE_HLR[0]).all() and (more.disk_hlr[added] <= LARGE_HLR[1]).all()
    spirals = added & (more.arms > 0)
    # most are spirals: disks (B/T < 0.5) whose knots lie along 2-4 arms
    assert spirals.sum() > 0.5 * added.sum()
    assert set(np.unique(more.arms[spirals])) <= {2, 3, 4}
    assert (more.morphology[spirals] == MORPHOLOGY_CODE["disk"]).all()
    assert (more.knot_flux[spirals, 1] > 0).all() and (more.n_knots[spirals] >= 25).all()
    assert not plain.arms.any() and not more.arms[old].any()
    with pytest.raises(InputError, match="large-galaxy"):
        FieldPlan((64, 64), preset="decam", seed=1, large_galaxies=-1.0)


def test_spiral_knots_keep_the_flux_and_lie_on_the_disk():
    from astrodask.simulation.draw import draw_object

    plan = FieldPlan((400, 400), preset="decam", seed=8, large_galaxies=20.0)
    pop = plan.population
    inside = (pop.stamp[:, 0] >= 0) & (pop.stamp[:, 1] >= 0) & (pop.stamp[:, 2] <= 400) \
        & (pop.stamp[:, 3] <= 400)
    i = int(np.flatnonzero((pop.arms > 0) & inside & (pop.disk_hlr > 2.0))[0])
    stamp = draw_object(pop, i, plan.models, plan.preset.pixel_scale)
    again = draw_object(pop, i, plan.models, plan.preset.pixel_scale)
    np.testing.assert_array_equal(stamp.images, again.images)
    np.testing.assert_allclose(stamp.images.sum(axis=(1, 2)), pop.flux[i], rtol=0.03)
    # the same galaxy with its knots spread at random instead of along arms differs
    pop.arms[i] = 0
    plain = draw_object(pop, i, plan.models, plan.preset.pixel_scale)
    assert np.abs(plain.images - stamp.images).sum() > 0.05 * pop.flux[i].sum()


def test_truth_table_matches_population_and_colours():
    field = simulate_field((256, 256), preset="decam", seed=4, density=120)
    truth = field.truth.to_pydict()
    pop = FieldPlan((256, 256), preset="decam", seed=4, density=120).population
    np.testing.assert_array_equal(truth["x"], pop.x)
    np.testing.assert_allclose(truth["flux_r"], pop.flux[:, 1])
    np.testing.assert_allclose(np.array(truth["mag_g"]),
                               22.5 - 2.5 * np.log10(pop.flux[:, 0]))
    # spheroids are redder than irregulars in g - z
    g_z = np.array(truth["mag_g"]) - np.array(truth["mag_z"])
    morph = np.array(truth["morphology"])
    assert np.median(g_z[morph == "spheroid"]) > np.median(g_z[morph == "irregular"]) + 0.5


def test_photometry_of_isolated_objects_agrees_with_truth_within_noise():
    kw = dict(preset="decam", seed=21, density=40, star_density=10)
    shape = (640, 640)
    field = simulate_field(shape, **kw)
    plan = FieldPlan(shape, **kw)
    boxes = plan.population.stamp
    inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & \
        (boxes[:, 2] <= shape[0]) & (boxes[:, 3] <= shape[1])
    overlap = ((boxes[:, None, 0] < boxes[None, :, 2]) & (boxes[None, :, 0] < boxes[:, None, 2]) &
               (boxes[:, None, 1] < boxes[None, :, 3]) & (boxes[None, :, 1] < boxes[:, None, 3]))
    isolated = inside & (overlap.sum(axis=1) == 1)
    assert isolated.sum() >= 15
    truth = field.truth.to_pydict()
    pulls = []
    for b, band in enumerate(field.bands):
        model = plan.models[b]
        image_flux = np.array(truth[f"image_flux_{band}"])[isolated]
        catalogue_flux = np.array(truth[f"flux_{band}"])[isolated]
        measured = np.array([field.images[b, y0:y1, x0:x1].sum(dtype=np.float64)
                             for y0, x0, y1, x1 in boxes[isolated]])
        npix = np.array([(y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in boxes[isolated]])
        # the sky noise is correlated: a large aperture's sum has (sum of kernel)^2 more sigma
        boost = np.sum(model.noise_kernel) ** 4
        noise = np.sqrt(npix * model.sigma ** 2 * boost + image_flux / model.gain)
        pulls.append((measured - image_flux) / noise)
        # what is drawn is the catalogue flux, less PSF wings well below the noise
        assert np.all(np.abs(catalogue_flux - image_flux) < 0.5 * noise)
        assert np.all(image_flux <= catalogue_flux * 1.0001)
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 4 / np.sqrt(len(pulls))
    assert 0.7 < pulls.std() < 1.3
    assert np.all(np.abs(pulls) < 5)
