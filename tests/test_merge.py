"""Merge stage: ownership and stitching across windows, seam invariance, measurements.

The merge logic is tested model-free: each window "detects" the simulator's
truth masks clipped to the window (optionally perturbed per window), written
as the engine writes Mask R-CNN instance parts. A perfect detector must then
give the same catalog whatever the tile grid.
"""

from collections import Counter
from pathlib import Path
import re
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from scipy import ndimage

import astrodask
from astrodask import storage
from astrodask.catalog_scores import match_positions
from astrodask.engine.results import Results, write_parquet
from astrodask.storage import put_json
from astrodask.instances import tile_instances
from astrodask.merging.run import merge
from astrodask.mosaic import PADDING
from astrodask.simulation import read_object_masks

SIZE = (400, 440)
TRUTH_COLUMNS = ("id", "class_code", "x", "y", "ra", "dec", "n_neighbours", "mask_area")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge-field")
    astrodask.simulate(folder / "sim", size=SIZE, preset="decam", seed=11, noiseless=True)
    truth = pq.read_table(folder / "sim" / "truth.parquet").to_pydict()
    masks = {m.id: m for m in read_object_masks(folder / "sim" / "masks.parquet")}
    return folder, truth, masks


def ingest(folder, name, tile, halo, crop=0, saturate=None):
    """Ingest the simulated g, r, z bands (optionally without their first ``crop`` rows/columns,
    or with ``SATURATE`` at that quantile of each band's pixels)."""
    paths = []
    for band in "grz":
        with fits.open(folder / "sim" / f"{band}.fits") as hdul:
            header = hdul[0].header.copy()
            data = hdul[0].data[crop:, crop:]
            if saturate is not None:
                header["SATURATE"] = float(np.quantile(data, saturate))
            if crop:
                header["CRPIX1"] -= crop
                header["CRPIX2"] -= crop
            path = folder / f"{name}-{band}.fits"
            fits.writeto(path, data, header, overwrite=True)
            paths.append(path)
    return astrodask.ingest(paths, folder / f"{name}.zarr", bands=list("grz"), tile=tile,
                            halo=halo, overwrite=True)


def fake_detections(mosaic, masks, truth, out, crop=0, perturb=None, centres=False,
                    score_of=None):
    """Write instance parts as a perfect detector would see each window.

    ``score_of(id)``: each object's score (default 1)."""
    grid = mosaic.tile_grid
    results = Results(out)
    storage.makedirs(results.instances_dir)
    classes = dict(zip(truth["id"], truth["class_code"]))
    positions = {i: (y - crop, x - crop) for i, y, x in zip(truth["id"], truth["y"], truth["x"])}
    for iy, ix in grid.indices():
        tile = mosaic.read_tile(iy, ix)
        y0w, x0w = tile.origin
        t = grid.tile
        window_masks, ids = [], []
        for oid, m in masks.items():
            by0, bx0, by1, bx1 = (v - crop for v in m.box)
            if by1 <= y0w or bx1 <= x0w or by0 >= y0w + t or bx0 >= x0w + t:
                continue
            canvas = np.zeros((t, t), bool)
            sy0, sx0 = max(by0, y0w), max(bx0, x0w)
            sy1, sx1 = min(by1, y0w + t), min(bx1, x0w + t)
            canvas[sy0 - y0w:sy1 - y0w, sx0 - x0w:sx1 - x0w] = \
                m.mask[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0]
            if perturb is not None:
                canvas = perturb(canvas, iy, ix, oid)
            if canvas.any():
                window_masks.append(canvas)
                ids.append(oid)
        stack = np.array(window_masks).reshape(-1, t, t)
        brightness = np.where((tile.mask & PADDING).any(axis=0), 0.0, tile.data.sum(axis=0))
        # with ``centres``, each window's detector puts the object at its true position
        at = (np.array([positions[i] for i in ids]).reshape(-1, 2) - (y0w, x0w)
              if centres else None)
        table = tile_instances(tile, grid, stack, [classes[i] for i in ids],
                               np.array([score_of(i) if score_of else 1.0 for i in ids],
                                        np.float32), brightness, at)
        write_parquet(table, results.instances_path(iy, ix))
    put_json(results.file("run.json"), {
        "complete": True, "mosaic": str(mosaic.path), "mosaic_digest": mosaic.content_digest,
        "config": {},
        "models": [{"kind": "maskrcnn", "name": "truth", "card": {}, "path": ""}]})
    return out


def catalog(out):
    return pq.read_table(out / "catalog.parquet").to_pydict()


def truth_anchors(mosaic, masks, crop=0):
    """Brightest pixel (sum of bands) of every truth mask, as the detector's anchors."""
    image = np.nan_to_num(mosaic.array("image")[:], nan=0.0).sum(axis=0)
    anchors = {}
    for oid, m in masks.items():
        y0, x0, y1, x1 = (v - crop for v in m.box)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        part = m.mask[sy0 - y0:, sx0 - x0:]
        region = image[sy0:y1, sx0:x1][:part.shape[0], :part.shape[1]]
        part = part[:region.shape[0], :region.shape[1]]
        if not part.any():
            continue
        ay, ax = np.unravel_index(np.argmax(np.where(part, region, -np.inf)), part.shape)
        anchors[oid] = (sy0 + int(ay), sx0 + int(ax))
    return anchors


def truth_of_objects(out, labels_path):
    """For each catalog object, the truth id covering most of its segment."""
    segmap = fits.getdata(out / "segmap.fits")
    truth_labels = fits.getdata(labels_path)
    pairs = {}
    for oid in np.unique(segmap[segmap > 0]):
        values = truth_labels[segmap == oid]
        values = values[values > 0]
        pairs[int(oid)] = int(np.bincount(values).argmax()) if values.size else 0
    return pairs


def test_merge_reproduces_truth_objects_without_duplicates_or_splits(field):
    folder, truth, masks = field
    mosaic = ingest(folder, "small-tiles", tile=64, halo=8)  # halos far smaller than objects
    out = fake_detections(mosaic, masks, truth, folder / "res-small-tiles")
    summary = merge(out, options=None)
    cat = catalog(out)
    assert summary.n_objects == len(cat["id"]) > 50
    assert cat["id"] == list(range(1, len(cat["id"]) + 1))
    # A perfect detector's objects come out exactly once each: no duplicates, no split
    # pieces, none lost (two truth objects may share their brightest pixel, hence multisets).
    anchors = Counter(zip(cat["anchor_y"], cat["anchor_x"]))
    assert anchors == Counter(truth_anchors(mosaic, masks).values())
    # objects larger than the overlap (16 px) were assembled from several windows
    assert max(cat["n_pieces"]) >= 3
    assert any(cat["tile_edge"])
    assert (out / "segmap.fits").exists() and (out / "overview.png").exists()
    header = fits.getheader(out / "segmap.fits")
    assert header["CTYPE1"] == "RA---TAN" and header["NAXIS1"] == SIZE[1]


def test_objects_sit_at_the_detector_centres_with_the_centroid_beside(field):
    folder, truth, masks = field
    mosaic = ingest(folder, "centres", tile=64, halo=8)
    outputs = []
    for name, centres in (("res-centres", True), ("res-plain", False)):
        out = fake_detections(mosaic, masks, truth, folder / name, centres=centres)
        merge(out, options=None)
        outputs.append(catalog(out))
    centred, plain = outputs
    true_position = {(round(y), round(x)): (y, x) for y, x in zip(truth["y"], truth["x"])}
    # the same objects; positions are the centres handed over, the centroids as without them
    assert centred["anchor_y"] == plain["anchor_y"] and centred["id"] == plain["id"]
    np.testing.assert_allclose(centred["x_centroid"], plain["x"])
    np.testing.assert_allclose(centred["y_centroid"], plain["y"])
    assert plain["x_centroid"] == plain["x"]
    exact = [(y, x) in true_position.values() for y, x in zip(centred["y"], centred["x"])]
    assert sum(exact) >= 0.95 * len(exact) > 50
    assert np.isfinite(centred["ra"]).all() and centred["ra"] != plain["ra"]


@pytest.mark.parametrize("option, message", [
    ("irregular-centroid-snr", "irregular-centroid S/N must be >= 0"),
    ("peak-position-snr", "peak-position S/N must be >= 0")])
def test_cli_merge_checks_and_records_the_position_snrs(field, capsys, option, message):
    from astrodask import cli
    from astrodask.outputs.catalog import catalog_provenance

    folder, truth, masks = field
    mosaic = ingest(folder, f"cli-{option}", tile=128, halo=16)
    out = fake_detections(mosaic, masks, truth, folder / f"det-cli-{option}", centres=True)
    code = cli.main(["merge", str(out), f"--{option}", "-1", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (out / "catalog.parquet").exists()
    code = cli.main(["merge", str(out), f"--{option}", "40", "--no-pictures",
                     "--n-workers", "1", "--quiet"])
    assert code == 0
    options = catalog_provenance(out / "catalog.parquet")["merge_options"]
    assert options[option.replace("-", "_")] == 40.0


def _catalog_objects(out):
    cat = catalog(out)
    segmap = fits.getdata(out / "segmap.fits")
    return cat, segmap


def test_seam_invariance_between_shifted_grids(field):
    folder, truth, masks = field
    a = ingest(folder, "a", tile=128, halo=16)
    b = ingest(folder, "b", tile=128, halo=24, crop=40)  # core 80: grid shifted by half a core
    out_a = fake_detections(a, masks, truth, folder / "seam-a")
    out_b = fake_detections(b, masks, truth, folder / "seam-b", crop=40)
    merge(out_a)
    merge(out_b)
    cat_a, seg_a = _catalog_objects(out_a)
    cat_b, seg_b = _catalog_objects(out_b)
    # objects of A wholly inside B's area (away from its cropped edges)
    inside = [k for k in range(len(cat_a["id"]))
              if cat_a["bbox_y0"][k] >= 40 + 2 and cat_a["bbox_x0"][k] >= 40 + 2]
    by_anchor = {}
    for j, (y, x) in enumerate(zip(cat_b["anchor_y"], cat_b["anchor_x"])):
        by_anchor.setdefault((y + 40, x + 40), []).append(j)

    def same(k, j):
        dy = cat_a["y"][k] - (cat_b["y"][j] + 40)
        dx = cat_a["x"][k] - (cat_b["x"][j] + 40)
        sa = seg_a[40:, 40:] == cat_a["id"][k]
        sb = seg_b == cat_b["id"][j]
        return np.hypot(dy, dx) <= 1.0 and (sa & sb).sum() / (sa | sb).sum() >= 0.9

    matched = sum(any(same(k, j) for j in by_anchor.get(
        (cat_a["anchor_y"][k], cat_a["anchor_x"][k]), [])) for k in inside)
    assert len(inside) > 50
    assert matched / len(inside) >= 0.995
    anchors_b = Counter(zip(cat_b["anchor_y"], cat_b["anchor_x"]))
    assert anchors_b == Counter(truth_anchors(b, masks, crop=40).values()), \
        "duplicates or split objects on the shifted grid"


def test_one_window_equals_blockwise(field):
    folder, truth, masks = field
    whole = ingest(folder, "whole", tile=512, halo=16)  # 400x440 fits in one 480-pixel core
    tiled = ingest(folder, "tiled", tile=64, halo=8)
    assert len(whole.tile_grid) == 1 and len(tiled.tile_grid) > 40
    out_whole = fake_detections(whole, masks, truth, folder / "res-whole")
    out_tiled = fake_detections(tiled, masks, truth, folder / "res-tiled")
    merge(out_whole)
    merge(out_tiled)
    cw, ct = catalog(out_whole), catalog(out_tiled)
    for name in ("id", "parent_id", "x", "y", "ra", "dec", "area", "flux_g", "flux_r", "flux_z",
                 "source_class", "bbox_y0", "bbox_x1", "blended"):
        np.testing.assert_array_equal(np.asarray(cw[name]), np.asarray(ct[name]), err_msg=name)
    np.testing.assert_array_equal(fits.getdata(out_whole / "segmap.fits"),
                                  fits.getdata(out_tiled / "segmap.fits"))


def test_matching_tolerates_different_views(field):
    """Each window sees masks grown or shrunk by a pixel: still no duplicates, no splits."""
    from scipy import ndimage

    folder, truth, masks = field

    def perturb(canvas, iy, ix, oid):
        rng = np.random.default_rng([iy, ix, oid])
        if canvas.sum() > 40 and rng.random() < 0.5:
            return ndimage.binary_erosion(canvas) if rng.random() < 0.5 else \
                ndimage.binary_dilation(canvas)
        return canvas

    mosaic = ingest(folder, "a", tile=128, halo=16)
    out = fake_detections(mosaic, masks, truth, folder / "res-perturbed", perturb=perturb)
    merge(out)
    cat = catalog(out)
    anchors = list(zip(cat["anchor_y"], cat["anchor_x"]))
    expected = truth_anchors(mosaic, masks)
    # Views differ, so anchors may move by a pixel or two; count objects near a truth anchor.
    truth_points = np.array(list(expected.values()))
    near = [np.min(np.hypot(*(truth_points - a).T)) <= 2.5 for a in anchors]
    assert np.mean(near) >= 0.98
    assert abs(len(anchors) - len(expected)) <= 0.02 * len(expected)


def test_measurements_agree_with_truth_for_isolated_objects(field):
    folder, truth, masks = field
    mosaic = ingest(folder, "a", tile=128, halo=16)
    out = fake_detections(mosaic, masks, truth, folder / "res-measure")
    merge(out)
    cat = catalog(out)
    owners = truth_of_objects(out, folder / "sim" / "labels.fits")
    index = {tid: k for k, tid in enumerate(truth["id"])}
    noiseless = {b: fits.getdata(folder / "sim" / f"noiseless_{b}.fits") for b in "grz"}
    segmap = fits.getdata(out / "segmap.fits")
    checked = 0
    for k, oid in enumerate(cat["id"]):
        tid = owners.get(oid)
        if not tid:
            continue
        t = index[tid]
        if truth["n_neighbours"][t] or cat["truncated"][k] or cat["flux_err_r"][k] <= 0:
            continue
        if truth["morphology"][t] == "irregular":
            continue  # clumpy and asymmetric: the light centroid is not the profile centre
        if cat["flux_r"][k] < 35 * cat["flux_err_r"][k]:
            continue  # centroid precision needs signal (S/N 35: errors count the correlated noise)
        checked += 1
        assert abs(cat["x"][k] - truth["x"][t]) < 0.5 and abs(cat["y"][k] - truth["y"][t]) < 0.5
        sep = np.hypot((cat["ra"][k] - truth["ra"][t]) * np.cos(np.radians(truth["dec"][t])),
                       cat["dec"][k] - truth["dec"][t]) * 3600
        assert sep < 0.1
        for b in "grz":
            expected = noiseless[b][segmap == oid].sum()
            assert abs(cat[f"flux_{b}"][k] - expected) < 5 * cat[f"flux_err_{b}"][k] + 1e-3
            assert np.isfinite(cat[f"mag_{b}"][k])
    assert checked >= 5
    shapes_follow_the_true_axes(cat, truth)


def shapes_follow_the_true_axes(cat, truth):
    """Second-moment shapes of the catalog against the true galaxies' q and position angle."""
    a, b, theta = (np.array(cat[k]) for k in ("a_image", "b_image", "theta_image"))
    assert np.all(b <= a) and np.all((theta > -90) & (theta <= 90))
    to_cat, _ = match_positions(truth["x"], truth["y"], cat["x"], cat["y"], 1.5)
    galaxy = (np.asarray(truth["class"]) == "galaxy") & (to_cat >= 0)
    elongated = (galaxy & (np.asarray(truth["q"]) < 0.5) & (np.asarray(truth["hlr"]) > 0.4)
                 & (np.asarray(truth["n_neighbours"]) == 0))
    assert elongated.sum() >= 5
    k = to_cat[elongated]
    turn = (theta[k] - np.asarray(truth["position_angle"])[elongated] + 90) % 180 - 90
    assert np.median(np.abs(turn)) < 5.0
    with np.errstate(invalid="ignore"):
        ratio = b / a                              # NaN for a one-pixel segment
    assert np.nanmedian(ratio[k]) < 0.75
    rounder = galaxy & (np.asarray(truth["q"]) > 0.85)
    assert np.nanmedian(ratio[to_cat[rounder]]) > np.nanmedian(ratio[k]) + 0.15


def test_flux_errors_follow_the_correlated_sky_noise(field):
    """decam noise correlates neighbours (0.23): errors that ignored it were ~1.4x too small."""
    from astropy.stats import mad_std

    from astrodask.noise_correlation import LAGS

    folder, truth, masks = field
    mosaic = ingest(folder, "a", tile=128, halo=16)
    noise = (fits.getdata(folder / "sim" / "r.fits").astype(float)
             - fits.getdata(folder / "sim" / "noiseless_r.fits"))
    neighbours = np.mean(noise[:, 1:] * noise[:, :-1]) / np.mean(noise ** 2)
    rho = mosaic.attrs["band_stats"]["r"]["noise_correlation"]["rho"]
    assert abs(rho[LAGS.index((0, 1))] - neighbours) < 0.03
    out = fake_detections(mosaic, masks, truth, folder / "res-errors")
    merge(out)
    cat = catalog(out)
    segmap = fits.getdata(out / "segmap.fits")
    pulls = []
    for b in "grz":
        noiseless = fits.getdata(folder / "sim" / f"noiseless_{b}.fits")
        held = ndimage.sum_labels(noiseless, segmap, index=cat["id"])
        flux, error = np.array(cat[f"flux_{b}"]), np.array(cat[f"flux_err_{b}"])
        # faint objects: the sky's noise, not their own photons, sets the scatter
        faint = ~np.array(cat["truncated"]) & (error > 0) & (flux < 30 * error)
        pulls.extend(((flux - held) / error)[faint])
    assert len(pulls) >= 60
    assert 0.8 < mad_std(pulls) < 1.2


def test_magnitude_errors_are_the_spread_of_the_magnitudes():
    from astrodask.measure import ab_magnitude, ab_magnitude_error

    rng = np.random.default_rng(5)
    flux, flux_err = np.array([100.0, 20.0, 1.0, -3.0]), np.array([1.0, 1.0, 0.5, 1.0])
    draws = ab_magnitude(flux[:2, None] + flux_err[:2, None] * rng.normal(size=(2, 20000)), 22.5)
    error = ab_magnitude_error(flux, flux_err, 22.5)
    np.testing.assert_allclose(error[:2], draws.std(axis=1), rtol=0.03)
    assert error[2] == pytest.approx(0.5429, abs=1e-4) and np.isnan(error[3])
    assert np.isnan(ab_magnitude_error(flux, flux_err, None)).all()  # no zero point, no magnitude


def test_kron_fluxes_hold_the_total_light_across_windows(field):
    """AUTO fluxes of the merged catalog: as measured on the whole mosaic in one piece, and
    nearer the true total flux than the segment's sum."""
    from astrodask.kron import kron_photometry
    from astrodask.measure import measurement_noise

    folder, truth, masks = field
    mosaic = ingest(folder, "a", tile=128, halo=16)
    out = fake_detections(mosaic, masks, truth, folder / "res-kron")
    merge(out)
    cat = {k: np.asarray(v) for k, v in catalog(out).items()}
    noise, correlation = measurement_noise(mosaic)
    whole = kron_photometry(mosaic.array("image")[:], mosaic.array("mask")[:],
                            fits.getdata(out / "segmap.fits").astype(np.int32), cat["id"],
                            cat["x"], cat["y"], cat["a_image"], cat["b_image"],
                            cat["theta_image"], noise=noise, correlation=correlation)
    for b, band in enumerate("grz"):
        np.testing.assert_array_equal(cat[f"flux_auto_{band}"], whole["flux_auto"][:, b])
        np.testing.assert_array_equal(cat[f"flux_auto_err_{band}"], whole["flux_auto_err"][:, b])
    np.testing.assert_array_equal(cat["auto_flags"], whole["auto_flags"])
    np.testing.assert_array_equal(cat["flux_radius"], whole["flux_radius"])
    to_cat, _ = match_positions(truth["x"], truth["y"], cat["x"], cat["y"], 1.5)
    chosen = ((to_cat >= 0) & (np.asarray(truth["snr"]) >= 30)
              & (np.asarray(truth["class"]) == "galaxy"))
    k = to_cat[chosen]
    assert chosen.sum() >= 20 and not cat["auto_flags"][k].all()
    true_flux = np.asarray(truth["image_flux_r"])[chosen]
    auto, iso = cat["flux_auto_r"][k] / true_flux, cat["flux_r"][k] / true_flux
    assert abs(np.median(auto) - 1) < 0.05 and np.median(iso) < np.median(auto)
    assert np.all(cat["flux_auto_err_r"][k] > cat["flux_err_r"][k])  # a larger aperture
    # half-light radii: the true one and the PSF's (~1.9 px) in quadrature, roughly
    expected = np.hypot(np.asarray(truth["hlr"])[chosen] / 0.262, 1.9)
    assert 0.8 < np.median(cat["flux_radius"][k] / expected) < 1.25
    schema = pq.read_schema(out / "catalog.parquet" / "_common_metadata")
    units = {f.name: (f.metadata or {}).get(b"unit", b"").decode() for f in schema}
    assert units["flux_auto_g"] == units["flux_auto_err_g"] == mosaic.attrs["bunit"]["g"]
    # without the local background (the hst card's choice): the sums alone, a little more
    merge(out, options=astrodask.MergeOptions(kron_annulus=()))
    bare = {k: np.asarray(v) for k, v in catalog(out).items()}
    plain = kron_photometry(mosaic.array("image")[:], mosaic.array("mask")[:],
                            fits.getdata(out / "segmap.fits").astype(np.int32), bare["id"],
                            bare["x"], bare["y"], bare["a_image"], bare["b_image"],
                            bare["theta_image"], noise=noise, correlation=correlation,
                            annulus=None)
    np.testing.assert_array_equal(bare["flux_auto_r"], plain["flux_auto"][:, 1])
    assert np.median(bare["flux_auto_r"][k] / cat["flux_auto_r"][k]) > 1
    assert units["mag_auto_z"] == "mag(AB)" and units["kron_radius"] == ""
    assert units["mag_err_g"] == units["mag_auto_err_z"] == "mag"
    # magnitude errors: as many magnitudes as the flux error is a share of the flux
    bright = cat["flux_auto_r"] > 0
    np.testing.assert_allclose(cat["mag_auto_err_r"][bright],
                               1.0857362 * cat["flux_auto_err_r"][bright] / cat["flux_auto_r"][bright])
    assert np.isnan(cat["mag_auto_err_r"][~bright]).all()
    assert np.all(cat["mag_err_r"][k] > cat["mag_auto_err_r"][k] / 10)
    assert units["flux_radius"] == "pix"


def test_catalog_is_deterministic_and_carries_provenance(field):
    folder, truth, masks = field
    mosaic = ingest(folder, "a", tile=128, halo=16)
    first = fake_detections(mosaic, masks, truth, folder / "det-1")
    second = fake_detections(mosaic, masks, truth, folder / "det-2")
    merge(first, n_workers=1)
    merge(second, n_workers=2)
    files = sorted(p.name for p in (first / "catalog.parquet").iterdir())
    assert "part-00000.parquet" in files and "_metadata" in files
    for name in files:
        assert (first / "catalog.parquet" / name).read_bytes() == \
            (second / "catalog.parquet" / name).read_bytes()
    from astrodask.outputs.catalog import catalog_provenance

    provenance = catalog_provenance(first / "catalog.parquet")
    assert provenance["bands"] == ["g", "r", "z"]
    assert provenance["mosaic_inputs"][0]["sha256"] == mosaic.attrs["inputs"][0]["sha256"]
    assert provenance["bunit"] == mosaic.attrs["bunit"] and provenance["bunit"]["g"]
    assert provenance["zeropoints"] == mosaic.attrs["zeropoints"]
    assert provenance["magnitude_system"] == "AB" and provenance["quality_flags"]["masked"] == 8
    schema = pq.read_schema(first / "catalog.parquet" / "_common_metadata")
    units = {f.name: (f.metadata or {}).get(b"unit", b"").decode() for f in schema}
    assert units["x"] == units["bbox_y0"] == "pix" and units["area"] == "pix2"
    assert units["a_image"] == units["b_image"] == "pix" and units["theta_image"] == "deg"
    assert units["ra"] == units["dec"] == "deg" and units["mag_r"] == "mag(AB)"
    assert units["flux_g"] == units["flux_err_g"] == mosaic.attrs["bunit"]["g"]
    assert units["id"] == units["source_class"] == ""
    # every column works as a pandas attribute (no keyword, no DataFrame attribute)
    import keyword

    import pandas as pd

    documented = (Path(__file__).parents[1] / "docs" / "pipeline.md").read_text()
    for name in schema.names:
        assert name.isidentifier() and not keyword.iskeyword(name), name
        assert not hasattr(pd.DataFrame, name), name
        # and is described in the catalog's column table
        generic = re.sub(r"_(g|r|z)$", "_<band>", name)
        assert f"`{generic}`" in documented, name
    summary = (first / "summary.txt").read_text()
    assert "objects" in summary and "by class" in summary


def test_objects_with_pixels_at_the_saturation_level_are_flagged(field):
    folder, truth, masks = field
    mosaic = ingest(folder, "sat", tile=128, halo=16, saturate=0.9995)
    levels = [mosaic.saturation[b] for b in mosaic.bands]
    assert all(level > 0 for level in levels)
    out = fake_detections(mosaic, masks, truth, folder / "res-saturated")
    merge(out)
    cat = catalog(out)
    segmap = fits.getdata(out / "segmap.fits")
    image = mosaic.array("image")[:]
    over = np.any([image[b] >= level for b, level in enumerate(levels)], axis=0)
    expected = [bool(over[segmap == oid].any()) for oid in cat["id"]]
    assert 0 < sum(expected) < len(expected)
    assert cat["saturated"] == expected
    assert [bool(f & 32) for f in cat["quality_flags"]] == expected
    from astrodask.merging.single import merge_in_process

    reference = fake_detections(mosaic, masks, truth, folder / "res-saturated-single")
    merge_in_process(reference)
    assert catalog(reference)["saturated"] == expected


def _pieces_table(rows):
    """A window's pieces table from ``(score, y0, x0, mask)`` rows (window (0, 0))."""
    import pyarrow as pa

    from astrodask.instances import SCHEMA, encode_mask

    columns = {name: [] for name in SCHEMA.names}
    for det, (score, y0, x0, mask) in enumerate(rows):
        py, px = np.nonzero(mask)
        values = dict(tile_iy=0, tile_ix=0, det=det, class_id=2, **{"class": "galaxy"},
                      score=score, y0=y0, x0=x0, y1=y0 + mask.shape[0], x1=x0 + mask.shape[1],
                      area=int(mask.sum()), anchor_y=y0 + int(py[0]), anchor_x=x0 + int(px[0]),
                      in_core=True, cut=det == 1, centre_y=float(y0 + py[0]),
                      centre_x=float(x0 + px[0]), mask=encode_mask(mask))
        for name, value in values.items():
            columns[name].append(value)
    return pa.table(columns, schema=SCHEMA)


def test_weak_pieces_fold_into_the_confident_piece_they_touch():
    """Under the catalog cut: a touching piece (and a chain) joins its source; others stay."""
    from astrodask.instances import decode_mask
    from astrodask.merging.pieces import fold_faint_pieces

    block = np.ones((4, 4), bool)
    rows = [(0.9, 10, 10, block),            # 0: confident galaxy at (10..13, 10..13)
            (0.3, 10, 14, block),            # 1: weak, touches 0 on its right (and is cut)
            (0.2, 10, 18, block),            # 2: weak, touches only 1: a chain
            (0.3, 30, 30, block),            # 3: weak, alone: left to the cut
            (0.3, 11, 11, np.ones((2, 4), bool)),  # 4: weak, lies on 0: another proposal
            (0.8, 50, 50, block)]            # 5: confident, alone
    table = _pieces_table(rows)
    assert fold_faint_pieces(table, None).equals(table)
    folded = fold_faint_pieces(table, 0.5).to_pydict()
    assert folded["det"] == [0, 3, 4, 5]
    assert (folded["y0"][0], folded["x0"][0], folded["y1"][0], folded["x1"][0]) == (10, 10, 14, 22)
    assert folded["area"][0] == 48 and decode_mask(folded["mask"][0], 4, 12).all()
    assert folded["cut"][0]  # a folded piece that touched a window edge makes it cut
    assert (folded["score"][0], folded["anchor_y"][0], folded["anchor_x"][0]) == \
        (np.float32(0.9), 10, 10)
    assert folded["area"][3] == 16 and folded["area"][1] == 16


def test_a_weak_piece_around_most_of_a_confident_one_is_not_folded_into_it():
    """A larger, weaker proposal over a source and its neighbour does not become that source."""
    from astrodask.merging.pieces import fold_faint_pieces

    core = np.ones((6, 6), bool)
    pair = np.ones((8, 20), bool)          # covers the core and a neighbour 12 px to its right
    hanging = np.zeros((8, 20), bool)
    hanging[:, 7:] = True                 # the same, but holding only a sliver of the core
    table = _pieces_table([(0.9, 11, 11, core), (0.1, 10, 10, pair)])
    folded = fold_faint_pieces(table, 0.5).to_pydict()
    assert folded["det"] == [0, 1] and folded["area"] == [36, 160]   # left to the cut
    assert (folded["y0"][0], folded["x0"][0], folded["y1"][0], folded["x1"][0]) == (11, 11, 17, 17)
    table = _pieces_table([(0.9, 11, 11, core), (0.1, 10, 10, hanging)])
    folded = fold_faint_pieces(table, 0.5).to_pydict()
    assert folded["det"] == [0] and folded["area"] == [36 + 8 * 13]   # a part: folded as before


def test_weak_pieces_fold_the_same_way_on_dask_and_in_one_process(field, tmp_path):
    """Weak pieces join the objects they touch: same bytes on both merges, the same objects."""
    from distributed import Client

    from astrodask.merging.products import MergeOptions
    from astrodask.merging.single import merge_in_process

    folder, truth, masks = field
    mosaic = ingest(folder, "fold", tile=128, halo=24)
    weak = {i for i, n in zip(truth["id"], truth["n_neighbours"]) if n > 0 and i % 2}
    out = fake_detections(mosaic, masks, truth, tmp_path / "dask", centres=True,
                          score_of=lambda i: 0.3 if i in weak else 1.0)
    reference = shutil.copytree(out, tmp_path / "single")
    unfolded = shutil.copytree(out, tmp_path / "unfolded")
    for part in Path(Results(unfolded).instances_dir).glob("tile-*.parquet"):
        table = pq.read_table(part)  # the weak pieces removed before the merge: nothing to fold
        pq.write_table(table.filter(pc.greater_equal(table.column("score"), 0.5)), part)
    options = MergeOptions(min_score=0.5)
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        merge(out, client=client, options=options)
    merge_in_process(reference, options=options)
    merge_in_process(unfolded, options=options)
    assert (out / "segmap.fits").read_bytes() == (reference / "segmap.fits").read_bytes()
    ours, alone = catalog(reference), catalog(unfolded)
    assert catalog(out)["flux_r"] == ours["flux_r"]
    assert alone["x"] == ours["x"] and alone["y"] == ours["y"]
    gain = np.array(ours["area"]) - np.array(alone["area"])
    # (a weak truth mask over most of a confident neighbour's is another proposal: not folded)
    assert (gain >= 0).all() and (gain > 0).sum() >= 2
    labelled = [(fits.getdata(f / "segmap.fits") > 0).sum() for f in (reference, unfolded)]
    assert labelled[0] > labelled[1]


def _objects(rows):
    """Objects from ``(score, y0, x0, mask)`` rows."""
    from astrodask.merging.stitch import Objects

    n = len(rows)
    return Objects(y0=np.array([r[1] for r in rows]), x0=np.array([r[2] for r in rows]),
                   y1=np.array([r[1] + r[3].shape[0] for r in rows]),
                   x1=np.array([r[2] + r[3].shape[1] for r in rows]),
                   masks=[r[3] for r in rows], class_id=np.full(n, 2, np.int8),
                   score=np.array([r[0] for r in rows], np.float32),
                   anchor_y=np.zeros(n, np.int64), anchor_x=np.zeros(n, np.int64),
                   n_pieces=np.ones(n, np.int32), cut=np.zeros(n, bool),
                   centre_y=np.full(n, np.nan), centre_x=np.full(n, np.nan))


def test_a_companion_keeps_its_core_on_a_higher_scored_galaxy():
    """Painting: the smaller mask on top whatever the scores; hiding: by score."""
    from astrodask.merging.stitch import drop_hidden, paint_priority
    from astrodask.merging.products import paint

    yy, xx = np.mgrid[:60, :72]
    galaxy = np.hypot(yy - 30, xx - 30) < 28                 # scored 0.98
    companion = np.hypot(yy - 30, xx - 56) < 6                # 0.96, partly on the galaxy
    knot = np.hypot(yy - 25, xx - 25) < 3                      # 0.5, wholly on the galaxy
    nested = np.hypot(yy - 30, xx - 30) < 8                    # 0.9, a second box on its core
    objects = drop_hidden(_objects([(0.98, 0, 0, galaxy), (0.96, 0, 0, companion),
                                    (0.5, 0, 0, knot), (0.9, 0, 0, nested)]))
    assert objects.score.tolist() == pytest.approx([0.98, 0.96])
    rank = paint_priority(objects)
    order = np.argsort(-rank)  # top priority painted last
    labels = paint([(0, 0, 60, 72)] * 2, [objects.masks[k] for k in order],
                   [k + 1 for k in order], slice(0, 60), slice(0, 72))
    assert (labels[companion] == 2).all()
    assert (labels[galaxy & ~companion] == 1).all()
    # left to the hiding order, the companion would have kept only its far side
    assert (labels == 2).sum() == companion.sum() > 2 * (companion & ~galaxy).sum()


def test_a_mask_wholly_on_a_larger_one_is_hidden_only_near_its_centre():
    """Near the larger mask's centre it is a second box for the same source; farther out,
    a companion on its outskirts."""
    from astrodask.merging.stitch import SAME_SOURCE_RADIUS, drop_hidden

    yy, xx = np.mgrid[:80, :80]
    galaxy = np.hypot(yy - 40, xx - 40) < 36                  # area ~4070, radius 36
    reach = SAME_SOURCE_RADIUS * 36
    near = np.hypot(yy - 40, xx - 40 - (reach - 4)) < 3         # centred inside the reach
    far = np.hypot(yy - 40, xx - 40 + (reach + 6)) < 3          # centred outside it
    objects = drop_hidden(_objects([(0.98, 0, 0, galaxy), (0.9, 0, 0, near), (0.9, 0, 0, far)]))
    assert len(objects) == 2
    assert np.array_equal(objects.masks[1], far)


def test_a_mask_left_without_a_pixel_by_the_painting_is_dropped():
    """A large mask that survives the score order but lies wholly under smaller ones in the
    painting would be an empty segment: dropped; masks the score order hides stay hidden."""
    from astrodask.merging.stitch import drop_hidden

    whole, left, right = (np.zeros((10, 21), bool) for _ in range(3))
    whole[:, :20], left[:, :10], right[:, 10:] = True, True, True
    inner = np.zeros((10, 21), bool)
    inner[2:5, 2:5] = True
    objects = drop_hidden(_objects([(0.9, 0, 0, whole), (0.95, 0, 0, left), (0.6, 0, 0, right),
                                    (0.7, 0, 0, inner)]))
    assert objects.score.tolist() == pytest.approx([0.95, 0.6])


def test_companions_on_grown_masks_are_painted_the_same_on_dask_and_in_one_process(field,
                                                                                  tmp_path):
    """Large objects' masks grown over their neighbours and scored higher: every neighbour
    that is not wholly under one keeps the pixel at its true position, and both merges
    write the same bytes."""
    from distributed import Client

    from astrodask.merging.single import merge_in_process

    folder, truth, masks = field
    mosaic = ingest(folder, "grown", tile=128, halo=32)
    large = {i for i, a in zip(truth["id"], truth["mask_area"]) if a >= 150}

    def grow(canvas, iy, ix, oid):
        return ndimage.binary_dilation(canvas, iterations=5) if oid in large else canvas

    out = fake_detections(mosaic, masks, truth, tmp_path / "dask", perturb=grow, centres=True,
                          score_of=lambda i: 1.0 if i in large else 0.9)
    reference = shutil.copytree(out, tmp_path / "single")
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        merge(out, client=client)
    merge_in_process(reference)
    assert (out / "segmap.fits").read_bytes() == (reference / "segmap.fits").read_bytes()
    labels = fits.getdata(reference / "segmap.fits")
    cat = catalog(reference)
    cx, cy = np.array(cat["x"]), np.array(cat["y"])

    def catalog_id(x, y):
        k = np.argmin(np.hypot(cx - x, cy - y))
        return cat["id"][k] if np.hypot(cx[k] - x, cy[k] - y) < 1 else None

    grown_ids = {catalog_id(x, y) for i, x, y in zip(truth["id"], truth["x"], truth["y"])
                 if i in large} - {None}
    under = np.zeros(labels.shape, bool)
    for j in large:
        y0, x0, y1, x1 = masks[j].box
        under[y0:y1, x0:x1] |= masks[j].mask
    under = ndimage.binary_dilation(under, iterations=5)
    covered = 0
    for i, x, y in zip(truth["id"], truth["x"], truth["y"]):
        py, px = round(y), round(x)
        y0, x0, y1, x1 = masks[i].box
        if i in large or not (y0 <= py < y1 and x0 <= px < x1) or not masks[i].mask[py - y0, px - x0]:
            continue
        if catalog_id(x, y) is None:
            continue  # near the centre of a grown mask scored higher: hidden
        assert labels[py, px] not in grown_ids
        covered += under[py, px]
    assert covered >= 3  # the check saw neighbours under a grown mask


def test_merge_refuses_an_unfinished_run(tmp_path):
    from astrodask.errors import StoreError

    put_json(tmp_path / "run.json", {"complete": False, "models": []})
    with pytest.raises(StoreError, match="did not finish"):
        merge(tmp_path)
    with pytest.raises(StoreError, match="not an astrodask results folder"):
        merge(tmp_path / "nothing")


def test_merge_refuses_a_mosaic_ingested_again_since_the_run(field, capsys):
    from astrodask.cli import main
    from astrodask.errors import StoreError
    from astrodask.merging.single import merge_in_process

    folder, truth, masks = field
    first = ingest(folder, "again", tile=64, halo=8)
    out = fake_detections(first, masks, truth, folder / "again")
    ingest(folder, "again", tile=64, halo=8, crop=40)  # the same path, other pixels
    with pytest.raises(StoreError, match="not the store the run read"):
        merge(out)
    with pytest.raises(StoreError, match="not the store the run read"):
        merge_in_process(out)
    assert main(["merge", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run again with --restart" in err, err
    assert not (out / "catalog.parquet").exists()
    ingest(folder, "again", tile=64, halo=8)  # the run's pixels again: it merges
    assert merge(out).n_objects > 0


def test_box_pairs_and_components_match_brute_force():
    from astrodask.merging.stitch import box_pairs, components, smallest_member

    rng = np.random.default_rng(5)
    for _ in range(50):
        n = int(rng.integers(0, 30))
        y0, x0 = rng.integers(0, 50, n), rng.integers(0, 50, n)
        y1, x1 = y0 + rng.integers(1, 10, n), x0 + rng.integers(1, 10, n)
        for margin in (0, 1):
            expected = [(i, j) for i in range(n) for j in range(i + 1, n)
                        if y0[j] < y1[i] + margin and y0[i] < y1[j] + margin
                        and x0[j] < x1[i] + margin and x0[i] < x1[j] + margin]
            assert box_pairs(y0, x0, y1, x1, margin).tolist() == [list(p) for p in expected]
        pairs = box_pairs(y0, x0, y1, x1)
        lowest = np.arange(n)  # lowest node of each component, by relaxation
        changed = True
        while changed:
            before = lowest.copy()
            for i, j in pairs:
                lowest[i] = lowest[j] = min(lowest[i], lowest[j])
            changed = not np.array_equal(before, lowest)
        _, label = components(n, pairs)
        assert smallest_member(label, np.arange(n)).tolist() == lowest.tolist()
