"""``astrodask.merge``: per-window model outputs → catalog, segmentation map, pictures, on Dask.

The merge runs as tasks on a Dask cluster (the run's kind: an embedded
``LocalCluster`` by default, or an existing one): see
:mod:`astrodask.merging.tasks` for the stages. Workers read their inputs
from storage and write their outputs into ``RESULTS/merge.work``; the client
holds a few small values per window (counts, the records of objects that
span many windows). Each finished task leaves a done marker, so a merge
that was stopped continues where it stopped. The products appear in the
results folder only when everything is written.

The result is the same, byte for byte, as :func:`astrodask.merging.single.merge_in_process`
(the single-process reference) and whatever the number of workers.
"""

from collections import Counter
from contextlib import contextmanager
import json
import math
import os
import time
import uuid

from .. import storage
from ..engine.results import Results
from ..errors import AstrodaskError
from ..hashing import json_sha256
from .products import (MergeOptions, MergeSummary, open_unet, provenance, resolved_options,
                       summary_text, write_morphology_fits, write_pictures, write_segmap_fits)
from .single import read_finished_run, run_mosaic
from . import tasks as T

__all__ = ["merge", "MergeOptions", "MergeSummary", "summary_text", "MergeError"]

#: Merge tasks waiting on the scheduler at once: this many per worker thread, at least
#: MIN_IN_FLIGHT.
IN_FLIGHT_PER_THREAD = 8
MIN_IN_FLIGHT = 32

#: Windows per merge task: up to this many of a stage's windows run in one task, as long as
#: every worker thread still gets at least TASKS_PER_THREAD tasks of the stage. Fewer tasks
#: cost the client and the scheduler less (a few ms each), which bounds the speed-up on
#: small windows.
MAX_BATCH = 8
TASKS_PER_THREAD = 16

#: The work folder inside the results folder (removed after a successful merge).
WORK_DIR = "merge.work"

#: Windows per catalog part: blocks of whole window rows holding about this many windows.
#: A mosaic of up to this many windows gets a catalog of one part.
BLOCK_WINDOWS = 256


#: The stages, in order (see :mod:`astrodask.merging.tasks`).
STAGES = ("pieces", "resolve", "large", "assemble", "visible", "painted", "order", "paint",
          "families", "catalog")


class MergeError(AstrodaskError):
    """A merge task failed on the cluster or a worker kept dying."""


def merge(results, *, mosaic=None, options=None, client=None, n_workers=None,
          threads_per_worker=None, scheduler=None, scheduler_file=None, progress=None):
    """Merge a finished run into a catalog and maps, as Dask tasks.

    Parameters
    ----------
    results : str or Path
        Results folder (local path or fsspec URL) of a complete ``astrodask run``.
    mosaic : Mosaic or path, optional
        The mosaic (default: the one recorded in ``run.json``).
    options : MergeOptions, optional
    client : distributed.Client, optional
        Run on this client's cluster. Otherwise on ``scheduler`` /
        ``scheduler_file`` if given, else on a ``LocalCluster`` started as
        ``astrodask run`` starts one (``n_workers`` x ``threads_per_worker``,
        default one single-threaded worker per core); for a ``memory://``
        results folder, which only this process sees, on threads.
    progress : callable, optional
        ``progress(done_tasks, total_tasks)``; the total grows once the
        number of objects that span many windows is known.

    Returns
    -------
    MergeSummary
        With ``residual`` set when the residual pass ran after the merge
        (``options.residual_pass``, else the Mask R-CNN card's choice; see
        :func:`astrodask.residual_pass`).

    Notes
    -----
    ``catalog.parquet`` is a Parquet dataset: a folder of ``part-NNNNN.parquet``
    files (one per block of window rows, :data:`BLOCK_WINDOWS` windows each;
    rows in ID order across parts) with ``_metadata`` and
    ``_common_metadata``. pandas, pyarrow, dask.dataframe, DuckDB and
    :func:`astrodask.read_catalog` read it as one table.

    Examples
    --------
    The results of the example of :func:`astrodask.run`:

    >>> import astrodask
    >>> from distributed import Client
    >>> with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
    ...     summary = astrodask.merge("results", client=client)
    >>> summary.n_objects > 0, sorted(summary.files)[:3]
    (True, ['catalog', 'colour_png', 'morphology_fits'])
    """
    options = options or MergeOptions()
    results = Results(results)
    record = read_finished_run(results)
    mosaic = run_mosaic(record, mosaic)
    kinds = {m["kind"] for m in record["models"]}
    work = results.file(WORK_DIR)
    applied = resolved_options(record, options)
    min_score = applied.min_score
    ctx = T.Context(results=results.location, work=work, mosaic=mosaic.path,
                    mosaic_token=mosaic.token,
                    grid=mosaic.tile_grid, options=dict(applied.__dict__),
                    morpheus="maskrcnn" not in kinds, unet="unet" in kinds)
    _prepare_work(ctx, record)
    seconds = {}
    start = time.perf_counter()
    # The cluster stays up until the residual pass, which runs on it too: a
    # second cluster would cost its start-up.
    with cluster_for(client, results.location, n_workers, threads_per_worker, scheduler,
                     scheduler_file) as (cluster, description):
        plan = _Plan(ctx, cluster, progress)
        totals = plan.run(provenance(mosaic, record, applied))
        seconds["tasks"] = time.perf_counter() - start
        summary = _publish_products(ctx, results, mosaic, options, totals, seconds, cluster)
        storage.put_json(results.file("merge.json"),
                         {"options": applied.__dict__, "min_score_applied": min_score,
                          "n_objects": summary.n_objects,
                          "files": summary.files, "cluster": description,
                          "tasks": plan.submitted, "jobs": plan.jobs_run,
                          "windows": len(plan.windows),
                          "large_objects": plan.n_large, "stage_seconds": plan.stage_seconds})
        if applied.residual_pass:
            summary = _residual_pass(
                results, mosaic, applied, summary, cluster,
                None if progress is None else _ChainedProgress(progress, plan.done_tasks))
    return summary


def _publish_products(ctx, results, mosaic, options, totals, seconds, client):
    """Write the catalog, maps and pictures of the finished tasks; the merge's summary."""
    start = time.perf_counter()
    files = _publish(ctx, results, totals["n_objects"])
    segmap = files["segmap_zarr"]
    files["segmap_fits"] = write_segmap_fits(mosaic, segmap, results.file("segmap.fits"))
    unet = open_unet(results) if ctx.unet else None
    if unet is not None:
        files["morphology_fits"] = write_morphology_fits(mosaic, unet,
                                                         results.file("morphology.fits"))
    if options.pictures:
        files.update(write_pictures(mosaic, segmap, catalog_classes(files["catalog"]), unet,
                                    results, client))
    seconds["write"] = time.perf_counter() - start
    storage.remove(ctx.work)

    summary = MergeSummary(results=results.location, n_objects=totals["n_objects"],
                           by_class=totals["by_class"], by_morphology=totals["by_morphology"],
                           by_morphology_bright=totals["by_morphology_bright"],
                           files={k: str(v) for k, v in files.items()}, seconds=seconds)
    summary.files["summary"] = results.file("summary.txt")
    storage.put_bytes(summary.files["summary"], summary_text(summary).encode())
    return summary


def _residual_pass(results, mosaic, applied, summary, client, progress):
    """Run the residual pass on the merged results; the summary with its additions."""
    from dataclasses import replace

    from ..residual_detection import ResidualOptions, residual_pass
    from .products import RESIDUAL_SETTINGS

    options = ResidualOptions(**{name: getattr(applied, field_name)
                                 for field_name, name in RESIDUAL_SETTINGS.items()})
    start = time.perf_counter()
    added = residual_pass(results.location, mosaic=mosaic, options=options, progress=progress,
                          client=client)
    seconds = dict(summary.seconds, residual_pass=time.perf_counter() - start)
    return replace(summary, n_objects=added.n_objects, residual=added, seconds=seconds)


class _ChainedProgress:
    """``progress(step, done, total)`` of the residual pass's steps, reported to the merge's
    ``progress(done, total)`` as a continuation of its count: each step's tasks are added to
    the total when the step starts, so the count climbs on from where the merge ended."""

    def __init__(self, progress, done):
        self.progress, self.base, self.step, self.step_total = progress, done, None, 0

    def __call__(self, step, done, total):
        if step != self.step:
            self.base += self.step_total
            self.step = step
        self.step_total = total
        self.progress(self.base + done, self.base + total)


@contextmanager
def cluster_for(client, location, n_workers, threads_per_worker, scheduler, scheduler_file):
    """``(client, description)`` of the cluster a merge runs on, as a context manager.

    ``client`` if given; threads in this process for ``memory://`` results;
    else the cluster ``astrodask run`` would use (started and closed here,
    or joined through ``scheduler`` / ``scheduler_file``).
    """
    if client is not None:
        yield client, "given client"
        return
    if location.startswith("memory://"):
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=threads_per_worker or 2,
                          processes=False, dashboard_address=":0") as cluster, \
                Client(cluster) as local:
            yield local, "threads in this process (memory:// results)"
        return
    from ..config import RunConfig
    from ..engine.cluster import connect

    config = RunConfig(n_workers=n_workers, threads_per_worker=threads_per_worker,
                       scheduler=scheduler, scheduler_file=scheduler_file).validate()
    with connect(config) as (started, description):
        yield started, description


#: Bumped when the work folder's files change meaning, so that an interrupted merge of an
#: older version starts afresh instead of reading them (2: the ``painted`` stage).
WORK_LAYOUT = 2


def _work_key(ctx, record):
    identity = {"run": record, "options": ctx.options, "mosaic": ctx.mosaic,
                "mosaic_token": ctx.mosaic_token,
                "grid": ctx.grid.to_dict(), "block_windows": BLOCK_WINDOWS,
                "layout": WORK_LAYOUT}
    return json_sha256(identity)


def _prepare_work(ctx, record):
    """Re-use the work folder of an interrupted merge of the same inputs, else start afresh."""
    import zarr
    from zarr.codecs import BloscCodec

    key = _work_key(ctx, record)
    marker = ctx.path("merge.json")
    try:
        previous = json.loads(storage.get_bytes(marker)).get("key")
    except FileNotFoundError:
        previous = None
    if previous != key:
        storage.remove(ctx.work)
        storage.makedirs(ctx.work)
        grid = ctx.grid
        group = zarr.open_group(ctx.path("segmap.zarr"), mode="w", zarr_format=3)
        group.create_array(
            "labels", shape=(grid.height, grid.width), chunks=(grid.core, grid.core),
            dtype="int32", fill_value=0,
            compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
            dimension_names=("y", "x"))
        storage.put_json(marker, {"key": key})
    for folder in ("pieces", "objects", "candidates", "visible", "painted", "blocks", "sums", "edges",
                   "catalog", *(storage.join("done", stage) for stage in STAGES)):
        storage.makedirs(ctx.path(folder))


def _run_batch(stage, function, ctx, batch):
    """Run the ``(name, args)`` jobs of one task in turn, then leave their done markers
    (each holding its job's small result) together; ``{name: value}``."""
    values = {name: getattr(T, function)(ctx, *args) for name, args in batch}
    storage.put_many({ctx.path("done", stage, name + ".json"): storage.json_bytes({"value": value})
                      for name, value in values.items()})
    return values


class _Plan:
    """The stages, submitted one after the other; each skips its tasks that are done."""

    def __init__(self, ctx, client, progress):
        self.ctx, self.client, self.progress = ctx, client, progress
        self.grid = ctx.grid
        self.windows = self.grid.indices()
        self.submitted = 0  # Dask tasks
        self.jobs_run = 0  # windows, blocks and global steps they ran
        self.stage_seconds = {}
        self.done_tasks = 0
        self.token = uuid.uuid4().hex[:8]
        threads = sum(client.nthreads().values()) if hasattr(client, "nthreads") else 1
        self.threads = max(threads, 1)
        self.in_flight = max(IN_FLIGHT_PER_THREAD * threads, MIN_IN_FLIGHT)
        ny, nx = self.grid.shape
        self.rows_per_block = max(1, math.ceil(BLOCK_WINDOWS / nx))
        self.n_blocks = math.ceil(ny / self.rows_per_block)
        n = len(self.windows)
        # one task per window in each of resolve, visible, painted and paint (and pieces when
        # staged), one per block in order and catalog, plus large and families; run() adds
        # the assemble tasks once the large objects are known
        self.total = (n if ctx.staged_pieces else 0) + 4 * n + 2 * self.n_blocks + 2

    def _tick(self, k=1):
        self.done_tasks += k
        if self.progress is not None:
            self.progress(self.done_tasks, self.total)

    def stage(self, stage, function, jobs):
        """Run ``{name: args}`` jobs of one stage; return ``{name: value}``."""
        from ..engine.cluster import completed

        start = time.perf_counter()
        finished = [entry.removesuffix(".json")
                    for entry in storage.listdir(self.ctx.path("done", stage))]
        finished = [name for name in finished if name in jobs]
        markers = storage.get_many([self.ctx.path("done", stage, name + ".json")
                                    for name in finished])  # together: a resumed merge
        values = {name: json.loads(data)["value"] for name, data in zip(finished, markers)}
        self._tick(len(values))
        todo = [name for name in jobs if name not in values]
        size = max(1, min(MAX_BATCH, len(todo) // (TASKS_PER_THREAD * self.threads)))
        batches = iter([todo[i:i + size] for i in range(0, len(todo), size)])
        futures = {}
        # results come with their futures, gathered in batches, not one round trip each
        queue = completed(self.client, with_results=True, raise_errors=False)

        def submit_next():
            batch = next(batches, None)
            if batch is not None:
                future = self.client.submit(_run_batch, stage, function, self.ctx,
                                            [(name, jobs[name]) for name in batch], pure=False,
                                            retries=1,
                                            key=f"astrodask-merge-{stage}-{batch[0]}-{self.token}")
                futures[future] = batch
                queue.add(future)
                self.submitted += 1
                self.jobs_run += len(batch)

        # At most a few tasks per worker thread wait on the scheduler, so the client's
        # memory follows the cluster's size, not the mosaic's.
        for _ in range(self.in_flight):
            submit_next()
        try:
            for future, value in queue:
                batch = futures.pop(future)
                if future.status != "finished":
                    value = _result(future, stage, batch[0])
                values.update(value)
                self._tick(len(batch))
                submit_next()
        except BaseException:
            self.client.cancel(list(futures))
            raise
        self.stage_seconds[stage] = round(time.perf_counter() - start, 3)
        return values

    def run(self, meta):
        ctx, grid = self.ctx, self.grid
        ny, nx = grid.shape
        d = T.spread(grid)
        names = {w: T.tile_name(*w) for w in self.windows}
        if ctx.staged_pieces:
            self.stage("pieces", "pieces_task", {names[w]: w for w in self.windows})
        resolved = self.stage("resolve", "resolve_task", {names[w]: w for w in self.windows})
        reported = [w for w in self.windows if resolved[names[w]]["candidates"]]
        large = self.stage("large", "large_task", {"all": (reported,)})["all"]
        self.n_large = len(large)
        by_owner = {}
        for record in large:
            by_owner.setdefault(T.window_of_uid(grid, record["uid"]), []).append(record)
        self.total += len(by_owner)
        assembled = self.stage("assemble", "assemble_task",
                               {names[w]: (*w, plan) for w, plan in sorted(by_owner.items())})
        # Large objects (few): file, box and anchor row, to send each task what it needs.
        large_objects = [(f"large-{name[len('tile-'):]}", o) for name, objs in
                         sorted(assembled.items()) for o in objs]

        def large_meeting(cy, cx):
            found = set()
            for file, o in large_objects:
                y0, x0, y1, x1 = o["box"]
                ys, xs = grid.core_slices(cy, cx)
                if y0 <= ys.stop and y1 >= ys.start and x0 <= xs.stop and x1 >= xs.start:
                    found.add(file)
            return sorted(found)

        chunk_large = {w: large_meeting(*w) for w in self.windows} if large_objects else {}
        self.stage("visible", "visible_task",
                   {names[w]: (*w, chunk_large.get(w, [])) for w in self.windows})
        self.stage("painted", "painted_task",
                   {names[w]: (*w, chunk_large.get(w, [])) for w in self.windows})

        blocks = {}
        for b in range(self.n_blocks):
            r0 = b * self.rows_per_block
            r1 = min(r0 + self.rows_per_block, ny)
            lo, hi = max(r0 - 2 * d, 0), min(r1 - 1 + 2 * d, ny - 1)
            files = set()
            for file, o in large_objects:
                if r0 <= o["anchor_y"] // grid.core < r1:
                    files.add(file)
                    lo = min(lo, o["box"][0] // grid.core)
                    hi = max(hi, (o["box"][2] - 1) // grid.core)
            blocks[b] = {"rows": (lo, hi), "large": sorted(files)}
        ordered = self.stage("order", "order_task",
                             {f"block-{b:05d}": (b, self.rows_per_block, v["rows"], v["large"])
                              for b, v in blocks.items()})
        first_ids, next_id = {}, 1
        for b in range(self.n_blocks):
            first_ids[b] = next_id
            next_id += ordered[f"block-{b:05d}"]["objects"]

        def blocks_for(cy, cx):
            rows = set(range(max(cy - 2 * d, 0), min(cy + 2 * d, ny - 1) + 1))
            for file, o in large_objects:
                if file in chunk_large.get((cy, cx), ()):
                    rows.add(o["anchor_y"] // grid.core)
            return [(b, first_ids[b]) for b in sorted({r // self.rows_per_block for r in rows})]

        painted = self.stage("paint", "paint_task",
                             {names[w]: (*w, chunk_large.get(w, []), blocks_for(*w))
                              for w in self.windows})
        touching = [w for w in self.windows if painted[names[w]]["edges"]]
        self.stage("families", "families_task", {"all": (touching,)})
        parts = self.stage("catalog", "catalog_task",
                           {f"part-{b:05d}": (b, first_ids[b], v["rows"], meta)
                            for b, v in blocks.items()})
        totals = {key: Counter() for key in ("by_class", "by_morphology",
                                             "by_morphology_bright")}
        for value in parts.values():
            for key, total in totals.items():
                total.update(value.get(key, {}))
        return {"n_objects": next_id - 1,
                **{key: dict(sorted(total.items())) for key, total in totals.items()}}


def _result(future, stage, name):
    from ..engine.cluster import task_result

    return task_result(future, MergeError,
                       f"workers kept dying in the merge ({stage} {name}; out of memory?); "
                       "finished tasks are kept: run the merge again to resume",
                       f"merge task {stage} {name}")


def _publish(ctx, results, n_objects):
    """Move the catalog parts and the segmentation map from the work folder into place."""
    import zarr

    from ..outputs.catalog import write_dataset_metadata

    parts = storage.join(ctx.work, "catalog")
    for folder in (parts, ctx.path("segmap.zarr")):
        drop_leftovers(folder)
    write_dataset_metadata(parts)
    catalog = results.file("catalog.parquet")
    move_folder(parts, catalog)
    group = zarr.open_group(ctx.path("segmap.zarr"), mode="r+")
    group.attrs["astrodask"] = {"kind": "segmap", "n_objects": n_objects}
    segmap = results.file("segmap.zarr")
    move_folder(ctx.path("segmap.zarr"), segmap)
    return {"catalog": catalog, "segmap_zarr": segmap}


def drop_leftovers(location):
    """Delete the temporaries that writers killed mid-write left in a local work folder.

    Files are written under a temporary name and renamed when whole (hidden
    ``.NAME.tmp-...`` by :func:`astrodask.storage.put_bytes`,
    ``NAME.HEX.partial`` by Zarr); a worker killed before the rename leaves
    its temporary behind. The task then ran again and wrote the file whole,
    so what is left is junk that must not be published. On an object store a
    file is one PUT: nothing is left, and nothing is listed.

    Parameters
    ----------
    location : str or Path
        A folder that no task writes into any more.
    """
    fs, path = storage.filesystem(location)
    if not storage.is_local(fs):
        return
    for folder, _, names in os.walk(path):
        for name in names:
            if name.startswith(".") or name.endswith(".partial"):
                os.remove(os.path.join(folder, name))


def move_folder(source, location):
    """Put a finished folder at ``location`` whole (a rename locally)."""
    fs, path = storage.filesystem(source)
    with storage.staged_folder(location) as target:
        _, target_path = storage.filesystem(target)
        fs.mv(path, target_path, recursive=True)


def catalog_classes(catalog):
    """``classes(ids)``: the ``class_id`` of the objects ``ids`` (sorted, unique) of a
    catalog, read part by part keeping only those rows (0 for an ID it lacks)."""
    import numpy as np

    from ..outputs.catalog import catalog_parts, read_catalog_part

    def classes(ids):
        ids = np.asarray(ids, dtype=np.int64)
        found = np.zeros(len(ids), dtype=np.int64)
        for part in catalog_parts(catalog):
            table = read_catalog_part(part, columns=["id", "class_id"])
            part_ids = table.column("id").to_numpy()
            if not len(part_ids):
                continue
            order = np.argsort(part_ids, kind="stable")
            at = np.minimum(np.searchsorted(part_ids[order], ids), len(part_ids) - 1)
            hit = part_ids[order][at] == ids
            found[hit] = table.column("class_id").to_numpy()[order][at[hit]]
        return found

    return classes
