"""Correlated sky noise: measured at ingest, carried into the flux errors."""

import numpy as np
from scipy.ndimage import correlate1d

from astrodask.measure import Accumulator, chunk_sums
from astrodask.noise_correlation import (LAGS, NoiseCorrelation, segment_pair_counts,
                                         variance_factor)

SIDE = 0.3  # [SIDE, 1, SIDE] kernel in each axis


def correlated_noise(rng, shape, side=SIDE):
    kernel = np.array([side, 1.0, side]) / np.sqrt(1 + 2 * side ** 2)
    white = rng.standard_normal((shape[0] + 2, shape[1] + 2))
    smooth = correlate1d(correlate1d(white, kernel, axis=0), kernel, axis=1)
    return smooth[1:-1, 1:-1]


def true_rho(side=SIDE):
    """The noise's correlation at each of LAGS (separable: product of the 1-D ones)."""
    k = np.array([side, 1.0, side]) / np.sqrt(1 + 2 * side ** 2)
    one_d = np.correlate(k, k, "full")  # lags -2..2
    return np.array([one_d[dy + 2] * one_d[dx + 2] for dy, dx in LAGS])


def test_pair_counts_match_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(12, 15))
    ids, inverse = np.unique(labels, return_inverse=True)
    counts = segment_pair_counts(labels, inverse.reshape(labels.shape), len(ids))
    for k, (dy, dx) in enumerate(LAGS):
        for i, label in enumerate(ids):
            expected = 0
            for y in range(labels.shape[0]):
                for x in range(labels.shape[1]):
                    y2, x2 = y + dy, x + dx
                    if (label > 0 and 0 <= y2 < labels.shape[0] and 0 <= x2 < labels.shape[1]
                            and labels[y, x] == label and labels[y2, x2] == label):
                        expected += 1
            assert counts[i, k] == expected


def test_correlation_is_measured_with_sources_in_the_sky():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    for side in (SIDE, 0.0):
        measured = NoiseCorrelation()
        for core in range(8):
            image = correlated_noise(rng, (256, 256), side)
            for _ in range(15):  # bright sources: masked before the covariances
                y, x = rng.uniform(0, 256, 2)
                image += rng.uniform(5, 200) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)
            measured.add(image, np.ones(image.shape, bool))
        summary = measured.summary()
        assert summary["lags"] == [list(lag) for lag in LAGS]
        assert np.allclose(summary["rho"], true_rho(side), atol=0.03), summary["rho"]


def test_too_few_sky_pixels_mean_independent_pixels():
    measured = NoiseCorrelation()
    measured.add(correlated_noise(np.random.default_rng(2), (40, 40)), np.ones((40, 40), bool))
    assert measured.summary()["rho"] == [0.0] * len(LAGS)


def test_slivers_narrower_than_the_lags_are_measured_and_counted():
    """The last core of a mosaic may be a few pixels wide or high."""
    rng = np.random.default_rng(4)
    measured = NoiseCorrelation()
    for shape in ((96, 7), (1, 300), (300, 1)):
        measured.add(correlated_noise(rng, shape), np.ones(shape, bool))
        labels = np.ones(shape, int)
        ids, inverse = np.unique(labels, return_inverse=True)
        counts = segment_pair_counts(labels, inverse.reshape(shape), len(ids))
        assert counts.shape == (1, len(LAGS)) and (counts >= 0).all()
    assert measured.totals()[1][0] > 0


def test_variance_factor_matches_the_scatter_of_summed_noise():
    """The sum of correlated noise over a disk varies as the factor says."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :24]
    disk = ((yy - 11.5) ** 2 + (xx - 11.5) ** 2 <= 36).astype(int)
    ids, inverse = np.unique(disk, return_inverse=True)
    pairs = segment_pair_counts(disk, inverse.reshape(disk.shape), len(ids))[1:]
    area = np.array([disk.sum()])
    sums = np.array([correlated_noise(rng, disk.shape)[disk == 1].sum() for _ in range(3000)])
    factor = variance_factor(pairs, area, true_rho())[0]
    assert factor > 2.0  # SIDE 0.3: far from independent pixels
    assert abs(sums.var() / (area[0] * factor) - 1.0) < 0.08
    assert variance_factor(pairs, area, None)[0] == 1.0


def test_flux_errors_carry_the_variance_factor():
    labels = np.zeros((20, 20), int)
    labels[2:8, 2:8] = 1
    labels[10:18, 5:9] = 2
    image = np.ones((1, 20, 20))
    sums = chunk_sums(labels, 0, 0, image, np.zeros((1, 20, 20), np.uint8))
    accumulator = Accumulator(2, 1)
    accumulator.add(sums)
    rho = true_rho()
    plain = accumulator.columns(["r"], noise=[2.0])["flux_err_r"]
    correlated = accumulator.columns(["r"], noise=[2.0], correlation=[rho])["flux_err_r"]
    assert np.allclose(plain, 2.0 * np.sqrt([36, 32]))
    expected = plain * np.sqrt(variance_factor(sums["pairs"], sums["area"], rho))
    assert np.allclose(correlated, expected)
    assert np.all(correlated > 1.3 * plain)


def test_peak_sums_are_the_same_whether_a_segment_is_measured_whole_or_in_chunks():
    """The peak (5x5 light-weighted centroid around the anchor) adds up across chunk edges,
    and is NaN where the anchor lies on its segment's edge."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:20, 0:20]
    image = (100 * np.exp(-((yy - 9.3) ** 2 + (xx - 10.4) ** 2) / 8.0)
             + rng.normal(0, 0.1, (20, 20)))[None]
    labels = np.where((yy - 9) ** 2 + (xx - 10) ** 2 <= 36, 1, 0).astype(np.int32)
    labels[:, 17:] = np.where(labels[:, 17:] == 1, 2, 0)  # a neighbour cut out of its edge
    flags = np.zeros((1, 20, 20), np.uint8)
    anchors = (np.array([1, 2]), np.array([9, 9]), np.array([10, 17]))
    whole = Accumulator(2, 1)
    whole.add(chunk_sums(labels, 0, 0, image, flags, anchors=anchors))
    split = Accumulator(2, 1)
    for ys, xs in ((slice(0, 20), slice(0, 11)), (slice(0, 10), slice(11, 20)),
                   (slice(10, 20), slice(11, 20))):
        split.add(chunk_sums(labels[ys, xs], ys.start, xs.start, image[:, ys, xs], flags[:, ys, xs],
                             anchors=anchors))
    a, b = whole.columns(["g"], noise=[0.1]), split.columns(["g"], noise=[0.1])
    np.testing.assert_allclose(a["x_peak"], b["x_peak"])
    np.testing.assert_allclose(a["y_peak"], b["y_peak"])
    assert abs(a["x_peak"][0] - 10.4) < 0.5 and abs(a["y_peak"][0] - 9.3) < 0.5
    assert np.isnan(a["x_peak"][1])  # its anchor is on the edge of its segment
    # without anchors there is no peak
    bare = Accumulator(2, 1)
    bare.add(chunk_sums(labels, 0, 0, image, flags))
    assert np.isnan(bare.columns(["g"], noise=[0.1])["x_peak"]).all()
