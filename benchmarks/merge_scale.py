"""The merge on Dask at growing mosaic sizes, measured side by side in one run.

Model-free: a field of Gaussian blobs (one object density for every size)
is ingested with small windows, and every window "detects" the blobs' truth
masks clipped to it (as tests/test_merge.py does with the simulator's truth),
written as the engine writes Mask R-CNN parts. Each mosaic is then merged
with 1 and with 2 local workers, each merge in a fresh process so that peak
RSS is its own, with the Dask scheduler and workers in processes of their own.

Prints, per size: merge seconds per window with 1 and 2 workers, the speed-up,
peak RSS of the client and of each worker, scheduler tasks per window, and the
CPU seconds the client and scheduler spent beside the workers' (on a machine
with two cores they compete with the two workers). ``--repeats N`` merges N
times per worker count, alternating, and reports the median.
Bar (issue 19): client peak RSS grows <= 20% from 64 to 1,024 windows;
per-worker peak RSS flat (<= 10%); 2 workers >= 1.7x one on 1,024 windows.

    PYTHONPATH=. .venv/bin/python benchmarks/merge_scale.py [--windows 16,64,256,1024]
        [--tile 64] [--halo 8] [--density 0.004] [--repeats 1] [--out /tmp/merge-scale]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_field(folder, side, density, seed=0):
    """g, r, z FITS of Gaussian blobs (TAN WCS) and the truth masks of the blobs."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(seed)
    n = int(density * side * side)
    image = np.zeros((side, side))
    truth = []
    for k in range(n):
        y, x = rng.uniform(0, side, 2)
        sigma = rng.uniform(1.0, 4.0)
        flux = rng.uniform(5, 200)
        r = int(np.ceil(3 * sigma))
        y0, x0 = max(int(y) - r, 0), max(int(x) - r, 0)
        y1, x1 = min(int(y) + r + 1, side), min(int(x) + r + 1, side)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        blob = flux / (2 * np.pi * sigma ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2)
                                                       / (2 * sigma ** 2))
        image[y0:y1, x0:x1] += blob
        mask = blob > 0.05 * blob.max()
        if mask.any():
            truth.append(((y0, x0, y1, x1), mask, 1 + (k % 2)))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.1, -27.8]
    wcs.wcs.crpix = [side / 2, side / 2]
    wcs.wcs.cdelt = [-0.26 / 3600, 0.26 / 3600]
    paths = []
    for band, scale in zip("grz", (0.6, 1.0, 1.3)):
        data = (scale * image + rng.normal(scale=0.1, size=image.shape)).astype(np.float32)
        header = wcs.to_header()
        header["FILTER"] = band
        path = folder / f"{band}.fits"
        fits.writeto(path, data, header, overwrite=True)
        paths.append(path)
    return paths, truth


def fake_results(mosaic, truth, out):
    """Every window's Mask R-CNN part as a perfect detector would write it."""
    from astrodask import storage
    from astrodask.engine.results import Results, write_parquet
    from astrodask.instances import tile_instances
    from astrodask.mosaic import PADDING

    grid = mosaic.tile_grid
    results = Results(out)
    storage.makedirs(results.instances_dir)
    t = grid.tile
    boxes = np.array([b for b, _, _ in truth]).reshape(-1, 4)
    for iy, ix in grid.indices():
        tile = mosaic.read_tile(iy, ix)
        wy, wx = tile.origin
        near = np.flatnonzero((boxes[:, 0] < wy + t) & (boxes[:, 2] > wy)
                              & (boxes[:, 1] < wx + t) & (boxes[:, 3] > wx))
        masks, classes = [], []
        for k in near:
            (y0, x0, y1, x1), mask, class_id = truth[k]
            canvas = np.zeros((t, t), bool)
            sy0, sx0, sy1, sx1 = max(y0, wy), max(x0, wx), min(y1, wy + t), min(x1, wx + t)
            canvas[sy0 - wy:sy1 - wy, sx0 - wx:sx1 - wx] = \
                mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
            masks.append(canvas)
            classes.append(class_id)
        stack = np.array(masks).reshape(-1, t, t)
        brightness = np.where((tile.mask & PADDING).any(axis=0), 0.0, tile.data.sum(axis=0))
        write_parquet(tile_instances(tile, grid, stack, classes, np.ones(len(masks), np.float32),
                                     brightness), results.instances_path(iy, ix))
    storage.put_json(results.file("run.json"), {
        "complete": True, "mosaic": str(mosaic.path), "config": {},
        "models": [{"kind": "maskrcnn", "name": "truth", "card": {}, "path": ""}]})


def peak_rss_mb():
    """This process's peak resident memory (MB) since it started its program.

    ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives
    ``execve``, so a child started by a large parent would report the parent's
    size (falls back to it off Linux).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_merge(results, workers):
    """Child process: merge ``results`` on a fresh cluster; print a JSON line.

    The scheduler and the workers run in processes of their own (``dask
    scheduler``, ``dask worker``), as on a real cluster, so the client's peak
    RSS is the client's alone (a ``LocalCluster`` would put the scheduler in
    this process).
    """
    import tempfile

    from distributed import Client

    from astrodask.engine.cluster import cluster_config
    from astrodask.merging.products import MergeOptions
    from astrodask.merging.run import merge

    env = dict(os.environ, **{"DASK_" + k.upper().replace(".", "__").replace("-", "_"):
                              str(v) for k, v in cluster_config().items() if v is not None})
    folder = tempfile.mkdtemp(prefix="merge-scale-")
    scheduler_file = os.path.join(folder, "scheduler.json")
    dask_bin = [sys.executable, "-m"]
    procs = [subprocess.Popen(dask_bin + ["distributed.cli.dask_scheduler",
                                              "--scheduler-file", scheduler_file, "--port", "0",
                                              "--dashboard-address", ":0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not os.path.exists(scheduler_file):
            time.sleep(0.1)
        procs.append(subprocess.Popen(dask_bin + [
            "distributed.cli.dask_worker", "--scheduler-file", scheduler_file,
            "--nworkers", str(workers), "--nthreads", "1", "--dashboard-address", ":0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(scheduler_file=scheduler_file) as client:
            client.wait_for_workers(workers, timeout=120)
            cpu = _cpu_seconds(client)
            start = time.perf_counter()
            summary = merge(results, client=client, options=MergeOptions(pictures=False))
            seconds = time.perf_counter() - start
            cpu = {k: v - cpu[k] for k, v in _cpu_seconds(client).items()}
            worker_rss = client.run(peak_rss_mb)
            scheduler_rss = client.run_on_scheduler(peak_rss_mb)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    record = json.loads((Path(results) / "merge.json").read_text())
    print(json.dumps({"seconds": seconds, "objects": summary.n_objects,
                      "tasks": record["tasks"], "windows": record["windows"],
                      "cpu_seconds": cpu,
                      "client_rss_mb": peak_rss_mb(), "scheduler_rss_mb": scheduler_rss,
                      "worker_rss_mb": sorted(worker_rss.values())}))


def _cpu_seconds(client):
    """CPU seconds used so far by this client process, the scheduler and the workers (summed)."""
    return {"client": time.process_time(),
            "scheduler": client.run_on_scheduler(time.process_time),
            "workers": sum(client.run(time.process_time).values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="16,64,256,1024")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=8)
    parser.add_argument("--density", type=float, default=0.004, help="blobs per pixel")
    parser.add_argument("--out", default="/tmp/merge-scale")
    parser.add_argument("--repeats", type=int, default=1,
                        help="merges per worker count, alternating 1, 2, 1, 2, ...; the "
                             "median time of each is reported (the machine is noisy)")
    parser.add_argument("--child", nargs=2, metavar=("RESULTS", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_merge(args.child[0], int(args.child[1]))
        return

    import astrodask

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    core = args.tile - 2 * args.halo
    rows = []
    for n in [int(v) for v in args.windows.split(",")]:
        side = int(round(np.sqrt(n))) * core
        folder = out / f"w{n}"
        folder.mkdir()
        paths, truth = write_field(folder, side, args.density)
        mosaic = astrodask.ingest(paths, folder / "m.zarr", bands=list("grz"), tile=args.tile,
                                  halo=args.halo, overwrite=True)
        fake_results(mosaic, truth, folder / "results")
        row = {"windows": len(mosaic.tile_grid), "side": side, "truth": len(truth)}
        runs = {1: [], 2: []}
        for _ in range(max(1, args.repeats)):
            for workers in (1, 2):
                target = folder / f"results-{workers}"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder / "results", target)
                done = subprocess.run([sys.executable, __file__, "--child", str(target),
                                       str(workers)], capture_output=True, text=True,
                                      env=dict(os.environ))
                if done.returncode:
                    sys.exit(done.stderr[-3000:])
                runs[workers].append(json.loads(done.stdout.strip().splitlines()[-1]))
        for workers, measured in runs.items():
            row[workers] = sorted(measured, key=lambda m: m["seconds"])[len(measured) // 2]
            row[f"seconds_{workers}"] = [round(m["seconds"], 2) for m in measured]
        same = all((folder / "results-1" / "catalog.parquet" / p.name).read_bytes()
                   == p.read_bytes() for p in (folder / "results-2" / "catalog.parquet").iterdir())
        row["identical"] = same
        rows.append(row)
        _print(rows)
    _bar(rows)


def _print(rows):
    print(f"\n{'windows':>8} {'objects':>8} {'s/win 1w':>9} {'s/win 2w':>9} {'2w/1w':>6} "
          f"{'client MB 1w/2w':>16} {'sched. MB':>9} {'worker MB 1w | 2w':>22} {'tasks/win':>9} "
          f"{'same':>5} {'CPU s 2w: client+sched. / workers':>34}")
    for r in rows:
        one, two = r[1], r[2]
        print(f"{r['windows']:8d} {one['objects']:8d} {one['seconds'] / r['windows']:9.4f} "
              f"{two['seconds'] / r['windows']:9.4f} {one['seconds'] / two['seconds']:6.2f} "
              f"{one['client_rss_mb']:7.0f}/{two['client_rss_mb']:<8.0f} "
              f"{two['scheduler_rss_mb']:9.0f} {one['worker_rss_mb'][0]:7.0f} | "
              f"{', '.join(f'{v:.0f}' for v in two['worker_rss_mb']):>12} "
              f"{one['tasks'] / r['windows']:9.2f} {str(r['identical']):>5} "
              f"{two['cpu_seconds']['client'] + two['cpu_seconds']['scheduler']:17.1f} / "
              f"{two['cpu_seconds']['workers']:<14.1f}")
        if len(r["seconds_1"]) > 1:
            print(f"{'':8} all runs (s): 1 worker {r['seconds_1']}, 2 workers {r['seconds_2']}")
    sys.stdout.flush()


def _bar(rows):
    by = {r["windows"]: r for r in rows}
    if 64 in by and 1024 in by:
        small, big = by[64], by[1024]
        client = max(big[w]["client_rss_mb"] / small[w]["client_rss_mb"] for w in (1, 2))
        worker = max(max(big[w]["worker_rss_mb"]) / max(small[w]["worker_rss_mb"])
                     for w in (1, 2))
        speed = big[1]["seconds"] / big[2]["seconds"]
        print(f"\nclient peak RSS 1024/64 windows: {client:.2f} (bar <= 1.20); "
              f"worker peak RSS 1024/64: {worker:.2f} (bar <= 1.10); "
              f"2 workers / 1 on 1024 windows: {speed:.2f}x (bar >= 1.7)")


if __name__ == "__main__":
    main()
