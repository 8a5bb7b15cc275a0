"""benchmarks/photometry_quality.py: how fluxes are compared with the truth (no mosaic is run)."""

import math

import numpy as np
import pytest

from benchmark_scripts import BENCHMARKS, load_benchmark


@pytest.fixture
def photometry(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports mosaic_quality's pipeline
    return load_benchmark("photometry_quality")


def test_ratios_per_bin_and_class_of_matched_sources_only(photometry):
    truth = {"x": np.array([10.0, 50.0, 90.0, 130.0]), "y": np.zeros(4),
             "snr": np.array([15.0, 50.0, 500.0, 20.0]),
             "class": np.array(["galaxy", "star", "galaxy", "galaxy"]),
             "image_flux_r": np.array([10.0, 20.0, 40.0, 5.0]),
             "flux_r": np.array([99.0, 99.0, 99.0, 99.0])}  # the model's, beyond the image
    catalog = {"x": np.array([90.5, 10.4, 50.0, 300.0]), "y": np.zeros(4),
               "flux_r": np.array([36.0, 8.0, 20.0, 1.0]),
               "flux_auto_r": np.array([40.0, 11.0, 19.0, 1.0])}
    rows = photometry.compare(catalog, truth, {"iso": "flux_r", "auto": "flux_auto_r"}, "r", 2.0)
    by = {(r["bin"], r["class"]): r for r in rows}
    # the source at x = 130 has no catalog object within 2 px: it is in no ratio
    assert by[("10-30", "all")]["iso"] == (1, 0.8, 0.0)
    assert by[("10-30", "galaxy")]["auto"] == (1, pytest.approx(1.1), 0.0)
    assert by[("30-100", "star")]["auto"] == (1, 0.95, 0.0)
    assert by[("100-1000", "all")]["iso"] == (1, 0.9, 0.0)
    assert by[("30-100", "galaxy")]["iso"][0] == 0
    assert by[("1000-inf", "all")]["auto"][0] == 0 and math.isnan(by[("1000-inf", "all")]["auto"][1])


def test_robust_scatter_and_the_summary(photometry):
    n, median, scatter = photometry.ratio_stats([1.0, 1.1, 0.9, 1.0, 5.0, np.nan], np.ones(6))
    assert (n, median) == (5, 1.0) and scatter == pytest.approx(1.4826 * 0.1)
    results = {"a": {"rows": [{"class": "all", "x": (3, 0.9, 0.2)},
                              {"class": "star", "x": (3, 0.5, 0.9)},
                              {"class": "all", "x": (0, float("nan"), float("nan"))}]},
               "b": {"rows": [{"class": "all", "x": (2, 1.2, 0.4)}]}}
    bias, scatter = photometry.bias_summary(results, ["x"])["x"]
    assert bias == pytest.approx(0.3) and scatter == pytest.approx(0.3)
    assert photometry.parse_annuli("none,1.2:2") == [None, (1.2, 2.0)]
    assert photometry.parse_annuli("") == []


def test_the_real_pixels_flux_ratio_leaves_out_what_cannot_be_divided():
    real = load_benchmark("real_sdss")
    assert real.ratio_text([2.0, 3.0, np.nan, -1.0, 4.0], [2.0, 3.0, 1.0, 1.0, 0.0]) == \
        "1.000 ± 0.000 (2)"
    assert real.ratio_text([np.nan], [1.0]) == "none"


def test_half_light_radii_are_compared_with_the_psf_and_the_true_size(photometry):
    truth = {"x": np.array([10.0, 50.0, 90.0]), "y": np.zeros(3),
             "snr": np.array([50.0, 50.0, 50.0]), "class": np.array(["star", "star", "galaxy"]),
             "hlr": np.array([0.0, 0.0, 0.5]),
             "flux_g": np.array([1.0, 0.0, 1.0]), "flux_r": np.array([1.0, 0.0, 1.0]),
             "flux_z": np.array([1.0, 1.0, 1.0])}
    expected = photometry.expected_half_light_radius(truth, "decam", ["g", "r", "z"])
    # the preset's FWHM are 1.10, 1.00, 0.95" at 0.262"/px: a star of z light alone is the
    # smaller, and the galaxy's size adds in quadrature
    assert 1.9 < expected[1] < expected[0] < 2.6
    assert expected[2] == pytest.approx(np.hypot(0.5 / 0.262, 2.3), rel=0.06)
    catalog = {"x": truth["x"].copy(), "y": np.zeros(3), "flux_radius": expected * 1.1}
    rows = photometry.compare(catalog, truth, {"r": "flux_radius"}, "r", 2.0,
                              reference=expected)
    by = {(r["bin"], r["class"]): r for r in rows}
    assert by[("30-100", "star")]["r"] == (2, pytest.approx(1.1), pytest.approx(0.0))


def test_kron_fluxes_apart_by_their_neighbours_bit(photometry):
    from astrodask.kron import AUTO_FLAGS

    catalog = {"flux_auto_r": np.array([1.0, 2.0, 3.0]),
               "auto_flags": np.array([0, AUTO_FLAGS["neighbours"] | 1, 1])}
    split = photometry.neighbour_split(catalog, "flux_auto_r")
    np.testing.assert_array_equal(split["auto, clear"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(split["auto, neighbours"], [np.nan, 2.0, np.nan])
    assert photometry.neighbour_split({"flux_auto_r": np.ones(2)}, "flux_auto_r") == {}
