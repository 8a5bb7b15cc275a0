"""The distributed engine: correctness against a plain loop, resume, failures, options."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import astrodask
from astrodask import cli
from astrodask.config import RunConfig, load_config
from astrodask.engine.results import Results
from astrodask.engine.run import EngineError, batches_of, resolve_config
from astrodask.errors import InputError, StoreError

TILE, HALO = 64, 16
SHAPE = (150, 200)  # 5 x 7 windows of core 32

#: The engine tests run the U-Net alone (the default for these bands adds maskrcnn_hst).
UNET = ["morpheus"]  # named: the kind "unet" on these bands would pick morpheus_hst


def write_field(folder, bands="hjvz", seed=0):
    """A small multi-band field of blobs with a TAN WCS, one FITS per band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    image = np.zeros(SHAPE)
    for _ in range(25):
        y, x = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
        r = rng.uniform(1, 5)
        image += rng.uniform(0.5, 5) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.1, -27.8]
    wcs.wcs.crpix = [100, 75]
    wcs.wcs.cdelt = [-0.06 / 3600, 0.06 / 3600]
    paths = []
    for band in bands:
        header = wcs.to_header()
        header["FILTER"] = band
        data = (image + rng.normal(scale=0.05, size=SHAPE)).astype(np.float32)
        path = folder / f"{band}.fits"
        fits.writeto(path, data, header)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("field")
    paths = write_field(folder)
    astrodask.ingest(paths, folder / "m.zarr", tile=TILE, halo=HALO)
    return folder / "m.zarr"


@pytest.fixture(scope="module")
def client():
    from astrodask.engine.cluster import connect

    with connect(resolve_config(n_workers=2, threads_per_worker=1)) as (client, _):
        yield client


@pytest.fixture(scope="module")
def reference(mosaic_path, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "results"
    summary = astrodask.run(mosaic_path, out, client=client, batch_size=3, models=UNET)
    assert summary.tiles_run == summary.tiles_total == 35
    return out


def unet_mean(results):
    import zarr

    return zarr.open_group(str(results / "unet.zarr"), mode="r")["mean"][:]


def test_engine_matches_the_bare_model_on_every_core(mosaic_path, reference):
    from astrodask.engine.runners import filled_data
    from astrodask.models.unet import load_unet
    from astrodask.morphology.windows import classify_tile

    mosaic = astrodask.open_mosaic(mosaic_path)
    model, _ = load_unet("morpheus")
    mean = unet_mean(reference)
    assert mean.shape == (5, *SHAPE) and not np.isnan(mean).any()
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-4)
    for iy, ix in [(0, 0), (2, 3), (4, 6)]:
        # the model's input: the window widened to the fast mode's context (halo 16 + 96 =
        # 112 px, on the network's 8-px lattice), padding filled with sky noise seeded by it
        tile = mosaic.read_window(iy, ix, margin=96)
        expected = classify_tile(model, filled_data(tile, mosaic), mode="fast")["mean"]
        ys, xs = mosaic.core_slices(iy, ix)
        np.testing.assert_allclose(mean[:, ys, xs], expected[(slice(None),) + tile.core],
                                   atol=1e-5)
    record = Results(reference).read_run()
    assert record["complete"] and record["models"][0]["name"] == "morpheus"
    assert record["mosaic_digest"] == mosaic.content_digest  # the merge checks its mosaic by it
    assert load_config(reference / "config.yaml").batch_size == 3


def test_rerun_skips_done_tiles_and_resumes_missing_ones(mosaic_path, client, reference,
                                                         tmp_path):
    import shutil

    out = tmp_path / "results"
    shutil.copytree(reference, out)
    summary = astrodask.run(mosaic_path, out, client=client, batch_size=3, models=UNET)
    assert summary.tiles_run == 0 and summary.tiles_skipped == 35
    # Lose two tiles' markers and their pixels: only their batch is recomputed.
    import zarr

    for iy, ix in [(1, 2), (1, 3)]:  # tiles 9 and 10 of the fixed batch 9..11
        (out / "done" / f"{iy:05d}-{ix:05d}.json").unlink()
        zarr.open_group(str(out / "unet.zarr"), mode="r+")["mean"][
            :, iy * 32:(iy + 1) * 32, ix * 32:(ix + 1) * 32] = np.nan
    summary = astrodask.run(mosaic_path, out, client=client, batch_size=3, models=UNET)
    assert summary.tiles_run == 3  # the whole batch (1,2),(1,3),(1,4)
    np.testing.assert_array_equal(unet_mean(out), unet_mean(reference))
    summary = astrodask.run(mosaic_path, out, client=client, batch_size=3, restart=True,
                            models=UNET)
    assert summary.tiles_run == 35
    np.testing.assert_array_equal(unet_mean(out), unet_mean(reference))


def test_killed_worker_mid_run_ends_identical(mosaic_path, reference, tmp_path):
    from distributed import Client, LocalCluster

    from astrodask.engine.plugin import worker_environment

    out = tmp_path / "results"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=worker_environment(1)) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_when_started():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                if (out / "done").exists() and any((out / "done").iterdir()):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        summary = astrodask.run(mosaic_path, out, client=client, batch_size=3, models=UNET)
        killer.join()
    assert killed, "the worker was never killed"
    assert summary.tiles_run + summary.tiles_skipped == 35
    np.testing.assert_array_equal(unet_mean(out), unet_mean(reference))
    assert Results(out).read_run()["complete"]


def test_interrupted_run_resumes_to_identical_outputs(mosaic_path, reference, tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, "-m", "astrodask.cli", "run", str(mosaic_path), "--out", str(out),
               "--n-workers", "1", "--batch-size", "3", "--quiet", "--models", "morpheus"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if len(Results(out).done_tiles()) >= 3:
            break
        assert process.poll() is None, "run finished before it could be interrupted"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole run: client, scheduler and workers
    process.wait()
    # The kill may land while a batch's markers are written one by one: that
    # batch (and any hidden temporary marker) does not count as done.
    marked = Results(out).done_tiles()
    grid = astrodask.open_mosaic(mosaic_path).tile_grid
    skipped = sum(len(batch) for batch in batches_of(grid.indices(), 3)
                  if all(tile in marked for tile in batch))
    assert 3 <= len(marked) < 35 and skipped <= len(marked)
    assert not Results(out).read_run()["complete"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{35 - skipped} tiles computed, {skipped} already done" in result.stdout
    np.testing.assert_array_equal(unet_mean(out), unet_mean(reference))
    assert Results(out).read_run()["complete"]


def test_results_of_another_run_are_not_mixed(mosaic_path, client, reference, tmp_path):
    import shutil

    out = tmp_path / "results"
    shutil.copytree(reference, out)
    with pytest.raises(StoreError, match="different mosaic, models or options"):
        astrodask.run(mosaic_path, out, client=client, batch_size=4, models=UNET)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an astrodask results folder"):
        astrodask.run(mosaic_path, foreign, client=client, models=UNET)


def test_band_checks_and_band_map(tmp_path, client):
    paths = write_field(tmp_path, bands="abcd", seed=1)
    astrodask.ingest(paths, tmp_path / "m.zarr", tile=TILE, halo=HALO)
    with pytest.raises(InputError, match="expects bands H,J,V,Z; the mosaic has a,b,c,d"):
        astrodask.run(tmp_path / "m.zarr", tmp_path / "r1", client=client, models=["morpheus"])
    with pytest.raises(InputError, match="no shipped model takes bands a,b,c,d"):
        astrodask.run(tmp_path / "m.zarr", tmp_path / "r2", client=client)
    with pytest.raises(InputError, match="no shipped unet model takes bands a,b,c,d"):
        astrodask.run(tmp_path / "m.zarr", tmp_path / "r2", client=client, models=["unet"])
    summary = astrodask.run(tmp_path / "m.zarr", tmp_path / "r3", client=client, models=UNET,
                            band_map={"H": "d", "J": "c", "V": "a", "Z": "b"})
    assert summary.tiles_run == 35
    record = Results(tmp_path / "r3").read_run()
    assert record["models"][0]["band_indices"] == [3, 2, 0, 1]


def test_performance_report(mosaic_path, client, tmp_path):
    out = tmp_path / "results"
    report = tmp_path / "report.html"
    astrodask.run(mosaic_path, out, client=client, batch_size=35, report=str(report),
                  models=UNET)
    assert report.stat().st_size > 1000 and b"<html" in report.read_bytes()[:2000].lower()


def test_local_clusters_spare_the_models_cpu(monkeypatch):
    """Clusters started by the engine: glibc's allocator defaults and quiet chores.

    Dask's nanny would export MALLOC_TRIM_THRESHOLD_ (slower model calls), and
    its profiler, watchdog and monitors take CPU from the models.
    """
    import dask

    from astrodask.engine.cluster import connect

    def settings():
        return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
                dask.config.get("distributed.worker.profile.enabled"),
                dask.config.get("distributed.admin.tick.interval"))

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(resolve_config(n_workers=1)) as (client, _):
        assert list(client.run(settings).values()) == [(None, "1", False, "1s")]
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # the client process is left clean
    assert dask.config.get("distributed.worker.profile.enabled")  # and its config restored
    with connect(resolve_config(n_workers=1, report="report.html")) as (client, _):
        assert list(client.run(settings).values())[0][2], "--report needs the profiler"


def test_default_batch_size_follows_the_models(mosaic_path, client, tmp_path):
    from types import SimpleNamespace

    from astrodask.engine.run import default_batch_size

    assert default_batch_size([SimpleNamespace(kind="unet")]) == 1
    assert default_batch_size([SimpleNamespace(kind="unet"),
                               SimpleNamespace(kind="maskrcnn")]) == 4
    assert RunConfig().batch_size is None
    summary = astrodask.run(mosaic_path, tmp_path / "r", client=client, models=UNET)
    assert summary.tiles_run == 35
    assert load_config(tmp_path / "r" / "config.yaml").batch_size == 1
    with pytest.raises(InputError, match="batch size"):
        resolve_config(batch_size=0)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("models: [unet]\nbatch_size: 7\nunet:\n  mode: faithful\n  stride: 5\n")
    config = resolve_config(path, batch_size=None, n_workers=3)
    assert config.batch_size == 7 and config.n_workers == 3
    assert config.unet.mode == "faithful" and config.unet.stride == 5
    assert RunConfig.from_dict(config.to_dict()) == config
    path.write_text("batchsize: 7\n")
    with pytest.raises(InputError, match="unknown configuration key"):
        load_config(path)
    path.write_text("unet: {mode: slow}\n")
    with pytest.raises(InputError, match="unet mode must be fast or faithful"):
        load_config(path)


def test_faithful_stride_must_fit_the_tile_lattice(mosaic_path, tmp_path):
    with pytest.raises(InputError, match="needs the tile core \\(32\\) and halo \\(16\\)"):
        astrodask.run(mosaic_path, tmp_path / "r", config={"unet": {"mode": "faithful",
                                                                     "stride": 5}})


def test_gpus_without_gpu_is_a_clear_error(mosaic_path, tmp_path, capsys):
    code = cli.main(["run", str(mosaic_path), "--out", str(tmp_path / "r"), "--gpus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # the halo-16 test mosaic is short of the U-Net's context: a warning line comes first
    assert all(line.startswith("astrodask: warning: ") for line in err[:-1])
    assert err[-1:] == ["astrodask: error: --gpus was given but no NVIDIA GPU is visible on "
                        "this machine"]
    assert "dask_cuda" not in sys.modules


def test_missing_store_cli(tmp_path, capsys):
    code = cli.main(["run", str(tmp_path / "nothing.zarr"), "--out", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"astrodask: error: mosaic store {tmp_path / 'nothing.zarr'} does not exist")


def test_a_damaged_chunk_is_one_line_naming_it_and_workers_keep_quiet(mosaic_path, tmp_path,
                                                                      capfd, monkeypatch):
    """The workers of a cluster started here leave a failed task to the one-line error (its
    traceback would come first, twice with the retry); ``--debug`` keeps their logs."""
    import shutil

    monkeypatch.setenv("ASTRODASK_DEBUG", "")  # restored after the test, which sets it
    bad = tmp_path / "bad.zarr"
    shutil.copytree(mosaic_path, bad)
    chunk = bad / "image" / "c" / "0" / "1" / "2"  # band 0, core (1, 2): the U-Net reads it
    chunk.write_bytes(chunk.read_bytes()[:50])
    argv = ["run", str(bad), "--out", str(tmp_path / "r"), "--models", ",".join(UNET),
            "--n-workers", "1", "--batch-size", "1", "--quiet"]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1, err
    line = err.strip()
    assert re.fullmatch(rf"astrodask: error: cannot read image\[0:4, \d+:\d+, \d+:\d+\] of mosaic "
                        rf"{re.escape(str(bad))} \(RuntimeError: .+\): a damaged chunk\? ingest "
                        "the mosaic again", line), line
    with pytest.raises(StoreError):
        cli.main(["--debug"] + argv + ["--restart"])
    assert "Compute Failed" in capfd.readouterr().err


def test_model_that_fails_to_load_on_workers_is_one_line(mosaic_path, client, tmp_path):
    # A model file that is not a Keras archive fails on the workers, not on the client.
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    (tmp_path / "broken.card.json").write_text(
        '{"name": "broken", "architecture": "unet", "bands": ["h", "j", "v", "z"], '
        '"pixel_scale_arcsec": 0.06, "normalisation": {}, "classes": ["a", "b"]}')
    with pytest.raises(EngineError, match="could not load the models on the workers") as info:
        astrodask.run(mosaic_path, tmp_path / "r", client=client, models=[str(bad)])
    assert "\n" not in str(info.value)
    # The client is still usable for a good run afterwards.
    assert astrodask.run(mosaic_path, tmp_path / "r2", client=client, batch_size=35,
                         models=UNET).tiles_run


def _stop(process, grace=30):
    """Stop a worker process: SIGTERM first, SIGKILL if its graceful close hangs
    (a worker without a nanny may wait on its comms long after the run is done)."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def test_existing_cluster_with_gpu_workers_only_runs_there(mosaic_path, tmp_path):
    """--scheduler joins a cluster; --gpu-workers keeps tasks on workers with GPU=1."""
    from distributed import LocalCluster

    from astrodask.engine.plugin import worker_environment

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=worker_environment(1)) as cluster:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
             "--nthreads", "1", "--resources", "GPU=1", "--no-nanny", "--no-dashboard"],
            env=dict(os.environ, **worker_environment(1)), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            args = cli.build_parser().parse_args(
                ["run", str(mosaic_path), "--out", str(tmp_path / "r"), "--scheduler",
                 cluster.scheduler_address, "--gpu-workers"])
            assert args.gpu_workers and args.scheduler == cluster.scheduler_address
            summary = astrodask.run(mosaic_path, tmp_path / "results", batch_size=5, models=UNET,
                                    scheduler=cluster.scheduler_address, gpu_workers=True)
        finally:
            _stop(worker)
    assert summary.tiles_run == 35
    assert set(summary.workers) == {worker.pid}, "a task ran on a worker without GPU=1"
    assert summary.cluster.startswith("existing cluster")
    assert Results(tmp_path / "results").read_run()["config"]["gpu_workers"]


def test_parsers_can_be_built_again_and_again():
    # each parser gets its own command groups (train, models), whatever became of the last
    import gc

    for _ in range(20):
        args = cli.build_parser().parse_args(["train", "maskrcnn", "run-dir"])
        assert args.command == "train" and args.train_command == "maskrcnn"
        gc.collect()


def test_a_cluster_close_that_times_out_is_a_warning_not_a_failure():
    from astrodask.engine.cluster import _close_quietly

    class SlowCluster:
        def close(self):
            raise TimeoutError

    with pytest.warns(UserWarning, match="did not shut down in time"):
        _close_quietly(SlowCluster())


def test_workers_are_silenced_before_a_local_cluster_closes():
    """A worker whose heartbeat meets the closed scheduler logs an error with a traceback;
    the cluster's own shutdown is no error, so the workers log only critical messages then."""
    import logging

    from astrodask.engine.cluster import WORKER_LOGGERS, _quiet_workers

    import sys
    import warnings

    def levels():
        return [logging.getLogger(name).level for name in WORKER_LOGGERS]

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        before, hook, filters = levels(), sys.unraisablehook, list(warnings.filters)
        try:
            _quiet_workers(client)  # in-process workers: silences this process
            assert levels() == [logging.CRITICAL] * len(WORKER_LOGGERS)
            assert sys.unraisablehook is not hook and warnings.filters[0][0] == "ignore"
        finally:
            for name, level in zip(WORKER_LOGGERS, before):
                logging.getLogger(name).setLevel(level)
            sys.unraisablehook = hook
            warnings.filters[:] = filters

    class Closed:
        def run(self, function):
            raise OSError("scheduler gone")

    _quiet_workers(Closed())  # never raises


def test_clusters_started_here_are_silenced_at_teardown(monkeypatch):
    from astrodask.engine import cluster as cluster_module

    calls = []
    monkeypatch.setattr(cluster_module, "_quiet_workers", calls.append)
    with cluster_module.connect(resolve_config(n_workers=1)) as (client, _):
        assert calls == []
    assert calls == [client]


def test_models_are_warmed_up_only_when_asked(tmp_path, monkeypatch):
    """``warm_up``: an empty window per model at worker set-up, off by default (the first
    task traces the same graphs)."""
    from distributed import Client, LocalCluster

    from astrodask.engine import runners

    # one window: the runs' work is the models' loading
    mosaic = astrodask.ingest(write_field(tmp_path), tmp_path / "m.zarr", tile=256, halo=HALO)
    windows = []
    monkeypatch.setattr(runners.UnetRunner, "warm_up",
                        lambda self, grid, batch_size=1: windows.append(grid.tile))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        cold = astrodask.run(mosaic, tmp_path / "cold", client=client, models=UNET)
        assert cold.tiles_run == 1 and windows == []
        astrodask.run(mosaic, tmp_path / "warm", client=client, models=UNET, warm_up=True)
        assert windows == [256]
    assert not RunConfig().warm_up
