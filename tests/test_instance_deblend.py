"""Splitting Mask R-CNN instances that hold several significant peaks."""

import numpy as np
import pytest

from astrodask.classes import OBJECT_CODE

GALAXY, STAR = OBJECT_CODE["galaxy"], OBJECT_CODE["star"]


def blob(shape, y, x, sigma, amplitude):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))


@pytest.fixture
def field():
    """Sky noise σ 1; a galaxy at (40, 40) with a companion 18 px to its right, and one
    instance over both (the network's blend)."""
    shape = (80, 96)
    rng = np.random.default_rng(5)
    image = (rng.normal(0.0, 1.0, shape) + blob(shape, 40, 40, 6.0, 60.0)
             + blob(shape, 40, 58, 1.5, 12.0)).astype(np.float32)
    mask = blob(shape, 40, 40, 6.0, 60.0) + blob(shape, 40, 58, 1.5, 12.0) > 2.0
    return image, mask


def test_a_significant_companion_is_split_off_its_galaxys_instance(field):
    from astrodask.instance_deblend import split_instances

    image, mask = field
    masks, classes, scores = split_instances(mask[None], np.array([GALAXY]),
                                             np.array([0.9], np.float32), image, min_snr=5)
    assert len(masks) == 2
    # the instance keeps its galaxy; the companion is a detection of its own with its class
    # and score, and the two masks share no pixel and cover the instance
    assert masks[0][40, 40] and masks[1][40, 58] and not masks[0][40, 58]
    assert not (masks[0] & masks[1]).any() and np.array_equal(masks[0] | masks[1], mask)
    assert list(classes) == [GALAXY, GALAXY] and list(scores) == pytest.approx([0.9, 0.9])
    # its light above the saddle is not significant at a high S/N, nor a large share of
    # the instance's light: nothing is split
    for kwargs in (dict(min_snr=200), dict(min_snr=5, min_contrast=0.2)):
        masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), image,
                                      **kwargs)
        assert len(masks) == 1 and np.array_equal(masks[0], mask)


def test_noise_peaks_of_a_single_galaxy_are_not_split():
    from astrodask.instance_deblend import split_instances

    shape = (80, 80)
    image = (np.random.default_rng(1).normal(0.0, 1.0, shape)
             + blob(shape, 40, 40, 8.0, 30.0)).astype(np.float32)
    mask = blob(shape, 40, 40, 8.0, 30.0) > 1.0
    masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.8]), image,
                                  min_snr=5)
    assert len(masks) == 1 and np.array_equal(masks[0], mask)


def test_what_is_never_split(field):
    """A peak that another instance already holds at its core is no new detection (its
    basin goes to that instance); an instance marked to keep whole (the U-Net's irregular
    galaxies) and stars stay as they are; 0 is off."""
    from astrodask.instance_deblend import split_instances

    image, mask = field
    companion = blob(image.shape, 40, 58, 1.5, 12.0) > 2.0
    masks, classes, _ = split_instances(np.stack([mask, companion]),
                                        np.array([GALAXY, STAR]), np.array([0.9, 0.7]), image,
                                        min_snr=5)
    assert len(masks) == 2 and list(classes) == [GALAXY, STAR]
    assert masks[1].sum() > companion.sum() and (masks[1] & companion).sum() == companion.sum()
    assert not (masks[0] & masks[1]).any() and np.array_equal(masks[0] | masks[1], mask)
    for kwargs in (dict(keep_whole=[True]), dict(min_snr=0), dict(min_snr=None)):
        masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), image,
                                      **{"min_snr": 5, **kwargs})
        assert len(masks) == 1
    masks, _, _ = split_instances(mask[None], np.array([STAR]), np.array([0.9]), image,
                                  min_snr=5)
    assert len(masks) == 1
    # an instance under min_score holds no peak for itself (its basin is split off as a new
    # detection) and is not split
    masks, classes, scores = split_instances(np.stack([mask, companion]),
                                             np.array([GALAXY, STAR]), np.array([0.9, 0.1]),
                                             image, min_snr=5, min_score=0.4)
    assert len(masks) == 3 and list(classes) == [GALAXY, STAR, GALAXY]
    assert list(scores) == pytest.approx([0.9, 0.1, 0.9]) and masks[2][40, 58]
    assert np.array_equal(masks[1], companion)
    masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.3]), image,
                                  min_snr=5, min_score=0.4)
    assert len(masks) == 1
    # flagged pixels (-inf) hold no peak and no light
    flagged = image.copy()
    flagged[:, 50:] = -np.inf
    masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), flagged,
                                  min_snr=5)
    assert len(masks) == 1
    empty = split_instances(np.zeros((0,) + image.shape, bool), np.zeros(0, int),
                            np.zeros(0), image, min_snr=5)
    assert [len(v) for v in empty] == [0, 0, 0]


def test_merge_low_contrast_with_a_significance_test():
    """The S/N test of the light above the saddle, alone or with the contrast test."""
    from astrodask.centre_segments import merge_low_contrast
    from astrodask.instance_deblend import _basins

    shape = (64, 64)
    image = blob(shape, 32, 20, 6.0, 100.0) + blob(shape, 32, 42, 1.5, 6.0)
    basins = _basins(image > 0.2, image, np.array([[32, 20], [32, 42]]))
    scores = np.array([0.9, 0.5])
    # the bump holds 26.0 above its saddle over 26 px: S/N 5.1 for a pixel noise of 1,
    # 1.1e-3 of the footprint's light
    assert list(merge_low_contrast(basins, scores, image, None, min_snr=5)[0]) == [0, 1]
    assert list(merge_low_contrast(basins, scores, image, None, min_snr=5.2)[0]) == [0]
    assert list(merge_low_contrast(basins, scores, image, None, min_snr=5,
                                   pixel_noise=1.1)[0]) == [0]
    assert list(merge_low_contrast(basins, scores, image, 1e-3, min_snr=5)[0]) == [0, 1]
    assert list(merge_low_contrast(basins, scores, image, 2e-3, min_snr=5)[0]) == [0]
    # a basin with nothing above its saddle is never significant
    flat = blob(shape, 32, 20, 6.0, 100.0)
    assert list(merge_low_contrast(basins, scores, flat, None, min_snr=1e-6)[0]) == [0]


def test_an_irregular_instance_loses_only_a_galaxy_of_another_class():
    """An irregular galaxy with two bright knots and a spheroid 24 px away, drawn as one
    instance the U-Net calls irregular: with ``irregular_by_class`` the spheroid's basin is
    a detection of its own, the knots stay with their galaxy; where the U-Net calls the
    spheroid's light irregular too, or without the option, the instance stays whole."""
    from astrodask.instance_deblend import split_instances

    shape = (80, 100)
    galaxy = (blob(shape, 40, 36, 7.0, 25.0) + blob(shape, 34, 30, 1.5, 30.0)
              + blob(shape, 46, 42, 1.5, 30.0))
    spheroid = blob(shape, 40, 62, 2.0, 60.0)
    image = (np.random.default_rng(7).normal(0.0, 1.0, shape) + galaxy + spheroid)
    image = image.astype(np.float32)
    mask = (galaxy + spheroid) > 2.0
    # U-Net classes (spheroid, disk, irregular, point source, background)
    probabilities = np.zeros((5,) + shape, np.float32)
    probabilities[4] = 1.0
    on_spheroid = spheroid > np.maximum(galaxy, 2.0)
    probabilities[:, mask] = np.array([0, 0, 0.9, 0, 0.1])[:, None]
    probabilities[:, on_spheroid] = np.array([0.9, 0, 0.05, 0, 0.05])[:, None]
    unet = (probabilities, 2)
    split = dict(min_snr=5, keep_whole=[True], unet=unet, irregular_by_class=True)
    masks, classes, scores = split_instances(mask[None], np.array([GALAXY]),
                                             np.array([0.9], np.float32), image, **split)
    assert len(masks) == 2 and list(scores) == pytest.approx([0.9, 0.9])
    holder = [int(np.flatnonzero(masks[:, y, x])[0]) for y, x in ((40, 36), (34, 30),
                                                                     (46, 42), (40, 62))]
    assert holder[0] == holder[1] == holder[2] != holder[3]
    assert not (masks[0] & masks[1]).any() and np.array_equal(masks[0] | masks[1], mask)
    # the spheroid's light called irregular, or the option off: one irregular galaxy
    all_irregular = probabilities.copy()
    all_irregular[:, mask] = np.array([0, 0, 0.9, 0, 0.1])[:, None]
    for kwargs in (dict(unet=(all_irregular, 2)), dict(irregular_by_class=False),
                   dict(unet=None)):
        masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), image,
                                      **{**split, **kwargs})
        assert len(masks) == 1 and np.array_equal(masks[0], mask)
    # split_others=False: an instance the U-Net does not call irregular stays whole
    masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), image,
                                  **{**split, "keep_whole": [False], "split_others": False})
    assert len(masks) == 1
    masks, _, _ = split_instances(mask[None], np.array([GALAXY]), np.array([0.9]), image,
                                  **{**split, "keep_whole": [False]})
    assert len(masks) >= 2
