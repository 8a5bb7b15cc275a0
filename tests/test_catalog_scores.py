"""Scoring a whole-mosaic catalog against truth."""

import numpy as np
import pytest

from astrodask.catalog_scores import (bright_sources, catalog_agreement, match_positions,
                                      morphology_confusion, nearest_neighbour_distance,
                                      pooled_regions, region_masks, score_catalog)
from astrodask.mosaic import TileGrid


def test_match_is_one_to_one_and_nearest_first():
    a, b = match_positions([0.0, 1.0, 50.0], [0.0, 0.0, 0.0], [0.9, 10.0], [0.0, 0.0], 2.0)
    assert list(a) == [-1, 0, -1] and list(b) == [1, -1]
    a, b = match_positions([], [], [1.0], [1.0], 2.0)
    assert len(a) == 0 and list(b) == [-1]


def test_regions_of_a_grid():
    grid = TileGrid(1024, 1024, tile=512, halo=32)      # cores of 448: 3x3 windows
    r = region_masks([600.0, 100.0, 440.0, 600.0], [600.0, 600.0, 600.0, 1000.0], grid)
    assert list(r["interior"]) == [True, False, False, False]   # only window (1, 1) is inside
    assert list(r["edge_window"]) == [False, True, True, True]
    assert list(r["seam"]) == [False, False, True, False]     # 440 is 8 px from the seam at 448
    flagged = np.zeros((1024, 1024), bool)
    flagged[:, 603] = True
    assert list(region_masks([600.0, 100.0], [10.0, 10.0], grid, flagged)["near_flagged"]) == \
        [True, False]


def test_score_catalog_counts_completeness_purity_classes_and_duplicates():
    grid = TileGrid(1024, 1024, tile=512, halo=32)
    truth = {"x": np.array([100.0, 300.0, 600.0, 800.0, 900.0]),
             "y": np.array([100.0, 300.0, 600.0, 800.0, 100.0]),
             "snr": np.array([50.0, 20.0, 12.0, 5.0, 30.0]),
             "class": np.array(["star", "galaxy", "galaxy", "galaxy", "star"])}
    catalog = {"x": np.array([100.5, 301.0, 600.0, 600.5, 400.0]),
               "y": np.array([100.0, 300.0, 601.0, 600.0, 400.0]),
               "source_class": np.array(["star", "galaxy", "galaxy", "star", "galaxy"],
                                        dtype=object)}
    flagged = np.zeros((1024, 1024), bool)
    flagged[95:105, 895:905] = True       # the last true source sits on flagged pixels
    s = score_catalog(catalog, truth, grid, flagged)
    assert s["n_truth"] == 3 and s["completeness"] == 1.0
    assert s["purity"] == 3 / 5 and s["duplicates"] == 1
    assert s["star_accuracy"] == 1.0 and s["galaxy_accuracy"] == 0.5
    assert catalog_agreement(catalog, catalog) == (1.0, 1.0)


def test_nearest_neighbour_distance_among_the_chosen_neighbours():
    x, y = [0.0, 3.0, 3.0, 100.0], [0.0, 0.0, 4.0, 0.0]
    np.testing.assert_allclose(nearest_neighbour_distance(x, y), [3.0, 3.0, 4.0, 97.0])
    # only the last two count as neighbours: each point's nearest among them, never itself
    np.testing.assert_allclose(nearest_neighbour_distance(x, y, [False, False, True, True]),
                               [5.0, 4.0, np.hypot(97.0, 4.0), np.hypot(97.0, 4.0)])
    assert list(nearest_neighbour_distance(x, y, [True, False, False, False])) == \
        [np.inf, 3.0, 5.0, 100.0]
    assert np.isinf(nearest_neighbour_distance(x, y, [False] * 4)).all()
    assert len(nearest_neighbour_distance([], [])) == 0


def test_completeness_by_distance_to_the_nearest_neighbour():
    grid = TileGrid(1024, 1024, tile=512, halo=32)
    # an isolated source, a close pair (2.5 px) caught as one object, and a faint
    # neighbour (S/N 3) that does not count as one
    truth = {"x": np.array([100.0, 500.0, 502.5, 800.0, 801.0]),
             "y": np.array([100.0, 500.0, 500.0, 800.0, 800.0]),
             "snr": np.array([50.0, 20.0, 20.0, 30.0, 3.0]),
             "class": np.array(["star", "galaxy", "galaxy", "galaxy", "galaxy"])}
    catalog = {"x": np.array([100.0, 501.0, 800.0]), "y": np.array([100.0, 500.0, 800.0])}
    s = score_catalog(catalog, truth, grid, separation_edges=(0.0, 2.0, 3.0, np.inf))
    closest, pair, apart = s["completeness_by_separation"]
    assert closest[3] == 0 and np.isnan(closest[2])
    assert pair == (2.0, 3.0, 0.5, 2) and apart == (3.0, np.inf, 1.0, 2)


def test_median_offset_from_the_true_position_per_snr_bin():
    grid = TileGrid(1024, 1024, tile=512, halo=32)
    truth = {"x": np.array([100.0, 200.0, 300.0, 400.0, 500.0]), "y": np.full(5, 50.0),
             "snr": np.array([8.0, 15.0, 15.0, 15.0, 60.0]),
             "class": np.array(["galaxy"] * 5)}
    # offsets 0.5 (S/N 8), 0.3 and 1.1 (S/N 15; the third S/N 15 source is missed), 0.1
    catalog = {"x": np.array([100.5, 200.0, 301.1, 500.0]),
               "y": np.array([50.0, 50.3, 50.0, 50.1])}
    s = score_catalog(catalog, truth, grid, snr_edges=(5.0, 10.0, 50.0, np.inf))
    low, mid, high = s["offset_by_snr"]
    assert low == pytest.approx((5.0, 10.0, 0.5, 1))
    assert mid == pytest.approx((10.0, 50.0, 0.7, 2))
    assert high == pytest.approx((50.0, np.inf, 0.1, 1))
    empty = score_catalog(catalog, truth, grid, snr_edges=(100.0, np.inf))["offset_by_snr"]
    assert np.isnan(empty[0][2]) and empty[0][3] == 0


def test_morphology_confusion_counts_matched_bright_sources():
    truth = {"x": np.array([10.0, 50.0, 90.0, 130.0, 170.0]), "y": np.zeros(5),
             "snr": np.array([30.0, 25.0, 40.0, 10.0, 60.0]),
             "morphology": np.array(["disk", "disk", "spheroid", "disk", "point_source"])}
    catalog = {"x": np.array([10.5, 50.0, 90.0, 130.0, 300.0]), "y": np.zeros(5),
               "morphology": np.array(["disk", "irregular", "spheroid", "disk", "disk"],
                                      dtype=object)}
    m = morphology_confusion(catalog, truth)
    assert m["classes"] == ["spheroid", "disk", "irregular", "point_source"]
    # the S/N 10 disk is below the cut; the point source has no counterpart
    assert m["matrix"][1] == [0, 1, 1, 0] and m["matrix"][0] == [1, 0, 0, 0]
    assert m["recall"]["disk"] == 0.5 and m["n"]["point_source"] == 0
    assert np.isnan(m["recall"]["point_source"])


def test_regions_pooled_over_fields_count_every_source_once():
    def field(found_in, n_in, found_edge, n_edge, real, n_cat):
        def region(found, n):
            return {"completeness": found / n if n else float("nan"), "n_truth": n,
                    "purity": real / n_cat, "n_catalog": n_cat, "duplicates": 0}

        return {"regions": {"interior": region(found_in, n_in),
                            "edge_window": region(found_edge, n_edge),
                            "near_flagged": region(0, 0)}}

    pooled = pooled_regions([field(8, 10, 9, 10, 9, 10), field(45, 50, 40, 50, 27, 30)])
    interior, edge = pooled["interior"], pooled["edge_window"]
    assert interior["n_truth"] == 60 and interior["completeness"] == 53 / 60
    assert edge["completeness"] == 49 / 60 and edge["purity"] == 36 / 40
    assert edge["difference"] == 49 / 60 - 53 / 60 and interior["difference"] == 0
    c1, c2 = 49 / 60, 53 / 60
    assert np.isclose(edge["difference_error"], np.sqrt(c1 * (1 - c1) / 60 + c2 * (1 - c2) / 60))
    assert pooled["near_flagged"]["n_truth"] == 0 and np.isnan(pooled["near_flagged"]["difference"])
    assert pooled_regions([]) == {}


def test_bright_sources_lost_and_large_galaxy_fluxes():
    truth = {"x": np.array([10.0, 50.0, 90.0, 130.0]), "y": np.array([10.0, 10.0, 10.0, 10.0]),
             "snr": np.array([500.0, 200.0, 150.0, 20.0]), "hlr": np.array([2.0, 1.8, 0.3, 2.0]),
             "class": np.array(["galaxy", "galaxy", "star", "galaxy"]),
             "n_neighbours": np.array([0, 0, 0, 0]),
             "bbox_y0": np.array([0, 0, 0, 0]), "bbox_y1": np.array([20, 20, 20, 20]),
             "bbox_x0": np.array([0, 40, 80, 120]), "bbox_x1": np.array([20, 60, 100, 140])}
    # the first galaxy found 3 px off (a knot), the second lost, the star found
    catalog = {"x": np.array([13.0, 90.0, 130.0]), "y": np.array([10.0, 10.0, 10.0]),
               "flux_r": np.array([102.0, 5.0, 1.0])}
    result = bright_sources(catalog, truth, mask_flux=np.array([100.0, 50.0, 5.0, 1.0]))
    assert result["n_bright"] == 3 and result["lost"] == 1 and result["lost_extended"] == 1
    assert result["n_large"] == 2 and result["large_found"] == 1
    np.testing.assert_allclose(result["large_flux_ratios"], [1.02])
    assert result["large_within_3pct"] == 1
    # the noiseless flux of the object's segment: how much of the galaxy the segment holds
    held = bright_sources(catalog, truth, mask_flux=np.array([100.0, 50.0, 5.0, 1.0]),
                          segment_flux=np.array([96.0, 5.0, 1.0]))
    np.testing.assert_allclose(held["large_segment_ratios"], [0.96])
    assert held["large_segment_within_3pct"] == 0 and held["large_within_3pct"] == 1
    # a large galaxy with flagged pixels in its box is not counted as isolated
    flagged = np.zeros((20, 200), bool)
    flagged[5, 45] = True
    assert bright_sources(catalog, truth, flagged=flagged)["n_large"] == 1
    # a source centred on flagged pixels is not lost: it cannot be catalogued
    flagged[10, 50] = True
    assert bright_sources(catalog, truth, flagged=flagged)["lost"] == 0


def test_shape_agreement_scores_angles_modulo_180_and_axis_ratios_per_snr_bin():
    from astrodask.catalog_scores import shape_agreement

    rng = np.random.default_rng(2)
    n = 60
    truth = {"x": np.arange(n) * 10.0, "y": np.zeros(n), "class": ["galaxy"] * (n - 1) + ["star"],
             "snr": np.where(np.arange(n) < 30, 20.0, 200.0), "q": rng.uniform(0.2, 1.0, n),
             "position_angle": rng.uniform(0, 180, n)}
    # a catalog whose angles are the truth's wrapped to (-90, 90] and 4 deg off, b/a = q
    theta = (truth["position_angle"] + 4.0 + 90.0) % 180.0 - 90.0
    catalog = {"x": truth["x"] + 0.5, "y": truth["y"], "a_image": np.full(n, 3.0),
               "b_image": 3.0 * truth["q"], "theta_image": theta}
    faint, bright = shape_agreement(catalog, truth, snr_edges=(10.0, 100.0))
    assert faint["snr_max"] == 100.0 and bright["snr_max"] is None
    assert faint["n"] == 30 and bright["n"] == 29                 # the star is left out
    assert faint["n_elongated"] == int((truth["q"][:30] < 0.5).sum())
    assert faint["median_angle_error"] == pytest.approx(4.0) and faint["within_15_deg"] == 1.0
    assert bright["axis_ratio_correlation"] == pytest.approx(1.0)
    # a catalog at random angles, one object missing
    catalog["theta_image"] = rng.uniform(-90, 90, n)
    catalog["x"][0] = 1e6
    faint, bright = shape_agreement(catalog, truth, snr_edges=(10.0, 100.0))
    assert faint["n"] == 29 and 20 < faint["median_angle_error"] < 70
    empty = {k: np.zeros(0) for k in catalog}
    assert shape_agreement(empty, truth)[0]["n"] == 0
