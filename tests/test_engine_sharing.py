"""Runs that share a cluster: each keeps its own models; plugins go when runs end;
runs that no worker can take fail instead of waiting for ever."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import astrodask
from astrodask import cli
from astrodask.engine.run import EngineError

from test_engine import HALO, TILE, unet_mean, write_field

A = dict(batch_size=1, models=["unet"])
B = dict(batch_size=2, models=["unet"], config={"unet": {"flips": True, "outputs": ["mean", "var"]}})


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("field")
    astrodask.ingest(write_field(folder, seed=5), folder / "m.zarr", tile=TILE, halo=HALO)
    return folder / "m.zarr"


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    from astrodask.engine.plugin import worker_environment

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=worker_environment(1)) as cluster:
        yield cluster


def astrodask_plugins(client):
    """Names of astrodask plugins on the scheduler and on each worker."""
    def on_worker(dask_worker):
        return sorted(n for n in dask_worker.plugins if n.startswith("astrodask"))

    def on_scheduler(dask_scheduler):
        return sorted(n for n in dask_scheduler.worker_plugins if n.startswith("astrodask"))

    return client.run_on_scheduler(on_scheduler), client.run(on_worker)


def test_concurrent_runs_get_their_solo_results(mosaic_path, cluster, tmp_path):
    from distributed import Client

    def outputs(out):
        import zarr

        group = zarr.open_group(str(out / "unet.zarr"), mode="r")
        return {name: group[name][:] for name in group.array_keys()}

    with Client(cluster) as client:
        solo = {}
        for name, options in (("a", A), ("b", B)):
            astrodask.run(mosaic_path, tmp_path / f"solo-{name}", client=client, **options)
            solo[name] = outputs(tmp_path / f"solo-{name}")
        # the settings differ enough that a run served by the other's models would show
        assert np.abs(solo["a"]["mean"] - solo["b"]["mean"]).max() > 1e-3

        # Two runs at once from two threads, each with its own client, as two
        # `astrodask run --scheduler` would be.
        barrier = threading.Barrier(2)
        errors, summaries = [], {}

        def start(name, options):
            try:
                with Client(cluster.scheduler_address) as own:
                    barrier.wait()
                    summaries[name] = astrodask.run(mosaic_path, tmp_path / f"both-{name}",
                                                    client=own, **options)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=item)
                   for item in (("a", A), ("b", B))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert summaries["a"].tiles_run == summaries["b"].tiles_run == 35
        for name in ("a", "b"):
            got = outputs(tmp_path / f"both-{name}")
            assert got.keys() == solo[name].keys()
            for key in got:
                np.testing.assert_array_equal(got[key], solo[name][key], err_msg=f"{name} {key}")
        assert astrodask_plugins(client) == ([], {w: [] for w in client.scheduler_info()[
            "workers"]}), "a finished run left its models on the cluster"


def test_plugin_goes_after_an_error_or_an_interrupt(mosaic_path, cluster, tmp_path):
    from distributed import Client

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    (tmp_path / "broken.card.json").write_text(
        '{"name": "broken", "architecture": "unet", "bands": ["h", "j", "v", "z"], '
        '"pixel_scale_arcsec": 0.06, "normalisation": {}, "classes": ["a", "b"]}')

    def interrupt(done, total):
        if done:
            raise KeyboardInterrupt

    with Client(cluster) as client:
        with pytest.raises(EngineError, match="could not load the models"):
            astrodask.run(mosaic_path, tmp_path / "r1", client=client, models=[str(bad)])
        assert astrodask_plugins(client)[0] == []
        with pytest.raises(KeyboardInterrupt):
            astrodask.run(mosaic_path, tmp_path / "r2", client=client, progress=interrupt,
                          models=["unet"])
        scheduler, workers = astrodask_plugins(client)
        assert scheduler == [] and all(names == [] for names in workers.values())


def test_gpu_workers_without_gpu_workers_fail_within_a_minute(mosaic_path, cluster, tmp_path,
                                                              capsys, monkeypatch):
    from astrodask.engine.cluster import DEFAULT_WORKER_WAIT

    assert DEFAULT_WORKER_WAIT < 60
    monkeypatch.setenv("ASTRODASK_WORKER_WAIT", "2")
    start = time.monotonic()
    code = cli.main(["run", str(mosaic_path), "--out", str(tmp_path / "r"), "--quiet",
                     "--models", "unet", "--scheduler", cluster.scheduler_address,
                     "--gpu-workers"])
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # (the tiny mosaic's halo is short of the U-Net's context: warning lines come first)
    assert all(line.startswith("astrodask: warning: ") for line in err[:-1])
    assert err[-1:] == ["astrodask: error: none of the 2 worker(s) of the cluster advertises "
                        "GPU=1, which --gpu-workers needs: start workers with `dask worker "
                        "--resources GPU=1` or run without --gpu-workers (waited 2 s)"]


def test_run_fails_when_its_only_gpu_worker_goes(mosaic_path, cluster, tmp_path, monkeypatch):
    from astrodask.engine.plugin import worker_environment

    monkeypatch.setenv("ASTRODASK_WORKER_WAIT", "2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
         "--nthreads", "1", "--resources", "GPU=1", "--no-nanny", "--no-dashboard"],
        env=dict(os.environ, **worker_environment(1)), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)

    def kill_the_gpu_worker(done, total):
        if done and worker.poll() is None:
            worker.kill()

    try:
        start = time.monotonic()
        with pytest.raises(EngineError, match="none of the 2 worker.*advertises GPU=1") as info:
            astrodask.run(mosaic_path, tmp_path / "r", batch_size=1, gpu_workers=True, models=["unet"],
                          scheduler=cluster.scheduler_address, progress=kill_the_gpu_worker)
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 90


def test_results_are_tracked_on_the_loop_of_the_client_that_submitted(cluster):
    """Another client current (a notebook's, a test's): results still come through ours."""
    from distributed import Client, as_completed

    from astrodask.engine.cluster import completed

    with Client(cluster) as current:
        ours = Client(cluster.scheduler_address)  # as connect() makes it: not made current
        try:
            assert current.loop is not ours.loop
            # what astrodask must not do: as_completed alone follows the current client
            assert as_completed().loop is current.loop
            futures = [ours.submit(pow, 2, k, pure=False) for k in range(4)]
            queue = completed(ours, futures, with_results=True)
            assert queue.loop is ours.loop
            assert sorted(value for _, value in queue) == [1, 2, 4, 8]
        finally:
            ours.close()


def test_performance_report_is_taken_through_the_runs_client(cluster, tmp_path):
    """``performance_report`` follows the current client: the run makes its own current."""
    from distributed import Client, get_client

    from astrodask.engine.run import _report_context

    with Client(cluster) as current:
        ours = Client(cluster.scheduler_address)
        try:
            with _report_context(tmp_path / "report.html", ours):
                assert get_client() is ours
                assert ours.submit(pow, 2, 5, pure=False).result() == 32
            assert get_client() is current
        finally:
            ours.close()
    assert b"<html" in (tmp_path / "report.html").read_bytes()[:2000].lower()
    with _report_context(None, None):
        pass
