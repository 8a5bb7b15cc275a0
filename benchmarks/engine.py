"""Engine overhead, scaling and memory, measured side by side in one run.

On a simulated ``hst`` mosaic (the bands of the shipped Morpheus U-Net):

1. the bare model: N plain processes, each loads the model and loops over its
   share of the tiles (read the window from Zarr, widened to the fast mode's
   context as the engine reads it, run the U-Net); and the same on the halo'd
   windows alone, for the cost of that context;
2. ``astrodask.run`` with N workers and with 1 worker on the same tiles;
3. peak memory per worker for a small and a 4x-side mosaic.

Prints engine/bare throughput (target >= 0.85), 2-worker/1-worker speed-up
(target >= 1.7) and the per-worker peak memory ratio (target <= 1.10).

    .venv/bin/python benchmarks/engine.py [--size 4096] [--workers 2]
"""

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _bare_worker(args):
    mosaic_path, tiles, queue, go, widen = args
    from astrodask.engine.plugin import worker_environment
    from astrodask.framework import configure_framework

    os.environ.update(worker_environment(1))  # the same pools as an engine worker

    configure_framework(1)
    import astrodask
    from astrodask.config import UnetOptions
    from astrodask.engine.runners import UnetRunner
    from astrodask.engine.specs import resolve_models
    from astrodask.models.unet import load_unet
    from astrodask.morphology.windows import classify_tile

    mosaic = astrodask.open_mosaic(mosaic_path)
    model, _ = load_unet("morpheus")
    spec = resolve_models(["morpheus"], mosaic.bands)[0]
    # the window the engine's runner reads: widened to the fast mode's context, or not
    margin = UnetRunner.context_margin(spec, UnetOptions(), mosaic.tile_grid) if widen else 0
    # warm-up, as the engine's with warm_up=True
    classify_tile(model, mosaic.read_window(*tiles[0], margin).data)
    queue.put("ready")
    go.wait()  # an Event, not the queue: the worker could read back its own "ready"
    start = time.perf_counter()
    for iy, ix in tiles:
        classify_tile(model, mosaic.read_window(iy, ix, margin).data)
    queue.put(time.perf_counter() - start)


def bare_loop(mosaic_path, tiles, processes, widen=True):
    """Seconds for ``processes`` plain processes to run the model over ``tiles``.

    ``widen``: each window widened as the engine widens it for the fast mode's
    context (:meth:`UnetRunner.context_margin`); otherwise the halo'd window alone.
    """
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue() for _ in range(processes)]
    go = ctx.Event()
    shares = [tiles[i::processes] for i in range(processes)]
    procs = [ctx.Process(target=_bare_worker, args=((str(mosaic_path), share, q, go, widen),))
             for share, q in zip(shares, queues)]
    for p in procs:
        p.start()
    for q in queues:
        assert q.get() == "ready"
    start = time.perf_counter()
    go.set()
    for q in queues:
        q.get()
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return elapsed


def engine(mosaic_path, out, workers, batch_size):
    """(compute seconds, peak RSS MiB per worker) of ``astrodask.run`` on a fresh cluster.

    The cluster is the one ``astrodask run`` starts (``engine.cluster.connect``).
    """
    import resource

    import astrodask
    from astrodask.engine.cluster import connect
    from astrodask.engine.run import resolve_config

    if out.exists():
        shutil.rmtree(out)
    # warmed up as the bare loop is: the compute phase holds no graph tracing
    config = resolve_config(models=["morpheus"], n_workers=workers, threads_per_worker=1,
                            batch_size=batch_size, warm_up=True)
    with connect(config) as (client, _):
        summary = astrodask.run(mosaic_path, out, config=config, client=client)
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return summary.seconds, max(peaks.values()), summary.tiles_run


def make_mosaics(workdir, size, seed):
    """Simulate one ``size``² hst field; derive a (size/2)² crop and a (2 size)² 2x2 mosaic."""
    from astropy.io import fits

    import astrodask

    field = workdir / "field"
    if not (field / "simulation.json").exists():
        astrodask.simulate(field, size=(size, size), preset="hst", seed=seed, overwrite=True)
    bands = ["v", "z", "j", "h"]
    stores = {}
    for label, factor in (("main", 1), ("small", 0.5), ("large", 2)):
        folder = workdir / label
        folder.mkdir(exist_ok=True)
        paths = []
        for band in bands:
            with fits.open(field / f"{band}.fits") as hdul:
                data, header = hdul[0].data, hdul[0].header
                if factor < 1:
                    data = data[: size // 2, : size // 2]
                elif factor > 1:
                    data = np.tile(data, (2, 2))
                path = folder / f"{band}.fits"
                fits.writeto(path, np.ascontiguousarray(data), header, overwrite=True)
                paths.append(path)
        store = folder / "mosaic.zarr"
        if not store.exists():
            astrodask.ingest(paths, store)
        stores[label] = store
    return stores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the main mosaic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tiles per task (default: the engine's, 1 for a U-Net run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/engine"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    stores = make_mosaics(args.workdir, args.size, args.seed)

    import astrodask

    mosaic = astrodask.open_mosaic(stores["main"])
    tiles = mosaic.tile_grid.indices()
    print(f"mosaic {args.size}x{args.size} (hst v,z,j,h): {len(tiles)} windows of 512")

    bare = bare_loop(stores["main"], tiles, args.workers)
    halo_only = bare_loop(stores["main"], tiles, args.workers, widen=False)
    many, _, n = engine(stores["main"], args.workdir / "res-many", args.workers, args.batch_size)
    one, _, _ = engine(stores["main"], args.workdir / "res-one", 1, args.batch_size)
    _, small_peak, _ = engine(stores["small"], args.workdir / "res-small", args.workers,
                              args.batch_size)
    _, large_peak, _ = engine(stores["large"], args.workdir / "res-large", args.workers,
                              args.batch_size)
    print(f"bare model, {args.workers} processes: {bare:7.1f} s  {len(tiles) / bare:6.2f} tiles/s")
    print(f"  the same on the halo'd windows alone (no context read beyond the halo): "
          f"{halo_only:7.1f} s; widened / halo'd time {bare / halo_only:.2f}")
    print(f"engine, {args.workers} workers:       {many:7.1f} s  {n / many:6.2f} tiles/s")
    print(f"engine, 1 worker:          {one:7.1f} s  {n / one:6.2f} tiles/s")
    small_side, large_side = args.size // 2, args.size * 2
    print(f"peak RSS per worker: {small_side}^2 {small_peak:.0f} MiB, {large_side}^2 "
          f"{large_peak:.0f} MiB")
    ratios = {
        "engine / bare throughput (target >= 0.85)": (bare / many, bare / many >= 0.85),
        f"{args.workers} workers / 1 worker speed-up (target >= 1.7)": (one / many,
                                                                         one / many >= 1.7),
        "peak RSS per worker large / small (target <= 1.10)": (large_peak / small_peak,
                                                               large_peak / small_peak <= 1.10),
    }
    for label, (value, ok) in ratios.items():
        print(f"{label}: {value:.3f} {'OK' if ok else 'MISSED'}")
    return 0 if all(ok for _, ok in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
