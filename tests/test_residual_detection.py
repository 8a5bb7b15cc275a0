"""The residual pass: which second-pass objects join the catalog, their paint, end to end."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import zarr

import astrodask
from astrodask import storage
from astrodask.outputs.catalog import write_dataset_metadata
from astrodask.residual_detection import (RESIDUAL_FLAG, ResidualOptions, ResidualPassError,
                                     bright_objects, residual_pass, select_additions)
from astrodask.residual_detection import _paint


def _catalog(folder, rows, parts=1, probabilities=None):
    """A catalog folder of ``parts`` parts with the columns the pass reads and writes (and
    the U-Net's ``p_*`` of the four source classes, one row per object, if given)."""
    columns = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    table = pa.table({
        "id": pa.array(columns["id"], pa.int64()),
        "parent_id": pa.array(columns["parent_id"], pa.int64()),
        "family_size": pa.array(columns["family_size"], pa.int32()),
        "x": pa.array(columns["x"], pa.float64()), "y": pa.array(columns["y"], pa.float64()),
        **{b: pa.array(columns[b], pa.int64()) for b in ("bbox_y0", "bbox_x0", "bbox_y1",
                                                        "bbox_x1")},
        "area": pa.array(columns["area"], pa.int64()),
        "flux_g": pa.array(columns["flux"], pa.float64()),
        "flux_err_g": pa.array(np.ones(len(rows)), pa.float64()),
        "morphology": pa.array(columns["morphology"]),
        "blended": pa.array(np.zeros(len(rows), bool)),
        "quality_flags": pa.array(columns["quality_flags"], pa.int32()),
    })
    for k, name in enumerate(("spheroid", "disk", "irregular", "point_source")):
        if probabilities is not None:
            table = table.append_column(f"p_{name}", pa.array([p[k] for p in probabilities],
                                                              pa.float64()))
    storage.makedirs(folder)
    step = -(-len(rows) // parts)
    for k in range(parts):
        storage.put_bytes(f"{folder}/part-{k:05d}.parquet",
                          storage.parquet_bytes(table.slice(k * step, step)))
    write_dataset_metadata(folder)
    return folder


def _segmap(folder, labels):
    group = zarr.open_group(folder, mode="w", zarr_format=3)
    array = group.create_array("labels", shape=labels.shape, chunks=(16, 16), dtype="int32",
                               fill_value=0)
    array[:] = labels
    return folder


def _row(i, y, x, box, flux, family_size=1, morphology="disk", quality_flags=0):
    area = (box[2] - box[0]) * (box[3] - box[1])
    return dict(id=i, parent_id=i, family_size=family_size, y=y, x=x, area=area, bbox_y0=box[0],
                bbox_x0=box[1], bbox_y1=box[2], bbox_x1=box[3], flux=flux,
                morphology=morphology, quality_flags=quality_flags)


def test_additions_lie_in_a_bright_segment_far_from_first_pass_objects(tmp_path):
    first_labels = np.zeros((40, 40), np.int32)
    first_labels[5:30, 5:30] = 1          # bright galaxy
    first_labels[32:38, 32:38] = 2        # faint object: not a parent
    first_labels[5:12, 32:39] = 3         # bright but irregular: not a parent
    first = _catalog(tmp_path / "first.parquet", [
        _row(1, 17.0, 17.0, (5, 5, 30, 30), 500.0, family_size=1),
        _row(2, 35.0, 35.0, (32, 32, 38, 38), 20.0),
        _row(3, 8.0, 35.0, (5, 32, 12, 39), 400.0, morphology="irregular"),
    ], parts=2)
    parents = bright_objects(first, ["g"], 50.0, tmp_path / "parents")
    assert parents.table(["id"]).column("id").to_pylist() == [1]
    # with the U-Net's p_* columns, the dominant eq. 16 class decides, whatever the
    # catalog's (possibly calibrated) morphology says
    calibrated = _catalog(tmp_path / "calibrated.parquet", [
        _row(1, 17.0, 17.0, (5, 5, 30, 30), 500.0, morphology="irregular"),
        _row(3, 8.0, 35.0, (5, 32, 12, 39), 400.0, morphology="disk")], parts=1,
        probabilities=[(0.1, 0.6, 0.2, 0.1), (0.1, 0.2, 0.6, 0.1)])
    assert bright_objects(calibrated, ["g"], 50.0, tmp_path / "calibrated-parents").table(
        ["id"]).column("id").to_pylist() == [1]
    assert [p.location.rsplit("/", 1)[-1] for p in parents.parts] == ["part-00000.parquet"]
    second_labels = np.zeros((40, 40), np.int32)
    second_labels[24:29, 24:32] = 4       # companion: in segment 1, reaching out to sky
    second_labels[16:19, 18:21] = 5       # 1.4 px from object 1: the same object again
    second_labels[34:37, 33:36] = 6       # in the faint object's segment
    second_labels[7:10, 33:36] = 7        # in the irregular object's segment
    second = _catalog(tmp_path / "second.parquet", [
        _row(4, 26.0, 26.0, (24, 24, 29, 32), 60.0, quality_flags=4),
        _row(5, 17.5, 18.0, (16, 18, 19, 21), 60.0),
        _row(6, 35.0, 34.0, (34, 33, 37, 36), 60.0),
        _row(7, 8.0, 34.0, (7, 33, 10, 36), 60.0),
    ])
    first_map = _segmap(tmp_path / "first.zarr", first_labels)
    out = tmp_path / "additions"
    added = select_additions(first, second, first_map, parents, 6.0, 3, out).table()
    assert added.column("id").to_pylist() == [4]           # numbered after the first pass
    assert added.column("second_id").to_pylist() == [4]
    assert added.column("parent_id").to_pylist() == [1]
    assert added.column("quality_flags").to_pylist() == [4 | 1 | RESIDUAL_FLAG]
    assert added.column("blended").to_pylist() == [True]
    assert added.schema.field("family_size").type == pa.int32()

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        # a task per part of the second catalog, the same rows
        on_cluster = select_additions(first, second, first_map, parents, 6.0, 3, out,
                                      client=client)
        assert on_cluster.table().equals(added)
        _paint(first_map, _segmap(tmp_path / "second.zarr", second_labels), on_cluster,
               tmp_path / "painted.zarr", client)  # a task per row of chunks
    painted = zarr.open_group(tmp_path / "painted.zarr", mode="r")["labels"][:]
    expect = first_labels.copy()
    expect[24:29, 24:32] = 4  # the bright object's pixels and sky, not object 2's or 3's
    assert np.array_equal(painted, expect)

    assert len(select_additions(first, second, first_map, parents, 30.0, 3, out)) == 0
    no_parents = bright_objects(first, ["g"], 1e6, tmp_path / "none")
    assert len(no_parents) == 0
    assert len(select_additions(first, second, first_map, no_parents, 6.0, 3, out)) == 0
    # 12.7 px from the galaxy's centre, whose radius sqrt(625 / pi) is 14.1 px
    assert len(select_additions(first, second, first_map, parents, 6.0, 3, out,
                                core_fraction=0.85)) == 1
    assert len(select_additions(first, second, first_map, parents, 6.0, 3, out,
                                core_fraction=0.95)) == 0


def test_additions_through_a_memory_filesystem(tmp_path):
    """The same rows where the catalogs, segmap and work folder are fsspec URLs."""
    import fsspec

    root = "memory://astrodask-residual-tests"
    storage.remove(root)
    labels = np.zeros((40, 40), np.int32)
    labels[5:30, 5:30] = 1
    first = _catalog(tmp_path / "first.parquet",
                     [_row(1, 17.0, 17.0, (5, 5, 30, 30), 500.0)])
    second = _catalog(tmp_path / "second.parquet",
                      [_row(4, 26.0, 26.0, (24, 24, 29, 32), 60.0),
                       _row(5, 17.5, 18.0, (16, 18, 19, 21), 60.0)])
    first_map = _segmap(tmp_path / "first.zarr", labels)
    fsspec.filesystem("memory").put(str(tmp_path) + "/", "/astrodask-residual-tests/",
                                    recursive=True)
    try:
        where = {"local": (first, second, first_map, tmp_path),
                 "memory": tuple(f"{root}/{n}" for n in ("first.parquet", "second.parquet",
                                                           "first.zarr")) + (root,)}
        found = {}
        for name, (f, s, m, base) in where.items():
            parents = bright_objects(f, ["g"], 50.0, storage.join(str(base), "parents"))
            assert parents.parts[0].location.startswith(root if name == "memory" else "/")
            found[name] = select_additions(f, s, m, parents, 6.0, 1,
                                           storage.join(str(base), "additions")).table()
        assert found["memory"].equals(found["local"]) and found["local"]["id"].to_pylist() == [2]
    finally:
        storage.remove(root)


def test_objects_are_read_from_the_parts_that_can_hold_them(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from astrodask.outputs import object_parts
    from astrodask.outputs.object_parts import ObjectParts, write_object_part

    rows = [_row(i, 10.0 * i, 10.0 * i, (10 * i - 2, 10 * i - 2, 10 * i + 3, 10 * i + 3), 1.0)
            for i in range(1, 7)]
    catalog = _catalog(tmp_path / "catalog.parquet", rows, parts=3)
    parts = ObjectParts([write_object_part(pq.read_table(p), tmp_path / f"{k}.parquet")
                         for k, p in enumerate(sorted(catalog.glob("part-*.parquet")))])
    assert len(parts) == 6 and [p.ids for p in parts.parts] == [(1, 2), (3, 4), (5, 6)]
    assert parts.parts[1].box == (28, 28, 43, 43)
    read, get_bytes = [], storage.get_bytes
    monkeypatch.setattr(object_parts.storage, "get_bytes",
                        lambda location: (read.append(location), get_bytes(location))[1])
    found = parts.meeting(slice(30, 36), slice(0, 100), columns=["id"])
    assert found["id"].tolist() == [3] and read == [parts.parts[1].location]
    read.clear()
    assert parts.with_ids([6, 2, 5])["id"].tolist() == [2, 5, 6]
    assert read == [parts.parts[0].location, parts.parts[2].location]
    read.clear()
    assert parts.with_ids([3])["id"].tolist() == [3] and read == []  # read once per process
    assert parts.meeting(slice(200, 210), slice(0, 10), columns=["id", "x"])["x"].size == 0
    renumbered = parts.renumbered(101)
    assert renumbered.table(["id"]).column("id").to_pylist() == list(range(101, 107))
    assert renumbered.with_ids([103, 104])["x"].tolist() == [30.0, 40.0]
    assert ObjectParts([None]).table() is None and len(ObjectParts([])) == 0
    # what goes to every task is where the parts lie, however many objects they hold
    import pickle

    many = pa.table({"id": pa.array(np.arange(1, 100_001)),
                     **{b: pa.array(np.arange(100_000) % 5000 + (2 if b.endswith("1") else 0))
                        for b in object_parts.BOX}})
    big = ObjectParts([write_object_part(many, tmp_path / "many.parquet")])
    assert len(big) == 100_000 and len(pickle.dumps(big)) < 1000
    # a part written again at its place is read again, not taken from a cache
    again = write_object_part(pq.read_table(parts.parts[0].location).slice(0, 1),
                              parts.parts[0].location)
    assert ObjectParts([again]).table(["id"]).column("id").to_pylist() == [1]


def test_the_second_run_takes_the_first_runs_config_with_the_passes_flips():
    from astrodask.residual_detection import second_run_config

    config = {"batch_size": 4, "maskrcnn": {"flips": None, "min_confidence": 0.3},
              "unet": {"mode": "fast"}}
    second = second_run_config(config, False)
    assert second == {"batch_size": 4, "maskrcnn": {"flips": False, "min_confidence": 0.3},
                      "unet": {"mode": "fast"}}
    assert config["maskrcnn"]["flips"] is None            # the first run's record is kept
    assert second_run_config({}, True) == {"maskrcnn": {"flips": True}}


def test_the_second_merge_keeps_the_first_merges_options_without_the_weak_rule():
    from astrodask.residual_detection import second_merge_options

    first = {"min_score": 0.4, "pictures": True, "residual_pass": None, "weak_min_score": 0.1,
             "weak_min_snr": 100.0, "irregular_centroid_sigma": 8.0}
    second = second_merge_options(first, 0.6)
    assert second == {"min_score": 0.6, "pictures": False, "residual_pass": False,
                      "weak_min_score": 0.1, "weak_min_snr": float("inf"),
                      "irregular_centroid_sigma": 8.0}
    assert first["weak_min_snr"] == 100.0                  # the first merge's record is kept
    assert astrodask.MergeOptions(**second).weak_min_snr == float("inf")


def test_options_are_checked():
    with pytest.raises(ResidualPassError, match="min_snr must be a number"):
        ResidualOptions(min_snr=float("nan")).validate()
    with pytest.raises(ResidualPassError, match="sigma must be > 0"):
        ResidualOptions(sigma=0.0).validate()
    with pytest.raises(ResidualPassError, match="flips must be true or false"):
        ResidualOptions(flips="yes").validate()
    # the score cut follows the flips unless given
    assert ResidualOptions().validate().min_score == 0.6
    assert ResidualOptions(flips=False).validate().min_score == 0.8
    assert ResidualOptions(flips=False, min_score=0.5).validate().min_score == 0.5
    assert ResidualOptions().min_score is None                # validate() returns a copy


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """A merged run of the shipped models on a small deep ``hst`` field (the residual of
    its objects with S/N >= 30 holds three faint sources the first pass missed)."""
    folder = tmp_path_factory.mktemp("residual")
    sim = astrodask.simulate(folder / "field", size="768x768", preset="hst", seed=3, deep=True)
    mosaic = astrodask.ingest([folder / "field" / f"{b}.fits" for b in sim["bands"]],
                              folder / "mosaic.zarr", halo=32)
    astrodask.run(mosaic, folder / "results", n_workers=1)
    astrodask.merge(folder / "results", n_workers=1,
                    options=astrodask.MergeOptions(pictures=False, residual_pass=False))
    return folder, folder / "results"


def test_the_pass_adds_flagged_objects_paints_them_and_is_deterministic(merged, tmp_path,
                                                                           capsys, monkeypatch):
    from astropy.io import fits

    from astrodask.cli import main
    from astrodask.engine import cluster
    from astrodask.measure import total_snr

    started = []
    connect = cluster.connect

    def counted(config):
        started.append(config)
        return connect(config)

    monkeypatch.setattr(cluster, "connect", counted)

    folder, first_results = merged
    results = tmp_path / "results"
    shutil.copytree(first_results, results)
    first = astrodask.read_catalog(results / "catalog.parquet").to_pydict()
    first_segmap = fits.getdata(results / "segmap.fits")
    # maskrcnn_hst's card turns the pass on; the setting comes from the command line
    args = ["merge", str(results), "--residual-min-snr", "30", "--n-workers", "1", "--quiet",
            "--no-pictures"]
    assert main(args) == 0
    assert len(started) == 1          # the second run and merge share the merge's cluster
    printed = capsys.readouterr()
    assert "residual pass:" in printed.out
    # the second run on the residual store repeats none of the first run's warnings
    assert "warning" not in printed.err
    catalog = astrodask.read_catalog(results / "catalog.parquet").to_pydict()
    record = json.loads((results / "merge.json").read_text())["residual_pass"]
    n = len(first["id"])
    assert record["state"] == "complete" and record["n_added"] == len(catalog["id"]) - n > 0
    assert record["options"]["flips"] is True and record["options"]["min_score"] == 0.6
    assert catalog["id"] == list(range(1, len(catalog["id"]) + 1))
    flags = np.asarray(catalog["quality_flags"])
    assert not (flags[:n] & RESIDUAL_FLAG).any() and (flags[n:] & RESIDUAL_FLAG).all()
    for key in ("x", "y", "flux_v", "parent_id"):
        assert catalog[key][:n] == first[key]
    snr = total_snr(first, ("v", "z", "j", "h"))
    segmap = fits.getdata(results / "segmap.fits")
    for k in range(n, len(catalog["id"])):
        pixels = segmap == catalog["id"][k]
        assert pixels.any()
        # painted over one bright object's pixels (of the family it names) and sky
        held = set(np.unique(first_segmap[pixels]).tolist()) - {0}
        assert len(held) == 1
        holder = held.pop()
        assert snr[holder - 1] >= 30 and first["parent_id"][holder - 1] == catalog["parent_id"][k]
    assert np.array_equal(segmap[segmap <= n], first_segmap[segmap <= n])
    assert not (results / "residual.work").exists()
    with pytest.raises(ResidualPassError, match="already had a residual pass"):
        residual_pass(results, n_workers=1)

    # merging again starts from the first pass
    assert main(args + ["--no-residual-pass"]) == 0
    assert astrodask.read_catalog(results / "catalog.parquet").num_rows == n
    # one Mask R-CNN pass per window in the second run, with its own score cut
    assert main(args + ["--no-residual-flips"]) == 0
    record = json.loads((results / "merge.json").read_text())["residual_pass"]
    assert record["options"]["flips"] is False and record["options"]["min_score"] == 0.8
    flags = astrodask.read_catalog(results / "catalog.parquet").column("quality_flags")
    assert len(flags) == n + record["n_added"]
    assert all(f & RESIDUAL_FLAG for f in flags.to_pylist()[n:])
    # the same pass again (the one-pass kind, for time) gives the same bytes
    written = {p.name: p.read_bytes() for p in (results / "catalog.parquet").glob("*.parquet")}
    assert main(args + ["--no-residual-flips"]) == 0
    again = {p.name: p.read_bytes() for p in (results / "catalog.parquet").glob("*.parquet")}
    assert again == written


def test_a_folder_without_a_merge_is_refused_in_one_line(merged, tmp_path, capsys):
    from astrodask.cli import main

    folder, first_results = merged
    results = tmp_path / "results"
    shutil.copytree(first_results, results)
    (results / "segmap.fits").unlink()
    with pytest.raises(ResidualPassError, match="no finished merge"):
        residual_pass(results)
    assert main(["merge", str(tmp_path / "missing"), "--residual-pass", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("astrodask: error:") and err.count("\n") == 1


def test_with_nothing_bright_the_pass_adds_nothing_and_runs_nothing(merged, tmp_path):
    folder, first_results = merged
    results = tmp_path / "results"
    shutil.copytree(first_results, results)
    before = {p.name: p.read_bytes() for p in (results / "catalog.parquet").glob("*.parquet")}
    summary = residual_pass(results, options=ResidualOptions(min_snr=1e9))
    assert (summary.n_parents, summary.n_added) == (0, 0) and "run" not in summary.seconds
    after = {p.name: p.read_bytes() for p in (results / "catalog.parquet").glob("*.parquet")}
    assert after == before
    record = json.loads((results / "merge.json").read_text())["residual_pass"]
    assert record["state"] == "complete" and record["n_added"] == 0
    assert "residual pass: 0 objects added" in (results / "summary.txt").read_text()
