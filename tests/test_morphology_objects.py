"""Segmentation (Algorithm 1), deblending (Algorithm 2), eq. 16 and the colour PNG."""

import numpy as np
import pytest
from PIL import Image

from astrodask.errors import InputError
from astrodask.morphology.catalog import object_morphology
from astrodask.morphology.colour import colour_image, write_colour_png
from astrodask.morphology.deblend import deblend
from astrodask.morphology.segmentation import segment

YY, XX = np.mgrid[:80, :100]


def _blob(cy, cx, r):
    return np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * r ** 2))


def _background(*blobs):
    source = np.clip(sum(_blob(*b) for b in blobs), 0, 1)
    return np.where(source < 1e-3, 1.0, 1.0 - source)


def test_segment_two_separate_sources():
    bkg = _background((20, 25, 4), (55, 70, 5))
    labels = segment(bkg, threshold=0.2)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2}
    assert labels[20, 25] == 1 and labels[55, 70] == 2 and labels[0, 0] == 0
    # the segments reach beyond the seed pixels, towards the background's edge
    assert (labels == 1).sum() > (bkg[:, :50] <= 0.2).sum()


def test_segment_mask_and_threshold_validation():
    bkg = _background((20, 25, 4))
    mask = np.ones_like(bkg, bool)
    mask[:, :25] = False
    labels = segment(bkg, threshold=0.2, mask=mask)
    assert labels[:, :25].max() == 0 and labels[20, 27] == 1
    with pytest.raises(InputError):
        segment(bkg, threshold=1.0)


def test_segment_with_positions_splits_touching_sources():
    bkg = _background((40, 40, 6), (40, 56, 6))
    assert segment(bkg, threshold=0.5).max() == 1  # one merged segment
    labels = segment(bkg, positions=[(40, 40), (40, 56)])
    assert labels[40, 40] == 1 and labels[40, 56] == 2
    with pytest.raises(InputError):
        segment(bkg, positions=[(100, 5)])


def test_deblend_splits_at_flux_peaks_and_keeps_parents():
    flux = 100 * _blob(40, 30, 3) + 60 * _blob(40, 50, 3) + 80 * _blob(15, 85, 3)
    segmap = np.zeros(flux.shape, np.int32)
    segmap[25:55, 15:65] = 1  # a blend of two
    segmap[5:25, 75:95] = 2   # a single source
    labels, table = deblend(segmap, flux, min_distance=5)
    assert labels[40, 30] != labels[40, 50]
    assert {labels[40, 30], labels[40, 50]} == {3, 4}
    assert labels[40, 30] == 3  # the brighter peak first
    assert labels[15, 85] == 2 and labels[0, 0] == 0
    assert table["id"].tolist() == [2, 3, 4]
    assert table["parent_id"].tolist() == [2, 1, 1]
    assert table["sub_id"].tolist() == [0, 1, 2]
    # the split follows the flux valley
    assert labels[40, 39] == 3 and labels[40, 42] == 4
    assert np.array_equal(labels > 0, segmap > 0)


def test_deblend_min_distance_and_positions():
    flux = 100 * _blob(40, 30, 3) + 60 * _blob(40, 50, 3)
    segmap = np.zeros(flux.shape, np.int32)
    segmap[25:55, 15:65] = 1
    labels, table = deblend(segmap, flux, min_distance=25)
    assert table["sub_id"].tolist() == [0] and labels[40, 50] == 1
    labels, table = deblend(segmap, flux, positions=[(40, 50), (40, 30)])
    assert labels[40, 50] == 2 and labels[40, 30] == 3  # in the order given
    assert table["parent_id"].tolist() == [1, 1]


def test_object_morphology_is_flux_weighted():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(80, 100)).transpose(2, 0, 1)
    flux = rng.uniform(-1, 5, size=(80, 100))
    labels = np.zeros((80, 100), np.int32)
    labels[10:20, 10:30] = 4
    labels[50:60, 40:45] = 7
    out = object_morphology(labels, flux, probs)
    assert out["id"].tolist() == [4, 7]
    inside = labels == 7
    w = np.clip(flux[inside], 0, None)
    expected = (probs[:, inside] * w).sum(axis=1) / w.sum()
    np.testing.assert_allclose(out["weighted"][1], expected)
    np.testing.assert_allclose(out["morphology"][1], expected[:4] / expected[:4].sum())
    np.testing.assert_allclose(out["morphology"].sum(axis=1), 1)
    y, x = out["y"][1], out["x"][1]
    assert flux[y, x] == flux[inside].max()
    assert out["dominant"][1] == out["class_names"][expected[:4].argmax()]


def test_object_morphology_pure_classes():
    probs = np.zeros((5, 80, 100))
    probs[1] = 1.0  # disk everywhere
    labels = np.zeros((80, 100), np.int32)
    labels[5:9, 5:9] = 1
    out = object_morphology(labels, np.ones((80, 100)), probs)
    assert out["dominant"].tolist() == ["disk"]
    np.testing.assert_allclose(out["morphology"][0], [0, 1, 0, 0])


def test_colour_image_and_png(tmp_path):
    probs = np.zeros((5, 4, 6))
    probs[4, 0] = 1.0                 # row 0: background -> black
    probs[1, 1] = 1.0                 # row 1: certain disk -> saturated blue
    probs[0, 2], probs[3, 2] = 0.5, 0.5  # row 2: spheroid/point source tie -> white
    probs[0, 3] = 1.0                 # row 3: spheroid -> red
    n = np.ones((4, 6), int)
    n[3, 5] = 0                       # never classified -> black
    rgb = colour_image(probs, n)
    assert rgb.shape == (4, 6, 3)
    assert np.allclose(rgb[0], 0)
    assert rgb[1, 0, 2] > 0.9 and rgb[1, 0, 1] < 0.1
    assert np.allclose(rgb[2], 1)
    assert np.allclose(rgb[3, 0], [1, 0, 0]) and np.allclose(rgb[3, 5], 0)
    only = colour_image(probs, n, sources=np.arange(6) < 3)   # objects in columns 0-2
    assert np.allclose(only[:, 3:], 0) and np.allclose(only[:, :3], rgb[:, :3])
    path = write_colour_png(tmp_path / "morph.png", probs, n)
    back = np.asarray(Image.open(path))
    assert back.shape == (4, 6, 3) and back.dtype == np.uint8
    assert back[3, 0].tolist() == [255, 0, 0]
    assert list(tmp_path.iterdir()) == [path]
