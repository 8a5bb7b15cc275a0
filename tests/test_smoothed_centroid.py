"""Centroids weighted by the smoothed detection image: chunk-invariant, less pulled by noise."""

from types import SimpleNamespace

import numpy as np

import pytest

from astrodask.measure import (Accumulator, chunk_sums, measure_chunk, measure_margin,
                               smoothed_detection)
from astrodask.mosaic import Block
from astrodask.merging.products import MergeOptions, catalog_positions, irregular_centroid_sigma


def test_the_smoothed_detection_image_does_not_depend_on_the_chunk():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (2, 70, 90))
    image[1, 10, 10] = np.nan
    flags = np.zeros(image.shape, np.uint8)
    flags[0, 30:33, 40] = 1
    good = np.isfinite(image) & (flags == 0)
    whole = np.clip(ndimage.gaussian_filter(np.where(good, image, 0).sum(axis=0), 3.0), 0, None)
    for ys, xs in ((slice(0, 35), slice(0, 45)), (slice(35, 70), slice(45, 90)),
                   (slice(20, 50), slice(60, 90))):
        assert np.allclose(smoothed_detection(image, flags, ys, xs, 3.0), whole[ys, xs],
                           rtol=0, atol=1e-12)


def test_a_chunk_measured_from_blocks_read_once_equals_the_whole_arrays():
    """The Dask merge reads a chunk's pixels as blocks, in flight together; the sums are
    the single-process merge's, which reads the Zarr arrays, to the bit."""
    rng = np.random.default_rng(2)
    image = rng.normal(0, 1, (3, 80, 100)).astype(np.float32)
    flags = np.zeros(image.shape, np.uint8)
    flags[1, 30:34, 61] = 1
    weight = rng.uniform(0.5, 2.0, image.shape).astype(np.float32)
    classes = rng.dirichlet(np.ones(5), (80, 100)).transpose(2, 0, 1).astype(np.float32)
    for ys, xs in ((slice(0, 40), slice(0, 50)), (slice(40, 80), slice(50, 100)),
                   (slice(20, 60), slice(30, 70))):
        labels = np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.int64)
        labels[5:15, 8:20], labels[20:30, 25:35] = 1, 2
        anchors = (np.array([1, 2]), np.array([ys.start + 10, ys.start + 25]),
                   np.array([xs.start + 14, xs.start + 30]))
        for sigma in (None, 3.0):
            whole = measure_chunk(labels, ys, xs, image, flags, weight, classes,
                                  saturation=[np.inf] * 3, anchors=anchors, sigma=sigma)
            reach = measure_margin(sigma)
            blocks = measure_chunk(labels, ys, xs, Block(image, ys, xs, reach),
                                   Block(flags, ys, xs, reach), Block(weight, ys, xs),
                                   Block(classes, ys, xs), saturation=[np.inf] * 3,
                                   anchors=anchors, sigma=sigma)
            assert whole.keys() == blocks.keys()
            assert ("smooth_f" in whole) == (sigma is not None)
            for name in whole:
                assert np.array_equal(whole[name], blocks[name], equal_nan=True), name


def test_a_block_answers_only_inside_what_it_read():
    array = np.arange(2 * 30 * 40).reshape(2, 30, 40)
    block = Block(array, slice(10, 20), slice(0, 10), margin=3)
    assert block.shape == (2, 30, 40) and (block.y0, block.x0, block.y1, block.x1) == (7, 0, 23, 13)
    assert np.array_equal(block[:, 7:23, 0:13], array[:, 7:23, 0:13])
    assert np.array_equal(block[1:, 12:14, 5:6], array[1:, 12:14, 5:6])
    with pytest.raises(IndexError, match="outside the block"):
        block[:, 6:20, 0:10]


def test_a_faint_source_off_its_segments_middle_is_placed_nearer_its_centre():
    yy, xx = np.mgrid[:60, :60]
    labels = np.zeros((60, 60), np.int64)
    labels[14:46, 14:46] = 1                         # the segment's middle is (29.5, 29.5)
    source = 6.0 * np.exp(-((yy - 26.0)**2 + (xx - 35.0)**2) / (2 * 3.0**2))
    plain, smoothed = [], []
    for seed in range(12):
        image = (source + np.random.default_rng(seed).normal(0, 1, (60, 60)))[None]
        flags = np.zeros(image.shape, np.uint8)
        ys, xs = slice(0, 60), slice(0, 60)
        accumulator = Accumulator(1, 1)
        accumulator.add(chunk_sums(labels, 0, 0, image, flags,
                                   smooth=smoothed_detection(image, flags, ys, xs, 4.0)))
        measured = accumulator.columns(["g"], noise=[1.0])
        plain.append(np.hypot(measured["x"][0] - 35, measured["y"][0] - 26))
        smoothed.append(np.hypot(measured["x_smooth"][0] - 35, measured["y_smooth"][0] - 26))
    assert np.mean(smoothed) < 0.6 * np.mean(plain)


def test_only_the_objects_asked_for_take_the_smoothed_centroid():
    measured = {"x": np.array([1.0, 2.0, 3.0]), "y": np.array([1.0, 2.0, 3.0]),
                "x_smooth": np.array([1.5, np.nan, 3.5]), "y_smooth": np.array([1.5, 2.5, 3.5]),
                "x_peak": np.full(3, np.nan), "y_peak": np.full(3, np.nan)}
    objects = SimpleNamespace(centre_x=None, centre_y=None)
    x, y = catalog_positions(objects, measured, smooth_placed=np.array([True, True, False]))
    assert x.tolist() == [1.5, 2.0, 3.0] and y.tolist() == [1.5, 2.0, 3.0]
    x, _ = catalog_positions(objects, measured)
    assert x.tolist() == [1.0, 2.0, 3.0]


def test_the_sigma_comes_from_the_option_then_the_detector_card():
    record = {"models": [{"kind": "maskrcnn", "card": {"irregular_centroid_sigma": 8}}]}
    assert irregular_centroid_sigma(record, MergeOptions()) == 8.0
    assert irregular_centroid_sigma(record, MergeOptions(irregular_centroid_sigma=0)) == 0.0
    assert irregular_centroid_sigma({"models": [{"kind": "maskrcnn", "card": {}}]},
                                    MergeOptions()) == 0.0
    assert irregular_centroid_sigma({"models": [{"kind": "unet", "card": {}}]},
                                    MergeOptions()) == 0.0
