"""Merge and run on an object store with request latency: one request at a time against together.

On S3 or GCS each request costs tens of milliseconds whatever its size.
A merge task reads a few dozen small files (its neighbours' pieces,
objects, ID lists and sums); a run task reads its batch's windows and
writes their outputs and done markers. One after the other, the waits, not
the CPU, set the speed (BENCHMARKS.md, "On paper: 50,000 windows").
``astrodask.storage.get_many`` and ``put_many`` put a task's reads and
writes in flight together on fsspec's asynchronous filesystems (s3fs,
gcsfs, HTTP), and ``map_requests`` a run batch's Zarr reads and writes.

This benchmark keeps the stores on ``latency://``, an in-memory
asynchronous filesystem (defined here) that waits ``--latency-ms`` before
answering each request and counts the requests and how many were in
flight at once. The mosaic is the model-free field of ``merge_scale.py``
(Gaussian blobs, every window "detecting" their truth masks).

- Merge: the same results are merged ``--repeats`` times each way,
  alternating, on a threads-only local cluster (the store lives in this
  process), with ``get_many``, ``put_many`` and ``map_requests`` as shipped and replaced by
  loops of single requests. Prints the median seconds, their ratio, the
  requests per window by kind, the most requests in flight at once, and
  whether the catalogs are byte-identical.
- Run: the mosaic ingested onto ``latency://``; a Mask R-CNN task's and a
  U-Net task's requests per batch of ``--batch-size`` windows, without the
  models (:func:`run_io`), as the engine makes them and one after the
  other, on one thread. Prints seconds per window and their ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/store_latency.py [--windows 64] [--tile 64]
        [--halo 8] [--latency-ms 20] [--repeats 3] [--workers 2] [--batch-size 4]
"""

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import statistics
import tempfile
import threading
import time
from pathlib import Path

import fsspec
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.implementations.memory import MemoryFileSystem

PROTOCOL = "latency"


class _Requests:
    """Counts of the requests a :class:`SlowMemoryFileSystem` served."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = threading.local()
        self.reset()

    def reset(self):
        with self.lock:
            self.by_kind = collections.Counter()
            self.in_flight, self.most_in_flight = 0, 0

    @contextlib.contextmanager
    def __call__(self, kind, latency):
        """One request of ``kind`` (get, put, info, list, delete) taking ``latency`` s;
        the calls a request makes inside it are part of it."""
        if getattr(self.inside, "value", False):
            yield
            return
        with self.lock:
            self.in_flight += 1
            self.by_kind[kind] += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.inside.value = True
        try:
            time.sleep(latency)
            yield
        finally:
            self.inside.value = False
            with self.lock:
                self.in_flight -= 1


    @contextlib.asynccontextmanager
    async def waiting(self, kind, latency):
        """The same as a request made on an event loop."""
        with self.lock:
            self.in_flight += 1
            self.by_kind[kind] += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(latency)
            yield
        finally:
            with self.lock:
                self.in_flight -= 1


class SlowMemoryFileSystem(MemoryFileSystem):
    """An in-memory filesystem (``latency://``) whose every request waits ``latency`` seconds."""

    protocol = (PROTOCOL,)
    store = {}
    pseudo_dirs = [""]
    latency = 0.02
    requests = _Requests()

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(str(path).removeprefix(f"{PROTOCOL}://"))

    def cat_file(self, path, start=None, end=None, **kwargs):
        with self.requests("get", self.latency):
            return super().cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path, value, **kwargs):
        with self.requests("put", self.latency):
            return super().pipe_file(path, value, **kwargs)

    def info(self, path, **kwargs):
        with self.requests("info", self.latency):
            return super().info(path, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        with self.requests("list", self.latency):
            return super().ls(path, detail=detail, **kwargs)

    def rm(self, path, recursive=False, maxdepth=None):
        # one bulk request, as s3fs deletes up to 1,000 keys per request
        with self.requests("delete", self.latency):
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def rm_file(self, path):
        with self.requests("delete", self.latency):
            return super().rm_file(path)


class LatencyFileSystem(AsyncFileSystemWrapper):
    """:class:`SlowMemoryFileSystem` as fsspec's asynchronous filesystems are (s3fs, gcsfs)."""

    protocol = (PROTOCOL,)

    def __init__(self, *args, **kwargs):
        super().__init__(SlowMemoryFileSystem(), **kwargs)
        # The wrapper runs every sync method in a thread of its own, batch ones too (a loop
        # of requests); take fsspec's asynchronous batch methods and this class's GET and
        # PUT instead, as s3fs has them.
        for name in ("_cat", "_cat_ranges", "_pipe", "_cat_file", "_pipe_file"):
            self.__dict__.pop(name, None)

    # GETs and PUTs wait on the event loop, as aiohttp's requests do, not in a thread each
    async def _cat_file(self, path, start=None, end=None, **kwargs):
        async with self.sync_fs.requests.waiting("get", self.sync_fs.latency):
            return MemoryFileSystem.cat_file(self.sync_fs, path, start=start, end=end, **kwargs)

    async def _pipe_file(self, path, value, **kwargs):
        async with self.sync_fs.requests.waiting("put", self.sync_fs.latency):
            return MemoryFileSystem.pipe_file(self.sync_fs, path, value, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        return self.sync_fs._open(path, mode=mode, **kwargs)


def register(latency=0.02):
    """Make ``latency://`` URLs open :class:`LatencyFileSystem` in this process."""
    SlowMemoryFileSystem.latency = latency
    fsspec.register_implementation(PROTOCOL, LatencyFileSystem, clobber=True)
    return SlowMemoryFileSystem.requests


def _merge_scale():
    spec = importlib.util.spec_from_file_location(
        "merge_scale", Path(__file__).resolve().parent / "merge_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _get_one_at_a_time(locations):
    from astrodask import storage

    out = []
    for location in locations:
        try:
            out.append(storage.get_bytes(location))
        except FileNotFoundError:
            out.append(None)
    return out


def _put_one_at_a_time(contents):
    from astrodask import storage

    for location, data in contents.items():
        storage.put_bytes(location, data)


def _map_one_at_a_time(location, function, items):
    return [function(item) for item in items]


@contextlib.contextmanager
def one_at_a_time():
    """``get_many``, ``put_many`` and ``map_requests`` replaced by loops of single requests."""
    from unittest import mock

    from astrodask import storage

    with mock.patch.object(storage, "get_many", _get_one_at_a_time), \
            mock.patch.object(storage, "put_many", _put_one_at_a_time), \
            mock.patch.object(storage, "map_requests", _map_one_at_a_time):
        yield


def catalog_bytes(catalog):
    """The bytes of every part of a merged catalog, in order."""
    from astrodask import storage

    return [storage.get_bytes(storage.join(catalog, name)) for name in storage.listdir(catalog)]


def timed_merge(results, client, sequential):
    """Seconds of one merge of ``results``, with a task's requests one at a time or together."""
    from astrodask.merging.products import MergeOptions
    from astrodask.merging.run import merge

    with one_at_a_time() if sequential else contextlib.nullcontext():
        start = time.perf_counter()
        merge(results, client=client, options=MergeOptions(pictures=False))
        return time.perf_counter() - start


def run_io(mosaic, results, batch_size, together, kind):
    """Seconds the engine spends on a run's requests, the model left out.

    Per batch of windows, as a Mask R-CNN task does (``kind`` "maskrcnn":
    each window's chunk read, its instances part written, the bytes already
    in ``results``) or a U-Net's (``kind`` "unet": each window read with a
    margin of one halo beyond it, five class maps of its core written to
    ``unet.zarr``), then the done markers: either as the engine does
    (:class:`~astrodask.engine.runners.BatchWindows`, ``put_many``,
    ``map_requests``, ``Results.mark_done``) or one request after the other.
    """
    import numpy as np
    import zarr

    from astrodask import storage
    from astrodask.engine.results import Results
    from astrodask.engine.runners import BatchWindows

    results = Results(results)
    grid = mosaic.tile_grid
    windows = list(grid.indices())
    margin = grid.halo if kind == "unet" else 0
    if kind == "unet":
        classes = ["background", "spheroid", "disk", "irregular", "point_source"]
        results.create_unet_arrays(grid, classes, ["mean"], {})
        maps = zarr.open_group(results.unet_store, mode="r+")["mean"]
        core = np.full((len(classes), grid.core, grid.core), 0.2, np.float32)
    else:
        parts = dict(zip(windows, storage.get_many([results.instances_path(*w)
                                                    for w in windows])))

    def write(window):
        if kind == "unet":
            ys, xs = mosaic.core_slices(*window)
            maps[:, ys, xs] = core[:, :ys.stop - ys.start, :xs.stop - xs.start]
        else:
            storage.put_bytes(results.instances_path(*window), parts[window])

    start = time.perf_counter()
    for k in range(0, len(windows), batch_size):
        batch = windows[k:k + batch_size]
        if together:
            BatchWindows(mosaic, batch).tiles(margin)
            if kind == "unet":
                storage.map_requests(results.location, write, batch)
            else:
                storage.put_many({results.instances_path(*w): parts[w] for w in batch})
            results.mark_done(batch, {"models": [kind]})
        else:
            with one_at_a_time():
                for window in batch:
                    mosaic.read_window(*window, margin) if margin else mosaic.read_tile(*window)
                for window in batch:
                    write(window)
                for window in batch:
                    results.mark_done([window], {"models": [kind]})
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=64, help="windows (a square number)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=8)
    parser.add_argument("--density", type=float, default=0.004)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker threads of the merge")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per run task")
    args = parser.parse_args(argv)

    import numpy as np
    from distributed import Client, LocalCluster

    import astrodask
    from astrodask import storage

    side = int(round(np.sqrt(args.windows))) * (args.tile - 2 * args.halo)
    requests = register(args.latency_ms / 1000)
    scale = _merge_scale()
    with tempfile.TemporaryDirectory() as tmp:
        paths, truth = scale.write_field(Path(tmp), side, args.density)
        mosaic = astrodask.ingest(paths, Path(tmp) / "m.zarr", tile=args.tile, halo=args.halo)
        n_windows = int(np.prod(mosaic.tile_grid.shape))
        results = f"{PROTOCOL}://store-latency/results"
        scale.fake_results(mosaic, truth, results)
        keep = storage.listdir(results)
        seconds = {"one at a time": [], "together": []}
        catalogs, kinds, most = {}, {}, {}
        with LocalCluster(n_workers=1, threads_per_worker=args.workers, processes=False,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            for repeat in range(args.repeats):
                for name in (("one at a time", "together") if repeat % 2 == 0
                             else ("together", "one at a time")):
                    for entry in storage.listdir(results):
                        if entry not in keep:  # the previous merge's outputs
                            storage.remove(storage.join(results, entry))
                    requests.reset()
                    seconds[name].append(timed_merge(results, client, name == "one at a time"))
                    kinds[name], most[name] = dict(requests.by_kind), requests.most_in_flight
                    catalogs[name] = catalog_bytes(f"{results}/catalog.parquet")
            objects = astrodask.read_catalog(f"{results}/catalog.parquet").num_rows
        remote = astrodask.ingest(paths, f"{PROTOCOL}://store-latency/m.zarr", tile=args.tile,
                                  halo=args.halo)
        run_seconds = {(kind, name): [] for kind in ("maskrcnn", "unet")
                       for name in ("one at a time", "together")}
        for repeat in range(args.repeats):
            for kind in ("maskrcnn", "unet"):
                for name in (("one at a time", "together") if repeat % 2 == 0
                             else ("together", "one at a time")):
                    run_seconds[kind, name].append(run_io(remote, results, args.batch_size,
                                                          name == "together", kind))
    print(f"{n_windows} windows of {args.tile} px (halo {args.halo}), {args.latency_ms:g} ms "
          f"per request, {args.workers} worker threads, median of {args.repeats}")
    names = ("get", "put", "info", "list", "delete")
    print("| requests of a task | merge s | s/window | requests per window: " + ", ".join(names)
          + " | most requests in flight |")
    print("| --- | ---: | ---: | --- | ---: |")
    for name in seconds:
        median = statistics.median(seconds[name])
        per_window = ", ".join(f"{kinds[name].get(k, 0) / n_windows:.1f}" for k in names)
        print(f"| {name} | {median:.2f} | {median / n_windows:.3f} | {per_window} | "
              f"{most[name]} |")
    ratio = statistics.median(seconds["one at a time"]) / statistics.median(seconds["together"])
    print(f"one at a time / together: {ratio:.2f}x")
    print(f"catalogs byte-identical: {catalogs['one at a time'] == catalogs['together']} "
          f"({objects} objects)")
    print(f"\nrun (mosaic and results on latency://), the model left out, one thread, batches "
          f"of {args.batch_size} windows")
    print("| task | requests of a batch | s/window | one at a time / together |")
    print("| --- | --- | ---: | ---: |")
    for kind in ("maskrcnn", "unet"):
        medians = {name: statistics.median(run_seconds[kind, name])
                   for name in ("one at a time", "together")}
        for name, median in medians.items():
            ratio = medians["one at a time"] / medians["together"]
            print(f"| {kind} | {name} | {median / n_windows:.3f} | "
                  f"{f'{ratio:.2f}x' if name == 'together' else ''} |")

if __name__ == "__main__":
    main()
