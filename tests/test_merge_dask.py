"""The merge as Dask tasks: the same bytes as the single-process reference, any worker count.

Fields and fake detections are those of test_merge.py (a perfect detector:
the simulator's truth masks clipped to each window).
"""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from astrodask import storage
from astrodask.engine.results import Results
from astrodask.merging import tasks
from astrodask.merging.run import WORK_DIR, MergeError, merge
from astrodask.merging.single import merge_in_process
from astrodask.outputs.catalog import read_catalog

from benchmark_scripts import latency_store  # noqa: F401 (a fixture)
from test_merge import fake_detections, field, ingest  # noqa: F401 (field is a fixture)

#: Fake U-Net probabilities: (background, own class) inside a truth mask; background outside.
SOURCE_P, OUTSIDE_BACKGROUND_P = (0.02, 0.9), 0.98


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def _same_outputs(dask_out, reference_out):
    """Catalog table (with provenance) and segmentation map equal to the reference's."""
    ours, theirs = read_catalog(dask_out / "catalog.parquet"), \
        pq.read_table(reference_out / "catalog.parquet")
    assert ours.schema.equals(theirs.schema, check_metadata=True)
    assert ours.num_rows == theirs.num_rows
    different = [name for name in theirs.column_names  # NaN == NaN here, unlike Table.equals
                 if not np.array_equal(ours.column(name).to_numpy(zero_copy_only=False),
                                       theirs.column(name).to_numpy(zero_copy_only=False),
                                       equal_nan=pa.types.is_floating(ours.column(name).type))]
    assert not different, f"columns that differ: {different}"
    assert storage.parquet_bytes(ours.combine_chunks()) == storage.parquet_bytes(theirs)
    parts = sorted((dask_out / "catalog.parquet").glob("part-*.parquet"))
    if len(parts) == 1:  # a small mosaic's one part is the reference's file, byte for byte
        assert parts[0].read_bytes() == (reference_out / "catalog.parquet").read_bytes()
    assert np.array_equal(fits.getdata(dask_out / "segmap.fits"),
                          fits.getdata(reference_out / "segmap.fits"))
    assert (dask_out / "segmap.fits").read_bytes() == (reference_out / "segmap.fits").read_bytes()
    pictures = [p.name for p in reference_out.glob("*.png")]
    assert sorted(pictures) == sorted(p.name for p in dask_out.glob("*.png"))
    for name in pictures:  # the Dask merge looks classes up in its catalog's parts
        assert (dask_out / name).read_bytes() == (reference_out / name).read_bytes(), name


def _progress_counts_every_task(reports):
    """The progress reports climb to their total and never pass it."""
    assert reports
    assert all(done <= total for done, total in reports), reports
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert reports[-1][0] == reports[-1][1]


def _copy_results(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("geometry", [(64, 8, 0, False), (128, 24, 40, True)])
def test_equals_single_process_merge(field, client, geometry):
    folder, truth, masks = field
    tile, halo, crop, centres = geometry  # with centres: positions from the detector
    mosaic = ingest(folder, f"eq-{tile}-{halo}", tile=tile, halo=halo, crop=crop)
    out = fake_detections(mosaic, masks, truth, folder / f"eq-dask-{tile}", crop=crop,
                          centres=centres)
    reference = _copy_results(out, folder / f"eq-ref-{tile}")
    reports = []
    summary = merge(out, client=client, progress=lambda done, total: reports.append((done, total)))
    _progress_counts_every_task(reports)
    merge_in_process(reference)
    _same_outputs(out, reference)
    catalog = pq.read_table(reference / "catalog.parquet")
    assert summary.n_objects == catalog.num_rows > 50
    assert (catalog["x"].to_numpy() != catalog["x_centroid"].to_numpy()).any() == centres
    assert not (out / WORK_DIR).exists()


def test_windows_batched_into_tasks_give_the_same_bytes(field, client, monkeypatch):
    """Several windows per task (as on large mosaics): the reference's bytes, fewer tasks."""
    import json

    from astrodask.merging import run as merge_run

    folder, truth, masks = field
    mosaic = ingest(folder, "batched", tile=64, halo=8)
    out = fake_detections(mosaic, masks, truth, folder / "batched")
    reference = _copy_results(out, folder / "batched-ref")
    monkeypatch.setattr(merge_run, "TASKS_PER_THREAD", 1)
    merge(out, client=client)
    merge_in_process(reference)
    _same_outputs(out, reference)
    record = json.loads((out / "merge.json").read_text())
    assert record["tasks"] < record["jobs"] / 2


def test_one_and_two_workers_give_the_same_bytes(field, client):
    from distributed import Client, LocalCluster

    folder, truth, masks = field
    mosaic = ingest(folder, "workers", tile=64, halo=8)
    one = fake_detections(mosaic, masks, truth, folder / "workers-1")
    two = _copy_results(one, folder / "workers-2")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as single:
        merge(one, client=single)
    merge(two, client=client)
    names = sorted(p.name for p in (one / "catalog.parquet").iterdir())
    assert names == sorted(p.name for p in (two / "catalog.parquet").iterdir())
    assert {"_metadata", "_common_metadata", "part-00000.parquet"} <= set(names)
    for name in names:
        assert (one / "catalog.parquet" / name).read_bytes() == \
            (two / "catalog.parquet" / name).read_bytes(), name
    assert (one / "segmap.fits").read_bytes() == (two / "segmap.fits").read_bytes()


def test_a_mosaic_written_anew_at_the_same_path_is_read_anew(field, client):
    """A long-lived cluster (a notebook's) merges a run, the mosaic is ingested again at the
    same path with another grid, and the next merge on that cluster reads the new store."""
    folder, truth, masks = field
    first = ingest(folder, "anew", tile=64, halo=8)
    merge(fake_detections(first, masks, truth, folder / "anew-1"), client=client)
    second = ingest(folder, "anew", tile=128, halo=24, crop=40)
    assert second.path == first.path
    out = fake_detections(second, masks, truth, folder / "anew-2", crop=40)
    reference = _copy_results(out, folder / "anew-2-ref")
    merge(out, client=client)
    merge_in_process(reference)
    _same_outputs(out, reference)


def test_catalog_dataset_reads_as_one_table(field, client):
    import pandas as pd
    import pyarrow.dataset as ds

    folder, truth, masks = field
    mosaic = ingest(folder, "dataset", tile=64, halo=8)
    out = fake_detections(mosaic, masks, truth, folder / "dataset")
    import astrodask.merging.run as run_module

    blocks = run_module.BLOCK_WINDOWS
    run_module.BLOCK_WINDOWS = 20  # several parts on a small mosaic
    try:
        summary = merge(out, client=client)
    finally:
        run_module.BLOCK_WINDOWS = blocks
    path = out / "catalog.parquet"
    parts = sorted(p.name for p in path.glob("part-*.parquet"))
    assert len(parts) > 1
    frame = pd.read_parquet(path)
    table = ds.dataset(path, format="parquet").to_table()
    via_metadata = pq.ParquetDataset(path).read()
    assert len(frame) == table.num_rows == via_metadata.num_rows == summary.n_objects
    assert frame["id"].tolist() == list(range(1, summary.n_objects + 1))
    assert pq.read_metadata(path / "_metadata").num_rows == summary.n_objects
    assert b"astrodask" in pq.read_schema(path / "_common_metadata").metadata
    dd = pytest.importorskip("dask.dataframe")
    assert len(dd.read_parquet(str(path))) == summary.n_objects


def _add_long_object(mosaic, out, centre=(200, 200)):
    """Add a 300-px diagonal stripe to every window's part, its brightest pixel at ``centre``.

    One window's core holds the anchor, so the stripe is one object made of
    the pieces of about seven windows along the diagonal.
    """
    import pyarrow as pa

    from astrodask.engine.results import write_parquet
    from astrodask.instances import tile_instances

    grid = mosaic.tile_grid
    results = Results(out)
    t = grid.tile
    for iy, ix in grid.indices():
        tile = mosaic.read_tile(iy, ix)
        y0, x0 = tile.origin
        yy, xx = np.mgrid[y0:y0 + t, x0:x0 + t]
        stripe = (np.abs(yy - xx) < 4) & (yy >= 50) & (yy < 350) & (xx >= 50) & (xx < 350)
        if not stripe.any():
            continue
        brightness = -np.hypot(yy - centre[0], xx - centre[1])
        extra = tile_instances(tile, grid, stripe[None], [2], np.ones(1, np.float32), brightness)
        part = pq.read_table(results.instances_path(iy, ix))
        det = pa.array(np.full(extra.num_rows, len(part), np.int32))
        extra = extra.set_column(extra.schema.get_field_index("det"), "det", det)
        write_parquet(pa.concat_tables([part, extra]), results.instances_path(iy, ix))


def test_object_spanning_many_windows_is_stitched_by_the_global_step(field, client):
    """No window's 3x3 neighbourhood holds the stripe whole: the global step joins it."""
    folder, truth, masks = field
    mosaic = ingest(folder, "long", tile=64, halo=8)  # core 48
    out = fake_detections(mosaic, masks, truth, folder / "long-dask")
    _add_long_object(mosaic, out)
    reference = _copy_results(out, folder / "long-ref")
    reports = []
    merge(out, client=client, progress=lambda done, total: reports.append((done, total)))
    _progress_counts_every_task(reports)
    merge_in_process(reference)
    _same_outputs(out, reference)
    cat = read_catalog(out / "catalog.parquet").to_pydict()
    long = [k for k in range(len(cat["id"])) if (cat["bbox_y0"][k], cat["bbox_x0"][k],
                                                 cat["bbox_y1"][k], cat["bbox_x1"][k])
            == (50, 50, 350, 350)]
    assert len(long) == 1 and cat["n_pieces"][long[0]] >= 7
    import json

    assert json.loads((out / "merge.json").read_text())["large_objects"] == 1


def test_interrupted_merge_resumes(field, client, monkeypatch):
    folder, truth, masks = field
    mosaic = ingest(folder, "resume", tile=64, halo=8)
    out = fake_detections(mosaic, masks, truth, folder / "resume")
    reference = _copy_results(out, folder / "resume-ref")
    merge_in_process(reference)

    # Stop the merge in its paint stage (in this process: threads share the patch).
    from distributed import Client, LocalCluster

    original = tasks.paint_task
    calls = []

    def failing(ctx, cy, cx, *args):
        calls.append((cy, cx))
        if len(calls) > 5:
            raise RuntimeError("interrupted")
        return original(ctx, cy, cx, *args)

    monkeypatch.setattr(tasks, "paint_task", failing)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as threads:
        with pytest.raises(MergeError, match="paint .* failed on a worker: RuntimeError"):
            merge(out, client=threads)
    monkeypatch.setattr(tasks, "paint_task", original)
    work = out / WORK_DIR
    assert not (out / "catalog.parquet").exists() and not (out / "segmap.fits").exists()
    resolved = {p.name for p in (work / "done" / "resolve").iterdir()}
    assert len(resolved) == len(mosaic.tile_grid)
    painted_before = len(list((work / "done" / "paint").iterdir()))
    assert 0 < painted_before < len(mosaic.tile_grid)

    summary = merge(out, client=client)
    _same_outputs(out, reference)
    assert summary.n_objects > 50
    assert not work.exists()
    # only the unfinished jobs ran: the rest of the paint stage, families, one catalog part
    import json

    record = json.loads((out / "merge.json").read_text())
    assert record["jobs"] == len(mosaic.tile_grid) - painted_before + 2
    assert record["tasks"] <= record["jobs"]


def fake_unet_maps(mosaic, masks, truth, out, crop=0, true_classes=False):
    """Write the results of a U-Net-only run whose maps a perfect classifier would give.

    Inside a truth mask the background probability is low and the object's
    class (stars point sources, galaxies spheroid or disk by id, or with
    ``true_classes`` the simulator's morphology) dominant;
    outside, background dominates. The merge then cuts Morpheus segments from
    these maps window by window (its ``pieces`` stage).
    """
    from astrodask.classes import MORPHOLOGY_CLASSES, OBJECT_CODE
    from astrodask.storage import put_json

    grid = mosaic.tile_grid
    shape = (grid.height, grid.width)
    background_k = MORPHOLOGY_CLASSES.index("background")
    rest = (1.0 - OUTSIDE_BACKGROUND_P) / (len(MORPHOLOGY_CLASSES) - 1)
    mean = np.full((len(MORPHOLOGY_CLASSES), *shape), rest, np.float32)
    mean[background_k] = OUTSIDE_BACKGROUND_P
    classes = dict(zip(truth["id"], truth["class_code"]))
    morphology = dict(zip(truth["id"], truth["morphology"]))
    background_p, own_p = SOURCE_P
    others = (1.0 - background_p - own_p) / (len(MORPHOLOGY_CLASSES) - 2)
    for oid, m in sorted(masks.items()):
        y0, x0, y1, x1 = (v - crop for v in m.box)
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, shape[0]), min(x1, shape[1])
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        inside = m.mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        own = morphology[oid] if true_classes else "point_source" \
            if classes[oid] == OBJECT_CODE["star"] else ("spheroid" if oid % 2 else "disk")
        for k, name in enumerate(MORPHOLOGY_CLASSES):
            value = background_p if k == background_k else own_p if name == own else others
            mean[k, sy0:sy1, sx0:sx1][inside] = value
    results = Results(out)
    group = results.create_unet_arrays(grid, MORPHOLOGY_CLASSES, ["mean"], {"model": "truth"})
    group["mean"][:] = mean
    put_json(results.file("run.json"), {
        "complete": True, "mosaic": str(mosaic.path), "config": {},
        "models": [{"kind": "unet", "name": "truth", "card": {}, "path": ""}]})
    return out


def test_unet_only_run_merges_to_the_same_bytes(field, client):
    """Morpheus segments from U-Net maps: 1 and 2 workers and the single-process merge agree."""
    from distributed import Client, LocalCluster

    folder, truth, masks = field
    crop = 200  # the field's last 200 x 240 pixels: 5 x 5 windows
    mosaic = ingest(folder, "unet", tile=64, halo=8, crop=crop)
    one = fake_unet_maps(mosaic, masks, truth, folder / "unet-1", crop=crop)
    two = _copy_results(one, folder / "unet-2")
    reference = _copy_results(one, folder / "unet-ref")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as single:
        summary = merge(one, client=single)
    merge(two, client=client)
    in_process = merge_in_process(reference)
    for out in (one, two):
        _same_outputs(out, reference)
        assert (out / "morphology.fits").read_bytes() == \
            (reference / "morphology.fits").read_bytes()
    cat = read_catalog(one / "catalog.parquet").to_pydict()
    assert summary.n_objects == len(cat["id"]) > 10
    assert max(cat["n_pieces"]) > 1  # segments cut by window edges were stitched
    assert {"disk", "spheroid"} <= set(cat["morphology"])  # measured from the maps
    assert sum(summary.by_morphology.values()) == summary.n_objects
    # the morphology of objects bright enough to count it: S/N over all bands >= 20
    flux = sum(np.asarray(cat[f"flux_{b}"]) for b in mosaic.bands)
    error = np.sqrt(sum(np.asarray(cat[f"flux_err_{b}"]) ** 2 for b in mosaic.bands))
    bright = Counter(m for m, f, e in zip(cat["morphology"], flux, error) if f >= 20 * e)
    assert 0 < sum(bright.values()) < summary.n_objects
    assert summary.by_morphology_bright == in_process.by_morphology_bright == dict(bright)
    assert "by morphology at S/N >= 20: " in (one / "summary.txt").read_text()
    import json

    assert "pieces" in json.loads((two / "merge.json").read_text())["stage_seconds"]


def test_refuses_unfinished_or_missing_runs(tmp_path):
    from astrodask.errors import StoreError

    storage.put_json(tmp_path / "run.json", {"complete": False, "models": []})
    with pytest.raises(StoreError, match="did not finish"):
        merge(tmp_path)
    with pytest.raises(StoreError, match="not an astrodask results folder"):
        merge(tmp_path / "nothing")
    assert Results(tmp_path).read_run()["complete"] is False


def test_bright_objects_at_their_peak_the_same_on_dask_and_in_one_process(field, client):
    """Large objects detected over an undetected touching neighbour (one instance over a
    blend): the neighbour's light pulls their segments' centroids off; with
    ``peak_position_snr`` they sit at their peak, closer to the truth, and both merges write
    the same bytes."""
    from scipy import ndimage

    from astrodask.merging.products import PEAK_SHIFT, MergeOptions

    folder, truth, masks = field
    mosaic = ingest(folder, "peaks", tile=128, halo=24)
    grid = mosaic.tile_grid
    flux = dict(zip(truth["id"], truth["image_flux_r"]))

    def pasted(oid):
        canvas = np.zeros((grid.height, grid.width), bool)
        y0, x0, y1, x1 = masks[oid].box
        canvas[y0:y1, x0:x1] = masks[oid].mask
        return canvas

    # the brighter of two touching objects is detected over both when the fainter one has at
    # least a quarter of its light
    hosts, absorbed = {}, set()
    for big in sorted(masks, key=lambda i: -flux[i]):
        if big in absorbed:
            continue
        reach = ndimage.binary_dilation(pasted(big), iterations=2)
        near = [i for i in masks if i != big and i not in hosts and i not in absorbed
                and 0.25 * flux[big] <= flux[i] <= flux[big] and (reach & pasted(i)).any()]
        if near:
            other = max(near, key=lambda i: flux[i])
            hosts[big] = pasted(big) | pasted(other)
            absorbed.add(other)

    def blend(canvas, iy, ix, oid):
        if oid in absorbed:
            return np.zeros_like(canvas)
        if oid not in hosts:
            return canvas
        y0, x0 = grid.window_origin(iy, ix)
        window = np.zeros_like(canvas)
        sy, sx = slice(max(y0, 0), y0 + grid.tile), slice(max(x0, 0), x0 + grid.tile)
        part = hosts[oid][sy, sx]
        window[sy.start - y0:sy.start - y0 + part.shape[0],
               sx.start - x0:sx.start - x0 + part.shape[1]] = part
        return window

    assert len(hosts) >= 5
    cat = _truth_run_merged_both_ways(field, mosaic, "peaks", client,
                                      MergeOptions(peak_position_snr=20, pictures=False),
                                      perturb=blend)
    x, y = np.array(cat["x"]), np.array(cat["y"])
    xc, yc = np.array(cat["x_centroid"]), np.array(cat["y_centroid"])
    moved = np.hypot(x - xc, y - yc) > 0
    assert moved.sum() >= 3
    assert (np.hypot(x - xc, y - yc)[moved] > PEAK_SHIFT).all()
    tx, ty = np.array(truth["x"]), np.array(truth["y"])
    nearest = [int(np.argmin(np.hypot(tx - a, ty - b))) for a, b in zip(xc, yc)]
    host = np.array([truth["id"][j] in hosts for j in nearest])
    peak_off = np.array([np.hypot(tx[j] - a, ty[j] - b) for j, a, b in zip(nearest, x, y)])
    centroid_off = np.array([np.hypot(tx[j] - a, ty[j] - b) for j, a, b in zip(nearest, xc, yc)])
    # the blends' peaks lie closer to the brighter source than their centroids
    assert (moved & host).sum() >= 3
    assert (peak_off < centroid_off)[moved & host].all()
    assert np.median(peak_off[moved & host]) < 0.5 < np.median(centroid_off[moved & host])
    # objects with a centroid already on their source stay there
    assert (peak_off == centroid_off)[~host & (centroid_off < 0.5)].mean() >= 0.95


def test_irregular_galaxies_at_a_smoothed_centroid_the_same_on_dask_and_in_one_process(
        field, client):
    """With ``irregular_centroid_sigma`` the galaxies the U-Net calls irregular sit at the
    centroid of the smoothed detection image; the other objects keep theirs, and both merges
    write the same bytes."""
    from astrodask.merging.products import MergeOptions

    mosaic = ingest(field[0], "smooth", tile=128, halo=24)
    cat = _truth_run_merged_both_ways(field, mosaic, "smooth", client,
                                      MergeOptions(irregular_centroid_sigma=4.0, pictures=False))
    moved = (np.array(cat["x"]) != np.array(cat["x_centroid"]))
    irregular = np.array([m == "irregular" for m in cat["morphology"]])
    assert moved.any() and not (moved & ~irregular).any()


def _truth_run_merged_both_ways(field, mosaic, name, client, options, perturb=None):
    """The true masks as a finished Mask R-CNN + U-Net run, merged on Dask and in one
    process with ``options``; asserts the same bytes and returns the catalog as a dict."""
    from astrodask.storage import put_json

    folder, truth, masks = field
    out = fake_detections(mosaic, masks, truth, folder / f"{name}-dask", perturb=perturb)
    fake_unet_maps(mosaic, masks, truth, out, true_classes=True)
    put_json(Results(out).file("run.json"), {
        "complete": True, "mosaic": str(mosaic.path), "config": {},
        "models": [{"kind": "maskrcnn", "name": "truth", "card": {}, "path": ""},
                   {"kind": "unet", "name": "truth", "card": {}, "path": ""}]})
    reference = _copy_results(out, folder / f"{name}-ref")
    merge(out, client=client, options=options)
    merge_in_process(reference, options=options)
    _same_outputs(out, reference)
    return read_catalog(reference / "catalog.parquet").to_pydict()


def test_the_residual_pass_continues_the_merges_progress_count():
    """Its steps (each counted from 0, the last one's total growing) climb on from the merge's
    end instead of restarting the merge's bar."""
    from astrodask.merging.run import _ChainedProgress

    reports = [(done, 10) for done in range(11)]
    chained = _ChainedProgress(lambda done, total: reports.append((done, total)), 10)
    for step, total in (("residual mosaic", 3), ("run", 4)):
        for done in range(total + 1):
            chained(step, done, total)
    for done, total in ((0, 6), (3, 6), (4, 8), (8, 8)):  # the merge's total grows
        chained("merge", done, total)
    _progress_counts_every_task(reports)
    assert reports[-1] == (10 + 3 + 4 + 8, 10 + 3 + 4 + 8)


def test_requests_of_a_task_are_in_flight_together(latency_store, tmp_path):
    _, requests = latency_store
    root = "latency://astrodask-tests/many"
    storage.put_many({f"{root}/f{k}.bin": bytes([k]) * (k + 1) for k in range(12)})
    assert requests.by_kind["put"] == 12 and requests.most_in_flight == 12
    storage.put_many({tmp_path / "a.bin": b"a", tmp_path / "b.bin": b"bb"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]  # no temporaries
    assert storage.get_many([tmp_path / "b.bin", tmp_path / "c.bin"]) == [b"bb", None]
    requests.reset()
    values = storage.get_many([f"{root}/f{k}.bin" for k in (3, 0, 11)] + [f"{root}/missing"]
                              + [f"{root}/f{k}.bin" for k in range(12)])
    assert values[:4] == [b"\x03" * 4, b"\x00", b"\x0b" * 12, None]
    assert values[4:] == [bytes([k]) * (k + 1) for k in range(12)]
    assert requests.by_kind["get"] == 16 and requests.most_in_flight == 16


def test_the_pictures_look_up_only_the_classes_of_the_objects_they_show(tmp_path):
    from astrodask.merging.run import catalog_classes
    from astrodask.outputs.catalog import write_dataset_metadata

    folder = tmp_path / "catalog.parquet"
    folder.mkdir()
    for k, ids in enumerate(([1, 2, 3], [4, 5], [])):
        table = pa.table({"id": pa.array(ids, pa.int64()),
                          "class_id": pa.array([i % 3 for i in ids], pa.int8())})
        pq.write_table(table, folder / f"part-{k:05d}.parquet")
    write_dataset_metadata(folder)
    classes = catalog_classes(folder)
    assert classes([2, 4, 5, 9]).tolist() == [2, 1, 2, 0]  # 9: not in the catalog
    assert classes([]).tolist() == []


def test_pictures_downsampled_by_tasks_equal_one_strided_read(client, tmp_path):
    import zarr

    from astrodask.merging.products import _downsampled

    group = zarr.open_group(tmp_path / "a.zarr", mode="w", zarr_format=3)
    cube = group.create_array("cube", shape=(3, 50, 37), chunks=(1, 8, 8), dtype="float32")
    cube[:] = np.random.default_rng(2).normal(size=cube.shape)
    plane = group.create_array("plane", shape=(50, 37), chunks=(7, 8), dtype="int32")
    plane[:] = np.arange(50 * 37).reshape(50, 37)
    for name, array in (("cube", cube), ("plane", plane)):
        for step in (1, 3, 9, 60):  # chunk rows 8 or 7: lattice rows fall anywhere in them
            assert np.array_equal(_downsampled(tmp_path / "a.zarr", name, step, client),
                                  array[..., ::step, ::step])


def test_copies_are_whole_locally_and_remotely(latency_store, tmp_path, monkeypatch):
    root = "latency://astrodask-tests/copies"
    storage.put_many({f"{root}/a/p{k}.bin": bytes([k]) * 3 for k in range(3)})
    monkeypatch.setattr(storage, "get_bytes", None)  # no bytes through this process
    storage.copy_many({f"{root}/a/p{k}.bin": f"{root}/b/p{k}.bin" for k in range(3)})
    for k in range(3):
        assert storage.get_many([f"{root}/b/p{k}.bin"]) == [bytes([k]) * 3]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"xyz")
    storage.copy_many({tmp_path / "a" / "x.bin": tmp_path / "b" / "x.bin"})
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["x.bin"]  # no temporary left
    assert (tmp_path / "b" / "x.bin").read_bytes() == b"xyz"
    storage.copy_many({})


def test_calls_wait_together_when_any_of_their_stores_is_remote(tmp_path):
    import threading

    arrived = threading.Barrier(3, timeout=10)  # three calls must be in flight at once

    def call(k):
        arrived.wait()
        return k * k

    assert storage.map_requests([tmp_path, "memory://x"], call, range(3)) == [0, 1, 4]
    assert storage.map_requests("s3://bucket/mosaic.zarr", call, range(3)) == [0, 1, 4]
    order = []
    assert storage.map_requests([tmp_path, f"file://{tmp_path}"], order.append, range(3)) \
        == [None] * 3 and order == [0, 1, 2]  # local stores: one after the other, in order


def test_merge_on_an_object_store_with_latency_gives_the_same_bytes(field, latency_store,
                                                                      tmp_path):
    """Results on an asynchronous store (as on S3): the local merge's catalog, and the
    resolve stage's nine neighbour reads in flight at once."""
    from distributed import Client, LocalCluster

    _, requests = latency_store
    folder, truth, masks = field
    mosaic = ingest(folder, "latency", tile=64, halo=8)
    assert min(mosaic.tile_grid.shape) >= 3
    out = fake_detections(mosaic, masks, truth, tmp_path / "local")
    remote = "latency://astrodask-tests/results"
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        storage.put_bytes(f"{remote}/{path.relative_to(out).as_posix()}", path.read_bytes())
    merge_in_process(out)
    requests.reset()
    # the store lives in this process: the workers must be threads
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        merge(remote, client=client)
    assert requests.most_in_flight >= 9
    theirs = pq.read_table(out / "catalog.parquet")
    ours = read_catalog(f"{remote}/catalog.parquet").combine_chunks()
    assert ours.num_rows == theirs.num_rows > 50
    assert storage.parquet_bytes(ours) == storage.parquet_bytes(theirs)


def test_a_morphology_calibration_names_the_class_and_moves_nothing(field, client):
    """The catalog's ``morphology`` comes from the calibration on Dask and in one process;
    positions (which follow the eq. 16 class) and the ``p_*`` columns do not change."""
    from astrodask.merging.products import MergeOptions
    from astrodask.morphology.calibration import FEATURES, SOURCE_CLASSES

    always_disk = {"mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
                   "coefficients": [[0.0] * len(SOURCE_CLASSES)] * len(FEATURES),
                   "intercepts": [0.0, 10.0, 0.0, 0.0]}
    mosaic = ingest(field[0], "calibrated", tile=128, halo=24)
    plain = _truth_run_merged_both_ways(field, mosaic, "eq16", client,
                                        MergeOptions(irregular_centroid_sigma=4.0,
                                                     pictures=False))
    calibrated = _truth_run_merged_both_ways(
        field, mosaic, "calibrated", client,
        MergeOptions(irregular_centroid_sigma=4.0, pictures=False,
                     morphology_calibration=always_disk))
    assert {"irregular", "spheroid"} <= set(plain["morphology"])
    assert set(calibrated["morphology"]) == {"disk"}
    for name in ("x", "y", "p_irregular", "flux_r"):
        assert calibrated[name] == plain[name]
