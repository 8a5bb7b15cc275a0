"""The shipped Mask R-CNN through ingest, engine and merge, scored against truth.

A 1024x1024 ``decam`` field (3x3 windows of 512 with halo 32; the last row
and column of windows reach far past the mosaic) with a seed never used in
training. What is checked is the product, the whole mosaic's catalog: windows
at the mosaic edge find what interior windows find, no object is catalogued
twice, and a masked stripe neither blinds its surroundings nor yields
detections centred on it.
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

import astrodask
from astrodask.catalog_scores import match_positions, score_catalog

SEED = 2_100_000
STRIPE = slice(500, 512)    # masked columns (all bands), inside window (1, 1)'s core


def _pipeline(images, folder, **options):
    from distributed import Client, LocalCluster

    from astrodask.engine.plugin import worker_environment

    folder.mkdir(parents=True, exist_ok=True)
    mosaic = astrodask.ingest(images, folder / "m.zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env=worker_environment(1)) as cluster, Client(cluster) as client:
        summary = astrodask.run(mosaic, folder / "results", client=client, models=["maskrcnn"],
                                **options)
    astrodask.merge(summary.results, mosaic=mosaic,
                    options=astrodask.MergeOptions(pictures=False))
    catalog = pq.read_table(folder / "results" / "catalog.parquet").to_pydict()
    return mosaic, {k: np.asarray(v) for k, v in catalog.items()}


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality")
    sim = astrodask.simulate(folder / "field", size=(1024, 1024), preset="decam", seed=SEED)
    truth = pq.read_table(folder / "field" / "truth.parquet").to_pydict()
    return folder, [folder / "field" / f"{b}.fits" for b in sim["bands"]], truth


def test_edge_windows_find_what_interior_windows_find(field):
    folder, images, truth = field
    mosaic, catalog = _pipeline(images, folder / "plain")
    score = score_catalog(catalog, truth, mosaic.tile_grid)
    interior = score["regions"]["interior"]["completeness"]
    edge = score["regions"]["edge_window"]["completeness"]
    assert score["regions"]["edge_window"]["n_truth"] > 200
    assert edge >= interior - 0.05, (edge, interior)
    assert score["completeness"] > 0.9
    assert score["duplicates"] == 0
    assert len(np.unique(catalog["id"])) == len(catalog["id"])
    # bright stars sit at the peak of their own light (the card's centres.star_peak_snr),
    # closer than the heatmap's ~0.06 px
    to_truth, _ = match_positions(catalog["x"], catalog["y"], truth["x"], truth["y"], 2.0)
    hit = to_truth >= 0
    offset = np.hypot(catalog["x"][hit] - np.asarray(truth["x"])[to_truth[hit]],
                      catalog["y"][hit] - np.asarray(truth["y"])[to_truth[hit]])
    bright_star = ((np.asarray(truth["class"])[to_truth[hit]] == "star")
                   & (np.asarray(truth["snr"])[to_truth[hit]] >= 100))
    assert bright_star.sum() >= 8 and np.median(offset[bright_star]) < 0.03
    # the card's catalog cut was applied; under it only what the weak rule vouches for
    record = json.loads((folder / "plain" / "results" / "merge.json").read_text())
    card = astrodask.model_card("maskrcnn_decam")
    cut, floor = card["catalog_min_score"], card["catalog_weak_min_score"]
    assert record["min_score_applied"] == cut
    assert record["options"]["weak_min_score"] == floor
    assert catalog["class_score"].min() >= floor
    under = catalog["class_score"] < cut
    assert 0 < under.sum() < 0.05 * len(under)


def test_masked_stripe_gives_no_detection_on_it_and_flags_its_neighbours(field, tmp_path):
    folder, images, truth = field
    damaged = []
    for path in images:
        with fits.open(path) as hdul:
            data = hdul[0].data.copy()
            data[:, STRIPE] = np.nan
            fits.PrimaryHDU(data, hdul[0].header).writeto(tmp_path / path.name)
        damaged.append(tmp_path / path.name)
    # one pass per window (the shipped fused flips are tested above): 8x less work
    mosaic, catalog = _pipeline(damaged, tmp_path, config={"maskrcnn": {"flips": False}})
    x, y = catalog["x"], catalog["y"]
    assert not ((np.round(x) >= STRIPE.start) & (np.round(x) < STRIPE.stop)).any()
    # bright true sources centred beside the stripe whose true footprint reaches
    # into it: found, and flagged as masked
    tx, ty, snr, x0, x1 = (np.asarray(truth[k]) for k in ("x", "y", "snr", "bbox_x0", "bbox_x1"))
    outside = (np.round(tx) < STRIPE.start - 1) | (np.round(tx) > STRIPE.stop)
    beside = (snr >= 10) & outside & (x1 > STRIPE.start) & (x0 < STRIPE.stop)
    assert beside.sum() >= 5
    to_truth, to_catalog = match_positions(x, y, tx[beside], ty[beside], 2.0)
    found = to_catalog[to_catalog >= 0]
    assert len(found) >= beside.sum() - 1
    assert catalog["masked"][found].all()
    assert (catalog["quality_flags"][found] & 8).all()
    # and the rest of the window is not blinded: away from the stripe, as good as without it
    flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
    score = score_catalog({"x": x, "y": y}, truth, mosaic.tile_grid, flagged)
    assert score["regions"]["near_flagged"]["completeness"] >= score["completeness"] - 0.1
    assert score["completeness"] > 0.9


def test_the_flagged_field_puts_many_sources_near_thin_flags():
    """The benchmark's ``flagged`` layout: seeded, thin features, ~15% of pixels near a flag."""
    from scipy import ndimage

    from benchmark_scripts import load_benchmark

    quality = load_benchmark("mosaic_quality")
    nan, zero = quality.thin_flags(2048, seed=5)  # the benchmark's size
    again = quality.thin_flags(2048, seed=5)
    assert np.array_equal(nan, again[0]) and np.array_equal(zero, again[1])
    flagged = nan | zero
    near = (ndimage.distance_transform_edt(~flagged) <= 5) & ~flagged
    assert 0.04 < flagged.mean() < 0.12 and 0.10 < near.mean() < 0.25
    # the features are thin: an opening by a 21 px square leaves only where two cross
    wide = ndimage.binary_opening(flagged, structure=np.ones((21, 21), bool))
    assert wide.sum() < 0.02 * flagged.sum()


def test_missed_sources_are_told_apart_by_cause():
    """Offset objects, sources swallowed by a matched or unmatched segment, and sky."""
    from benchmark_scripts import load_benchmark

    quality = load_benchmark("mosaic_quality")
    truth = {"x": [10.0, 30.0, 34.0, 60.0, 80.0, 90.0, 50.0],
             "y": [10.0, 30.0, 30.0, 60.0, 10.0, 90.0, 50.0],
             "snr": [50.0, 80.0, 20.0, 15.0, 12.0, 30.0, 5.0]}
    # object 1 matches source 0; 2 matches source 1 and its segment holds source 2;
    # 3 lies 4 px from source 3 (offset); 4 is unmatched, far from source 4 whose
    # pixel its segment holds; source 5 is on the sky; source 6 is too faint to count
    catalog = {"id": np.array([1, 2, 3, 4]), "x": np.array([10.5, 30.0, 64.0, 80.0]),
               "y": np.array([10.0, 30.5, 60.0, 22.0])}
    segmap = np.zeros((100, 100), np.int32)
    segmap[25:36, 25:40] = 2
    segmap[5:25, 75:85] = 4
    causes = quality.missed_causes(catalog, truth, segmap, radius=2.0)
    assert causes == {"offset": 1, "in_matched_segment": 1, "in_unmatched_segment": 1,
                      "not_detected": 1}
    # a wider match radius takes the offset object as a match
    wide = quality.missed_causes(catalog, truth, segmap, radius=5.0)
    assert wide["offset"] == 0 and sum(wide.values()) == 3


def test_the_unsubtracted_sky_is_tilted_at_each_bands_noise_and_leaves_nans(tmp_path):
    """``--sky``: level x σ per band, 5% across x and 2% along y squared; NaNs stay."""
    from benchmark_scripts import load_benchmark

    quality = load_benchmark("mosaic_quality")
    sigmas = {"g": 2.0, "r": 0.5}
    (tmp_path / "simulation.json").write_text(json.dumps({"sigma": sigmas}))
    for band in sigmas:
        data = np.zeros((40, 50), np.float32)
        data[3, 4] = np.nan
        fits.PrimaryHDU(data).writeto(tmp_path / f"{band}.fits")
    assert quality.simulated_sigmas(tmp_path, ["r", "g"]) == [0.5, 2.0]
    quality.add_sky([tmp_path / f"{b}.fits" for b in sigmas], list(sigmas.values()), 100.0)
    stack = quality.fits_bands([tmp_path / f"{b}.fits" for b in sigmas])
    assert stack.shape == (2, 40, 50) and np.isnan(stack[:, 3, 4]).all()
    for k, sigma in enumerate(sigmas.values()):
        assert stack[k, 0, 0] == pytest.approx(100 * sigma)
        assert stack[k, 0, 49] / stack[k, 0, 0] == pytest.approx(1 + 0.05 * 49 / 50, rel=1e-6)
        assert stack[k, 39, 0] / stack[k, 0, 0] == pytest.approx(1 + 0.02 * (39 / 40) ** 2,
                                                                 rel=1e-6)
    # a band that saturates does so with the sky in its counts; NaNs stay NaN
    data = np.zeros((40, 50), np.float32)
    data[10, 10], data[3, 4] = 100.0, np.nan
    fits.PrimaryHDU(data, fits.Header([("SATURATE", 250.0)])).writeto(tmp_path / "z.fits")
    quality.add_sky([tmp_path / "z.fits"], [2.0], 100.0)
    clipped = fits.getdata(tmp_path / "z.fits")
    assert clipped[10, 10] == 250.0 and clipped[0, 0] == pytest.approx(200.0)
    assert np.isnan(clipped[3, 4])
