"""What the models see where there is no data, and the one anchor image."""

import numpy as np

from astrodask.sky import detection_image, fill_flagged, square_opening


def test_fill_replaces_only_flagged_pixels_with_sky_noise_deterministically():
    data = np.zeros((2, 200, 200), np.float32) + np.array([3.0, -1.0], np.float32)[:, None, None]
    flagged = np.zeros(data.shape, bool)
    flagged[:, :, 120:] = True          # padding past the mosaic edge
    flagged[1, 10:20, :] = True         # a stripe in one band only
    mean, std = np.array([3.0, -1.0]), np.array([0.5, 2.0])
    out = fill_flagged(data, flagged, mean, std, seed=(1, 2))
    np.testing.assert_array_equal(out[~flagged], data[~flagged])
    assert not np.array_equal(out, data) and data[0, 0, 150] == 3.0  # input untouched
    for b in range(2):
        values = out[b][flagged[b]]
        assert abs(values.mean() - mean[b]) < 0.05 * std[b] * 10
        assert abs(values.std() - std[b]) < 0.05 * std[b]
    np.testing.assert_array_equal(out, fill_flagged(data, flagged, mean, std, seed=(1, 2)))
    assert not np.array_equal(out, fill_flagged(data, flagged, mean, std, seed=(2, 1)))


def test_a_bad_column_is_interpolated_across_a_source_and_a_wide_stripe_is_not():
    yy, xx = np.mgrid[:120, :120]
    source = 100.0 * np.exp(-((yy - 60.0) ** 2 + (xx - 61.0) ** 2) / (2 * 4.0 ** 2))
    data = (source + np.zeros((1, 120, 120))).astype(np.float32)
    flagged = np.zeros(data.shape, bool)
    flagged[0, :, 60:62] = True          # a bad column pair through the source's centre
    flagged[0, 100:, :] = True           # a wide stripe: sky noise, as before
    out = fill_flagged(np.where(flagged, np.nan, data), flagged, [0.0], [0.1], seed=(0, 0))
    column = out[0, 40:80, 60:62]
    np.testing.assert_allclose(column, data[0, 40:80, 60:62], atol=0.05 * source.max())
    row = out[0, 60, 45:78]
    assert abs((row * np.arange(45, 78)).sum() / row.sum() - 61.0) < 0.3  # centroid kept
    stripe = out[0, 105:, :]
    assert abs(stripe.mean()) < 0.02 and abs(stripe.std() - 0.1) < 0.01
    assert np.isfinite(out).all()


def test_a_satellite_trail_is_interpolated_and_a_chip_gap_is_not():
    yy, xx = np.mgrid[:160, :160]
    source = 100.0 * np.exp(-((yy - 80.0) ** 2 + (xx - 80.0) ** 2) / (2 * 4.0 ** 2))
    data = (source + np.zeros((1, 160, 160))).astype(np.float32)
    flagged = np.zeros(data.shape, bool)
    flagged[0] = np.abs((yy - 80.0) - 0.4 * (xx - 80.0)) < 3.7  # a trail 7 px wide
    flagged[0, 130:142, :] = True                               # a gap 12 px wide: noise
    out = fill_flagged(np.where(flagged, np.nan, data), flagged, [0.0], [0.1], seed=(0, 0))
    # across the source's core most of its light comes back (sky noise would bring none)
    trail = flagged[0] & (np.hypot(yy - 80.0, xx - 80.0) < 6)
    assert out[0][trail].sum() > 0.7 * data[0][trail].sum()
    assert out[0][flagged[0]].max() == out[0][trail].max()  # the fill peaks on the source
    gap = out[0, 131:141, :]
    assert abs(gap.mean()) < 0.02 and abs(gap.std() - 0.1) < 0.01


def test_detection_image_is_noise_units_and_minus_inf_on_flagged():
    data = np.ones((3, 4, 4), np.float32) * np.array([1.0, 2.0, 4.0], np.float32)[:, None, None]
    flagged = np.zeros(data.shape, bool)
    flagged[2, 0, 0] = True
    data[0, 3, 3] = np.nan
    image = detection_image(data, flagged, mean=[0, 0, 2], std=[1, 2, 1])
    assert image[1, 1] == 1.0 + 1.0 + 2.0
    assert image[0, 0] == -np.inf and image[3, 3] == -np.inf


def test_square_opening_is_scipys_binary_opening():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for density in (0.05, 0.5, 0.9):
        mask = rng.random((70, 90)) < density
        mask[:, :12] = True                     # a padded strip along the edge
        mask[30:33, :] = True                   # a trail across
        for width in (3, 9):
            expected = ndimage.binary_opening(mask, structure=np.ones((width, width), bool))
            assert np.array_equal(square_opening(mask, width), expected)
