"""A whole small pipeline through a non-local fsspec filesystem (memory://), and file:// URLs."""

import io

import numpy as np
import pytest
from astropy.io import fits

import astrodask
from astrodask import cli, storage
from astrodask.errors import DependencyError, InputError, StoreError

from benchmark_scripts import latency_store  # noqa: F401 (a fixture)
from test_engine import HALO, SHAPE, TILE, write_field

ROOT = "memory://astrodask-tests"


@pytest.fixture
def memory_root():
    storage.remove(ROOT)
    yield ROOT
    storage.remove(ROOT)


def test_ingest_run_merge_through_memory_filesystem(tmp_path, memory_root):
    from distributed import Client, LocalCluster

    paths = write_field(tmp_path)
    mosaic = astrodask.ingest(paths, f"{memory_root}/m.zarr", tile=TILE, halo=HALO)
    assert mosaic.path == f"{memory_root}/m.zarr" and mosaic.attrs["complete"]
    local = astrodask.ingest(paths, tmp_path / "m.zarr", tile=TILE, halo=HALO)
    np.testing.assert_array_equal(mosaic.read_tile(2, 3).data, local.read_tile(2, 3).data)

    # memory:// lives in this process: the workers must be threads here.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        results = f"{memory_root}/results"
        summary = astrodask.run(f"{memory_root}/m.zarr", results, client=client, models=["unet"],
                                report=f"{results}/report.html")
        assert summary.tiles_run == 35
        again = astrodask.run(f"{memory_root}/m.zarr", results, client=client, models=["unet"])
        assert again.tiles_run == 0 and again.tiles_skipped == 35
    assert storage.exists(f"{results}/report.html")
    merged = astrodask.merge(results)
    catalog = astrodask.read_catalog(f"{results}/catalog.parquet")
    assert catalog.num_rows == merged.n_objects > 0
    with fits.open(io.BytesIO(storage.get_bytes(f"{results}/segmap.fits"))) as hdul:
        segmap = hdul[0].data
        assert segmap.shape == SHAPE and segmap.max() == merged.n_objects
        assert hdul[0].header["CTYPE1"] == "RA---TAN"
    assert storage.get_bytes(f"{results}/overview.png")[:4] == b"\x89PNG"


def test_a_mosaic_opens_each_array_once(tmp_path, latency_store, monkeypatch):
    """Opening a Zarr array reads its metadata: on an object store a request of its own."""
    from astrodask.mosaic import open_mosaic

    module, requests = latency_store
    url = "latency://astrodask-tests/m.zarr"
    astrodask.ingest(write_field(tmp_path), url, tile=TILE, halo=HALO)
    # requests long enough that two started together overlap on a loaded machine too
    monkeypatch.setattr(module.SlowMemoryFileSystem, "latency", 0.1)
    mosaic = open_mosaic(url)
    first = mosaic.read_tile(0, 0)
    requests.reset()
    again = mosaic.read_tile(0, 0)
    assert requests.by_kind["get"] == 2  # a chunk of ``tiles`` and one of ``tile_mask``
    assert requests.most_in_flight == 2  # together
    np.testing.assert_array_equal(again.data, first.data)
    mosaic.read_window(1, 1, margin=4)  # opens ``image`` and ``mask``
    requests.reset()
    wide = mosaic.read_window(1, 1, margin=4)
    assert requests.by_kind["get"] >= 2 and requests.most_in_flight >= 2
    (tmp_path / "local").mkdir()
    local = open_mosaic(astrodask.ingest(write_field(tmp_path / "local"), tmp_path / "m.zarr",
                                         tile=TILE, halo=HALO).path)
    np.testing.assert_array_equal(wide.data, local.read_window(1, 1, margin=4).data)
    np.testing.assert_array_equal(wide.mask, local.read_window(1, 1, margin=4).mask)
    assert mosaic.array("image") is mosaic.array("image")
    with pytest.raises(StoreError, match="has no array 'nothing'"):
        mosaic.array("nothing")


def test_failed_remote_ingest_leaves_nothing(tmp_path, memory_root):
    paths = write_field(tmp_path)
    fits.writeto(paths[1], np.full(SHAPE, np.nan, np.float32), fits.getheader(paths[1]),
                 overwrite=True)
    with pytest.raises(InputError, match="has no valid pixels"):
        astrodask.ingest(paths, f"{memory_root}/bad.zarr", tile=TILE, halo=HALO)
    assert not storage.exists(f"{memory_root}/bad.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        astrodask.open_mosaic(f"{memory_root}/bad.zarr")


def test_file_urls_are_local_paths(tmp_path, capsys):
    paths = write_field(tmp_path, bands="gr")
    code = cli.main(["ingest", *map(str, paths), "--out", f"file://{tmp_path}/m.zarr",
                     "--tile", str(TILE), "--halo", str(HALO), "--quiet"])
    assert code == 0 and (tmp_path / "m.zarr" / "zarr.json").exists()
    assert astrodask.open_mosaic(f"file://{tmp_path}/m.zarr").bands == ("g", "r")


def test_unknown_or_unavailable_protocols_are_one_line_errors(tmp_path, capsys):
    paths = write_field(tmp_path, bands="g")
    with pytest.raises((DependencyError, InputError)):
        astrodask.ingest(paths, "nosuchprotocol://bucket/m.zarr")
    code = cli.main(["run", "nosuchprotocol://bucket/m.zarr", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("astrodask: error: ")


@pytest.mark.parametrize("where", ["local", "memory"])
def test_partitioned_catalog_round_trip(tmp_path, memory_root, where):
    import pyarrow as pa

    from astrodask.outputs.catalog import catalog_provenance, read_catalog, write_catalog

    location = str(tmp_path / "c.parquet") if where == "local" else f"{memory_root}/c.parquet"
    table = pa.table({"id": list(range(1, 6)), "x": [0.5, 1.5, 2.5, 3.5, 4.5]})
    write_catalog(table, location, {"bands": ["g"]})  # a single file first ...
    write_catalog(table, location, {"bands": ["g"]}, partition_rows=2)  # ... then replaced
    assert storage.listdir(location) == ["part-00000.parquet", "part-00001.parquet",
                                         "part-00002.parquet"]
    assert read_catalog(location).select(["id", "x"]).equals(table)
    assert catalog_provenance(location) == {"bands": ["g"]}
    if where == "local":
        assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]  # no staging left


def test_staged_folder_replaces_or_refuses_what_appeared(tmp_path, memory_root):
    target = tmp_path / "out.zarr"
    with storage.staged_folder(target) as staging:
        storage.makedirs(staging)
        storage.put_bytes(f"{staging}/a", b"new")
        assert not target.exists()  # nothing at the name until the block ends
    assert (target / "a").read_bytes() == b"new"

    with storage.staged_folder(target) as staging:  # replace=True: old one moved aside
        storage.makedirs(staging)
        storage.put_bytes(f"{staging}/b", b"newer")
    assert sorted(p.name for p in target.iterdir()) == ["b"]

    with pytest.raises(StoreError, match="appeared while it was being written"):
        with storage.staged_folder(target, replace=False) as staging:
            storage.makedirs(staging)
            storage.put_bytes(f"{staging}/c", b"late")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no staging left

    with pytest.raises(RuntimeError):
        with storage.staged_folder(f"{memory_root}/x.zarr") as staging:
            assert staging == f"{memory_root}/x.zarr"  # object stores: in place
            storage.makedirs(staging)
            storage.put_bytes(f"{staging}/a", b"partial")
            raise RuntimeError("writer failed")
    assert not storage.exists(f"{memory_root}/x.zarr")


def test_local_files_written_by_name_appear_whole(tmp_path):
    target = tmp_path / "checkpoint.weights.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with storage.local_file_written_whole(target) as tmp:
            # hidden, beside the target, same suffixes (Keras insists on .weights.h5)
            assert tmp.parent == tmp_path and tmp.name.startswith(".")
            assert tmp.name.endswith(".weights.h5")
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.weights.h5"]

    arrays = tmp_path / "optimizer.npz"
    with storage.local_file_written_whole(arrays) as tmp:
        np.savez(tmp, a=np.arange(3))  # NumPy adds no second .npz: the name has it
    assert np.load(arrays)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.weights.h5",
                                                          "optimizer.npz"]

    storage.put_json(tmp_path / "state.json", {"b": 1, "a": 2})
    assert (tmp_path / "state.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_readers_do_not_see_files_still_being_written(tmp_path):
    from astrodask.engine.results import Results

    results = Results(tmp_path / "out")
    storage.makedirs(tmp_path / "out" / "done")
    results.mark_done([(0, 1)], {"windows": 1})
    with storage.local_file_written_whole(results.done_path(2, 3)) as tmp:
        tmp.write_text("{")  # half-written marker, named like one (.json)
        assert tmp.name.endswith(".json")
        assert results.done_tiles() == {(0, 1)}
        assert storage.listdir(tmp_path / "out" / "done") == ["00000-00001.json"]
        assert len(storage.listdir(tmp_path / "out" / "done", hidden=True)) == 2
    assert results.done_tiles() == {(0, 1), (2, 3)}


@pytest.mark.parametrize("where", ["local", "memory"])
def test_file_opened_for_writing_appears_only_when_closed_cleanly(tmp_path, memory_root, where):
    location = str(tmp_path / "a.fits") if where == "local" else f"{memory_root}/a.fits"
    with pytest.raises(RuntimeError):
        with storage.open_for_writing(location) as fh:
            fh.write(b"half")
            raise RuntimeError("writer failed")
    assert not storage.exists(location)
    with storage.open_for_writing(location) as fh:
        fh.write(b"whole")
    assert storage.get_bytes(location) == b"whole"
    if where == "local":
        assert [p.name for p in tmp_path.iterdir()] == ["a.fits"]
