"""benchmarks/gallery.py: crops land on the same mosaic pixels in every picture."""

import numpy as np
from astropy.io import fits
from PIL import Image

from benchmark_scripts import load_benchmark


def load():
    return load_benchmark("gallery")


def test_crops_of_the_pictures_and_the_segmentation_map_agree(tmp_path):
    gallery = load()
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    out.mkdir()
    ids = np.zeros((100, 120), np.int32)
    ids[60:70, 30:45] = 7                      # an object at mosaic y 60-69, x 30-44
    fits.PrimaryHDU(ids).writeto(results / "segmap.fits")
    picture = np.zeros((100, 120, 3), np.uint8)
    picture[60:70, 30:45] = 255
    Image.fromarray(picture[::-1]).save(results / "overview.png")   # quick-looks: y upwards
    gallery.main([str(results), "--prefix", "t", "--corner", "50", "20", "--size", "40",
                  "--out", str(out)])
    crop = np.asarray(Image.open(out / "t_overview_crop.png"))
    seg = np.asarray(Image.open(out / "t_segmap_crop.png"))
    assert crop.shape == seg.shape == (40, 40, 3)
    lit, coloured = crop.any(axis=2), seg.any(axis=2)
    assert lit.sum() == 10 * 15
    assert np.array_equal(lit, coloured)
    rows = np.flatnonzero(lit.any(axis=1))
    assert rows[0] == 40 - 20 and rows[-1] == 40 - 11      # y upwards: mosaic y 60-69 of 50-89
    assert not (out / "t_morpheus_colour_crop.jpg").exists()
    assert Image.open(out / "t_overview.jpg").size == (120, 100)
