"""AB zero points from what a band's FITS header states."""

import math

import numpy as np
import pytest

from astrodask.zeropoints import ab_zeropoint


@pytest.mark.parametrize("header, zeropoint, source", [
    ({"MAGZERO": 27.1, "BUNIT": "nanomaggy"}, 27.1, "MAGZERO"),          # stated wins
    ({"BUNIT": "nanomaggy"}, 22.5, "BUNIT nanomaggy"),                   # SDSS frames
    ({"BUNIT": "nanomaggies"}, 22.5, "BUNIT nanomaggies"),
    ({"BUNIT": "Jy"}, 2.5 * math.log10(3631), "BUNIT Jy"),
    ({"BUNIT": "uJy"}, 23.9, "BUNIT uJy"),
    ({"BUNIT": "nJy"}, 31.4, "BUNIT nJy"),
    # WFC3/IR F160W: STScI's AB zero point 25.946
    ({"BUNIT": "ELECTRONS/S", "PHOTFLAM": 1.9275e-20, "PHOTPLAM": 15369.176}, 25.946,
     "PHOTFLAM/PHOTPLAM"),
    ({"PHOTFLAM": 1.9275e-20, "PHOTPLAM": 15369.176}, 25.946, "PHOTFLAM/PHOTPLAM"),
    # JWST: MJy/sr over a pixel of PIXAR_SR
    ({"BUNIT": "MJy/sr", "PIXAR_SR": 2.0e-13}, -2.5 * math.log10(1e6 * 2.0e-13 / 3631),
     "BUNIT MJy/sr x PIXAR_SR"),
])
def test_zero_points_stated_in_the_ways_surveys_state_them(header, zeropoint, source):
    value, origin = ab_zeropoint(header)
    assert value == pytest.approx(zeropoint, abs=1e-3) and origin == source


@pytest.mark.parametrize("header", [
    {}, {"BUNIT": "ADU"}, {"BUNIT": "electron/s"}, {"BUNIT": "MJy/sr"},   # no calibration
    {"BUNIT": "ELECTRONS", "PHOTFLAM": 1e-20, "PHOTPLAM": 5000.0},         # not a rate
    {"BUNIT": "not a unit"}, {"MAGZERO": "n/a"}, {"MAGZERO": float("nan")},
    {"PHOTFLAM": -1.0, "PHOTPLAM": 5000.0},
])
def test_no_zero_point_where_nothing_calibrates_the_pixels(header):
    assert ab_zeropoint(header) == (None, None)


def test_a_nanomaggy_store_carries_the_zero_point_its_catalog_uses(tmp_path):
    """An SDSS-like band (BUNIT nanomaggy, no MAGZERO): a source of 100 nMgy is 17.5 mag."""
    from test_ingest import HEIGHT, WIDTH, ingest_small, write_band

    rng = np.random.default_rng(0)
    paths = [write_band(tmp_path / f"{b}.fits", rng.normal(size=(HEIGHT, WIDTH)), b,
                        extra={"BUNIT": "nanomaggy"}) for b in "gr"]
    mosaic = ingest_small(paths, tmp_path / "m.zarr")
    assert mosaic.attrs["zeropoints"] == {"g": 22.5, "r": 22.5}
    assert mosaic.attrs["zeropoint_sources"] == {"g": "BUNIT nanomaggy", "r": "BUNIT nanomaggy"}
    from astrodask.measure import ab_magnitude

    assert ab_magnitude(100.0, mosaic.attrs["zeropoints"]["r"]) == pytest.approx(17.5)
