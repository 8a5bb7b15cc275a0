"""Kron (AUTO) photometry against known total fluxes."""

import numpy as np
import pytest

from astrodask import kron
from astrodask.kron import AUTO_FLAGS, kron_photometry


def _gaussian(shape, y, x, sigma, flux):
    yy, xx = np.indices(shape)
    return flux * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2)) / (2 * np.pi
                                                                              * sigma ** 2)


def _moments(image, labels, k):
    """Flux-weighted centre and RMS extent of segment ``k``, as the catalog measures them."""
    yy, xx = np.indices(image.shape)
    w = np.where((labels == k) & (image > 0), image, 0.0)
    y, x = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    a = np.sqrt((w * ((yy - y) ** 2 + (xx - x) ** 2)).sum() / w.sum() / 2)
    return y, x, a


def _measure(image, labels, ids, noise=1.0, mask=None, moments_of=None, **options):
    """Kron photometry of segments ``ids`` at their moments (of ``moments_of``, else ``image``)."""
    moments = [_moments((image if moments_of is None else moments_of)[0], labels, k) for k in ids]
    y, x, a = (np.array(v) for v in zip(*moments))
    mask = np.zeros(image.shape, np.uint8) if mask is None else mask
    return kron_photometry(image, mask, labels, np.asarray(ids), x, y, a, a,
                           np.zeros(len(ids)), noise=[noise] * image.shape[0], **options)


def test_the_auto_flux_holds_the_light_the_segment_misses():
    rng = np.random.default_rng(1)
    truth = _gaussian((120, 120), 60.3, 59.6, 3.0, 600.0)
    image = (truth + rng.normal(0, 1.0, truth.shape))[None]
    labels = np.where(truth > 2.0, 1, 0).astype(np.int32)  # an isophote at 2σ
    auto = _measure(image, labels, [1])
    isophotal = image[0][labels == 1].sum()
    assert isophotal < 0.85 * 600
    assert auto["flux_auto"][0, 0] == pytest.approx(600, rel=0.05)
    assert 0.9 < auto["kron_radius"][0] < kron.KRON_WINDOW
    # the error of a sum of independent pixels over the aperture's area, and no flag
    assert 5 < auto["flux_auto_err"][0, 0] < 25 and auto["auto_flags"][0] == 0


def test_a_neighbours_pixels_are_left_out():
    truth_a = _gaussian((100, 140), 50, 50, 3.0, 1000.0)
    truth_b = _gaussian((100, 140), 50, 68, 3.0, 5000.0)
    image = (truth_a + truth_b)[None]
    labels = np.zeros((100, 140), np.int32)
    labels[(truth_a > 0.05) & (truth_a >= truth_b)] = 1
    labels[(truth_b > 0.05) & (truth_b > truth_a)] = 2
    alone = _measure(truth_a[None], np.where(labels == 1, 1, 0).astype(np.int32), [1])
    both = _measure(image, labels, [1, 2])
    unmasked = _measure(image, np.where(labels == 1, 1, 0).astype(np.int32), [1])
    # object 1's aperture reaches over object 2, whose pixels do not count (its wings
    # outside its segment still do)
    assert unmasked["flux_auto"][0, 0] > 1.5 * alone["flux_auto"][0, 0]
    assert both["flux_auto"][0, 0] == pytest.approx(alone["flux_auto"][0, 0], rel=0.08)
    assert both["flux_auto"][1, 0] == pytest.approx(5000, rel=0.06)
    # a neighbour is not a flagged pixel, but it says the aperture held another object
    assert list(both["auto_flags"]) == [AUTO_FLAGS["neighbours"]] * 2
    assert alone["auto_flags"][0] == 0


def test_edges_and_flagged_pixels_are_flagged_and_left_out():
    truth = _gaussian((80, 80), 40, 3, 3.0, 1000.0) + _gaussian((80, 80), 40, 50, 3.0, 1000.0)
    image = truth[None].copy()
    labels = np.zeros((80, 80), np.int32)
    labels[30:51, 0:14] = 1
    labels[30:51, 40:61] = 2
    mask = np.zeros(image.shape, np.uint8)
    mask[0, 38:42, 52:56] = 1
    image[0, 38:42, 52:56] = np.nan  # a flagged pixel's value never reaches the sums
    auto = _measure(image, labels, [1, 2], mask=mask, moments_of=truth[None])
    assert auto["auto_flags"][0] & AUTO_FLAGS["truncated"]
    assert auto["auto_flags"][1] == AUTO_FLAGS["masked"]
    assert np.isfinite(auto["flux_auto"]).all()
    # the flagged patch takes its mirror image's light: the symmetric source's whole flux
    assert auto["flux_auto"][1, 0] == pytest.approx(1000, rel=0.005)
    ignored = _measure(image, labels, [1, 2], mask=mask, moments_of=truth[None],
                       masked_pixels="ignore")
    patch = truth[38:42, 52:56].sum()
    assert ignored["flux_auto"][1, 0] == pytest.approx(auto["flux_auto"][1, 0] - patch, rel=0.005)


def test_excluded_pixels_are_mirrored_not_rescaled():
    # a faint source beside a bright one's segment: SEP's correction (the sum times the
    # aperture's area over its free area) would count the excluded corner at the mean
    # brightness of the aperture, mostly the core's
    faint = _gaussian((100, 100), 50, 50, 3.0, 500.0)
    bright = _gaussian((100, 100), 50, 58, 1.5, 20000.0)
    labels = np.zeros((100, 100), np.int32)
    labels[(faint > 0.5) & (faint >= bright)] = 1
    labels[(bright > 0.5) & (bright > faint)] = 2
    auto = _measure((faint + bright)[None], labels, [1, 2])
    assert auto["flux_auto"][0, 0] == pytest.approx(500, rel=0.03)
    assert auto["flux_auto"][1, 0] == pytest.approx(20000, rel=0.01)
    # left out, the corner's own light is lost (SEP's rescaling gave 561 and 20,513)
    ignored = _measure((faint + bright)[None], labels, [1, 2], masked_pixels="ignore")
    assert ignored["flux_auto"][0, 0] < 0.95 * 500
    with pytest.raises(ValueError, match="masked_pixels"):
        _measure(faint[None], labels, [1], masked_pixels="scale")


def test_cells_and_large_objects_give_what_one_object_at_a_time_gives(monkeypatch):
    rng = np.random.default_rng(3)
    shape = (300, 300)
    centres = rng.uniform(20, 280, size=(12, 2))
    image = sum(_gaussian(shape, y, x, 2.0, 500.0) for y, x in centres)[None]
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        yy, xx = np.indices(shape)
        labels[((yy - y) ** 2 + (xx - x) ** 2 < 16) & (labels == 0)] = k
    ids = np.arange(1, 13)
    grouped = _measure(image, labels, ids)
    monkeypatch.setattr(kron, "CELL", 1)  # every object read on its own
    alone = _measure(image, labels, ids)
    for key in ("kron_radius", "flux_auto", "flux_auto_err", "auto_flags"):
        np.testing.assert_array_equal(grouped[key], alone[key])


def test_no_objects_and_unplaced_objects():
    empty = kron_photometry(np.zeros((2, 10, 10)), np.zeros((2, 10, 10), np.uint8),
                            np.zeros((10, 10), np.int32), np.zeros(0, int), np.zeros(0),
                            np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty["flux_auto"].shape == (0, 2)
    lost = kron_photometry(np.ones((1, 10, 10)), np.zeros((1, 10, 10), np.uint8),
                           np.ones((10, 10), np.int32), np.array([1]), np.array([np.nan]),
                           np.array([5.0]), np.array([np.nan]), np.array([np.nan]),
                           np.array([np.nan]))
    assert np.isnan(lost["flux_auto"]).all() and np.isnan(lost["kron_radius"]).all()


def test_a_local_annulus_takes_off_the_light_around_an_object():
    rng = np.random.default_rng(5)
    truth = _gaussian((120, 120), 60, 60, 2.5, 400.0)
    image = (truth + 0.3 + rng.normal(0, 1.0, truth.shape))[None]  # a pedestal of 0.3
    labels = np.where(truth > 2.0, 1, 0).astype(np.int32)
    moments = _moments(truth, labels, 1)
    args = (image, np.zeros(image.shape, np.uint8), labels, np.array([1]),
            np.array([moments[1]]), np.array([moments[0]]), np.array([moments[2]]),
            np.array([moments[2]]), np.zeros(1))
    plain = kron_photometry(*args, noise=[1.0], annulus=None)
    local = kron_photometry(*args, noise=[1.0], annulus=(1.5, 2.5), annulus_for="all")
    # by default only an aperture that holds a neighbour's pixels takes a local background
    assert kron_photometry(*args, noise=[1.0], annulus=(1.5, 2.5))["flux_auto"][0, 0] == \
        plain["flux_auto"][0, 0]
    assert plain["flux_auto"][0, 0] > 1.1 * 400
    assert local["flux_auto"][0, 0] == pytest.approx(400, rel=0.1)
    assert local["flux_auto_err"][0, 0] > plain["flux_auto_err"][0, 0]
    # an annulus with no free pixel (all flagged): the sum without a local background
    mask = np.ones(image.shape, np.uint8)
    mask[0, 50:71, 50:71] = 0
    lost = kron_photometry(image, mask, *args[2:], noise=[1.0], annulus=(1.5, 2.5),
                           annulus_for="all")
    assert lost["auto_flags"][0] & AUTO_FLAGS["no_local_background"]
    assert np.isfinite(lost["flux_auto"][0, 0])


@pytest.mark.parametrize("sigma", [2.0, 3.0, 6.0])
def test_the_half_light_radius_of_a_gaussian(sigma):
    image = _gaussian((200, 200), 100.3, 99.6, sigma, 1000.0)[None]
    labels = np.where(image[0] > 0.01 * image[0].max(), 1, 0).astype(np.int32)
    radius = _measure(image, labels, [1])["flux_radius"][0]
    # sigma sqrt(2 ln 2), pixel-integrated, of the light within the aperture
    assert radius == pytest.approx(sigma * np.sqrt(2 * np.log(2)), rel=0.01)


def test_the_half_light_radius_with_a_pedestal_and_a_neighbour():
    rng = np.random.default_rng(7)
    truth = _gaussian((160, 160), 80, 80, 3.0, 3000.0)
    neighbour = _gaussian((160, 160), 80, 95, 1.5, 3000.0)
    image = (truth + neighbour + 1.0 + rng.normal(0, 0.05, truth.shape))[None]
    labels = np.zeros((160, 160), np.int32)
    labels[(truth > 0.5) & (truth >= neighbour)] = 1
    labels[(neighbour > 0.5) & (neighbour > truth)] = 2
    moments = _moments(truth, labels, 1)
    args = (image, np.zeros(image.shape, np.uint8), labels, np.array([1, 2]),
            np.array([moments[1], 95.0]), np.array([moments[0], 80.0]),
            np.array([moments[2], 1.5]), np.array([moments[2], 1.5]), np.zeros(2))
    local = kron_photometry(*args, noise=[0.05])
    plain = kron_photometry(*args, noise=[0.05], annulus=None)
    expected = 3.0 * np.sqrt(2 * np.log(2))
    assert local["flux_radius"][0] == pytest.approx(expected, rel=0.05)
    assert plain["flux_radius"][0] > 1.1 * expected  # the pedestal's light grows outwards
    empty = kron_photometry(np.zeros((1, 20, 20)), np.zeros((1, 20, 20), np.uint8),
                            np.ones((20, 20), np.int32), np.array([1]), np.array([10.0]),
                            np.array([10.0]), np.array([2.0]), np.array([2.0]), np.zeros(1))
    assert np.isnan(empty["flux_radius"][0])


def _half_light_on_every_circle(detection, cx, cy, rmax, level, own):
    """The growth curve at every circle out to ``rmax``, then its first step past half the
    light: what the early-stopping ``_half_light_radius`` must give."""
    import sep

    steps = kron.GROWTH_STEPS
    enclosed = np.zeros((len(cx), steps + 1))
    for step in range(1, steps + 1):
        r = rmax * step / steps
        light = sep.sum_circle(detection, cx, cy, r, subpix=5, **own)[0]
        area = sep.sum_circle(np.ones(detection.shape), cx, cy, r, subpix=5, **own)[0]
        enclosed[:, step] = light - level * area
    half = 0.5 * enclosed[:, -1]
    step = np.argmax(enclosed >= half[:, None], axis=1)
    rows = np.arange(len(cx))
    below, above = enclosed[rows, np.maximum(step - 1, 0)], enclosed[rows, step]
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.clip((half - below) / (above - below), 0.0, 1.0)
    return np.where((half > 0) & (step > 0), rmax * (step - 1 + part) / steps, np.nan)


def test_the_half_light_radius_stops_each_growth_curve_where_it_first_reaches_half():
    """Noisy, non-monotonic curves, backgrounds, neighbours and empty apertures: the same
    radii to the bit as the whole growth curve gives."""
    rng = np.random.default_rng(3)
    shape = (120, 140)
    cy, cx = rng.uniform(10, 110, 40), rng.uniform(10, 130, 40)
    flux = rng.uniform(-50, 3000, 40)
    flux[:3] = -3000.0  # no positive light: NaN
    image = sum(_gaussian(shape, y, x, s, f) for y, x, s, f in
                zip(cy, cx, rng.uniform(0.8, 6, 40), flux))
    image = np.ascontiguousarray(image + rng.normal(0, 0.3, shape))
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    for k, (y, x) in enumerate(zip(cy, cx), start=1):
        labels[(np.hypot(yy - y, xx - x) < 3) & (labels == 0)] = k
    own = dict(seg_id=np.arange(1, 41, dtype=np.int32), segmap=labels)
    rmax = rng.uniform(2, 25, 40)
    rmax[:3] = 2.0
    level = np.where(rng.random(40) < 0.5, rng.uniform(-0.5, 1.0, 40), 0.0)
    radius = kron._half_light_radius(image, cx, cy, rmax, level, own)
    expected = _half_light_on_every_circle(image, cx, cy, rmax, level, own)
    assert np.isnan(expected).sum() >= 2 and np.isfinite(expected).sum() >= 30
    np.testing.assert_array_equal(radius, expected)


def test_excluded_pixels_without_a_free_mirror_take_no_background():
    # a neighbour's segment in the aperture's wing and flagged pixels at its mirror image:
    # those pixels hold nothing, so no local background is taken off them either
    rng = np.random.default_rng(11)
    truth = _gaussian((120, 120), 60, 60, 2.5, 2000.0)
    image = (truth + 2.0 + rng.normal(0, 0.02, truth.shape))[None]
    labels = np.where(truth > 0.5, 1, 0).astype(np.int32)
    moments = _moments(truth, labels, 1)
    labels[56:64, 68:71] = 2  # the neighbour (a flat pedestal there: no light of its own)
    mask = np.zeros(image.shape, np.uint8)
    mask[0, 56:65, 49:53] = 1  # the mirror of its pixels through (60, 60)
    auto = kron_photometry(image, mask, labels, np.array([1]), np.array([moments[1]]),
                           np.array([moments[0]]), np.array([moments[2]]),
                           np.array([moments[2]]), np.zeros(1), noise=[0.02])
    # the pixels lost hold ~0.2% of the light; 2 a pixel over their ~24 would be 2.4%
    assert auto["flux_auto"][0, 0] == pytest.approx(2000, rel=0.008)


def test_a_clear_aperture_takes_no_local_background_by_default():
    # a faint source whose annulus, not its aperture, lies on a bright neighbour's wings
    faint = _gaussian((120, 140), 60, 60, 2.0, 300.0)
    bright = _gaussian((120, 140), 60, 95, 6.0, 200000.0)
    labels = np.zeros((120, 140), np.int32)
    labels[faint > 0.3] = 1
    labels[(bright > 2.0) & (labels == 0)] = 2
    moments = _moments(faint, labels, 1)
    args = ((faint + bright)[None], np.zeros((1, 120, 140), np.uint8), labels, np.array([1]),
            np.array([moments[1]]), np.array([moments[0]]), np.array([moments[2]]),
            np.array([moments[2]]), np.zeros(1))
    clear = kron_photometry(*args, noise=[0.1], annulus=(1.2, 2.0))
    every = kron_photometry(*args, noise=[0.1], annulus=(1.2, 2.0), annulus_for="all")
    assert clear["auto_flags"][0] == 0
    assert clear["flux_auto"][0, 0] == kron_photometry(*args, noise=[0.1],
                                                       annulus=None)["flux_auto"][0, 0]
    assert clear["flux_auto"][0, 0] == pytest.approx(300, rel=0.01)
    assert every["flux_auto"][0, 0] < 0.985 * clear["flux_auto"][0, 0]
    with pytest.raises(ValueError, match="annulus_for"):
        kron_photometry(*args, annulus_for="some")
