"""The merge on Dask when workers die: rescheduled tasks give the same bytes, or one clear line.

A worker plugin replaces :func:`astrodask.storage.put_bytes` in every worker
process (also in those the nanny starts again) with one that kills its own
process while writing a chosen file: halfway through its temporary file, as
a worker that dies mid-write leaves it. Fields and fake detections are those
of test_merge.py.
"""

import os
import re
import signal

from distributed import WorkerPlugin

from astrodask import cli
from astrodask.merging.run import WORK_DIR, merge

from test_merge import fake_detections, field, ingest  # noqa: F401 (field is a fixture)
from test_merge_dask import _copy_results

#: Files of a finished merge that hold timings or task counts, not results.
RECORDS = {"merge.json", "summary.txt"}


class DieWhileWriting(WorkerPlugin):
    """Worker plugin: the worker that writes a file ending with ``suffix`` dies halfway.

    Parameters
    ----------
    suffix : str
        End of the path (``/``-separated) of the file whose writer dies.
    marker : str or None
        Only the first writer dies (it creates this file first); ``None``:
        every writer dies.
    """

    def __init__(self, suffix, marker=None):
        self.suffix, self.marker = suffix, marker

    def setup(self, worker):
        from astrodask import storage

        original, suffix, marker = storage.put_bytes, self.suffix, self.marker

        def put_bytes(location, data):
            if str(location).endswith(suffix) and _first_to_claim(marker):
                tmp = storage._hidden_sibling(storage.filesystem(location)[1])
                tmp.write_bytes(bytes(data)[:len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return original(location, data)

        storage.put_bytes = put_bytes


def _first_to_claim(marker):
    """True for the first caller only (creates ``marker``); always true without a marker."""
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _cluster(n_workers, **config):
    import dask
    from distributed import LocalCluster

    with dask.config.set(config):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0")


def _files(out):
    """Every file of a merged results folder (relative path → bytes), records aside."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in RECORDS}


def _worker_pids(client):
    return set(client.run(os.getpid).values())


def test_worker_killed_mid_merge_ends_identical(field, tmp_path):
    """One worker dies writing a catalog part, another after painting a chunk: same bytes."""
    from distributed import Client

    folder, truth, masks = field
    mosaic = ingest(folder, "faults", tile=64, halo=8)
    calm = fake_detections(mosaic, masks, truth, folder / "faults-calm")
    hit = _copy_results(calm, folder / "faults-hit")
    paint_marker, part_marker = tmp_path / "died-painting", tmp_path / "died-writing-part"
    with _cluster(2) as cluster, Client(cluster) as client:
        merge(calm, client=client)
        pids = _worker_pids(client)
        client.register_plugin(DieWhileWriting("done/paint/tile-00004-00004.json",
                                               str(paint_marker)), name="die-painting")
        client.register_plugin(DieWhileWriting("catalog/part-00000.parquet", str(part_marker)),
                               name="die-writing-part")
        summary = merge(hit, client=client)
        client.wait_for_workers(2)
        # Both deaths may hit the same worker slot (its replacement takes the next task).
        assert _worker_pids(client) - pids, "no worker was replaced"
    assert paint_marker.exists() and part_marker.exists()  # each written just before a kill
    assert _files(hit) == _files(calm)
    assert not list(hit.rglob(".*")), "a temporary of the dead writer was left"
    assert summary.n_objects > 50 and not (hit / WORK_DIR).exists()


def test_every_worker_dying_is_one_line_from_the_cli(field, capsys):
    """Each worker that takes a paint task dies: the CLI prints one line, exits non-zero."""
    from distributed import Client

    folder, truth, masks = field
    mosaic = ingest(folder, "doomed", tile=64, halo=8)
    out = fake_detections(mosaic, masks, truth, folder / "doomed")
    with _cluster(2, **{"distributed.scheduler.allowed-failures": 1}) as cluster, \
            Client(cluster) as client:
        client.register_plugin(DieWhileWriting("done/paint/tile-00000-00000.json"),
                               name="die-painting")
        code = cli.main(["merge", str(out), "--scheduler", cluster.scheduler_address,
                         "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err
    # whichever paint task was on the dying worker when its allowance ran out is named
    assert re.match(r"astrodask: error: workers kept dying in the merge \(paint tile-\d{5}-\d{5}",
                    err), err
    assert "run the merge again to resume" in err
    assert not (out / "catalog.parquet").exists()
    assert (out / WORK_DIR / "done" / "resolve").is_dir()



def test_leftovers_of_dead_writers_are_dropped_before_publishing(tmp_path):
    """Temporaries of ``storage.put_bytes`` and of Zarr go; finished files stay."""
    from astrodask.merging.run import drop_leftovers

    kept = ["part-00000.parquet", "segmap.zarr/zarr.json", "segmap.zarr/labels/c/0/1"]
    junk = [".part-00001.parquet.tmp-12-0a1b2c3d.parquet",
            "segmap.zarr/labels/c/0/.1.tmp-12-0a1b2c3d",
            "segmap.zarr/labels/c/0/0.5f0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b.partial"]
    for name in kept + junk:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    drop_leftovers(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) \
        == sorted(kept)
