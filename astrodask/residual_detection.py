"""``astrodask.residual_pass``: a second detection pass over the residual of the bright objects.

A merged catalog misses faint sources that lie inside a bright galaxy's
segment: the detector saw one object there (the ``hst`` deep fields' main
loss, BENCHMARKS.md). This stage takes every catalog object with S/N at
least ``min_snr`` over all bands that the U-Net does not call irregular out
of each band by its symmetric template
(:mod:`astrodask.symmetric_residual`), writes the residual as a mosaic store
on the same grid, block by block (:func:`astrodask.ingestion.derive_mosaic`),
runs the same models over it and merges that run, both on the Dask cluster.
Each object of that second catalog whose position lies in one of those
segments, at least ``separation`` px from every first-pass object and
outside the core of the object whose segment holds it (``core_fraction``
of that object's radius ``sqrt(area / pi)``) is
added to the catalog and painted into the segmentation map:

- IDs continue after the first pass's, in the second catalog's order; the
  additions are the catalog's last Parquet parts (one per part of the second
  catalog that adds any).
- Their measurements (fluxes, shape, class, morphology) are those of the
  second pass, on the residual: the companion without the bright object's
  light. The bright object's own row is left as the first pass measured it.
- ``quality_flags`` gains bit 64 (``residual``) and bit 1 (``blended``);
  ``parent_id`` is the family of the object they were found in, whose
  ``family_size`` (the first pass's count) they repeat.
- Their segment is the second pass's, on pixels that the bright object held
  or that were sky.

Every step is tasks on the cluster, and none holds all the bright objects
or all the additions in one process: each task writes those of one catalog
part as a Parquet part in the work folder, and a task that needs the
objects meeting its block, or those with given IDs, reads only the parts
that can hold them (:class:`astrodask.outputs.object_parts.ObjectParts`).

The catalog, ``segmap.zarr``, ``segmap.fits`` and the pictures are
replaced whole; ``merge.json`` records the pass. Pixel coordinates are
0-based.
"""

from dataclasses import asdict, dataclass, field, replace
import json
import time

import numpy as np

from . import storage
from .classes import SOURCE_CLASSES
from .engine.results import Results
from .errors import AstrodaskError
from .measure import total_snr
from .merging.products import FLAGS
from .morphology.catalog import dominant_class
from .outputs.catalog import catalog_parts
from .outputs.object_parts import BOX as _BOX, ObjectParts, boxes_meet, write_object_part
from .symmetric_residual import TEMPLATE_SIGMA, residual_section

__all__ = ["ResidualOptions", "ResidualSummary", "residual_pass", "RESIDUAL_FLAG"]

#: ``quality_flags`` bit of the objects this pass adds.
RESIDUAL_FLAG = FLAGS["residual"]

#: Second-pass score cut by whether the 8 flips are fused (see ``ResidualOptions.min_score``).
SCORE_CUT = {True: 0.6, False: 0.8}

#: Work folder inside the results folder (removed when the pass is done).
WORK_DIR = "residual.work"


class ResidualPassError(AstrodaskError):
    """The results folder cannot take a residual pass."""


@dataclass
class ResidualOptions:
    """Settings of the residual pass (chosen on the ``hst`` validation mosaics, BENCHMARKS.md).

    Attributes
    ----------
    min_snr : float
        Objects with at least this S/N over all bands (:func:`astrodask.measure.total_snr`)
        that the U-Net does not call irregular are taken out.
    separation : float
        A second-pass object is added only this many pixels or more from every
        first-pass object.
    min_score : float, optional
        Detection score cut of the second pass's merge. Default:
        ``SCORE_CUT[flips]``, 0.6 with the 8 flips fused and 0.8 without (a
        single pass's raw scores run higher than scores fused over 8 passes,
        where a pass that misses an object counts 0; both chosen on the
        ``hst`` validation mosaics).
    flips : bool
        Fuse the Mask R-CNN's 8 flipped passes in the second run. Off, the
        second run detects once per window: 2.5x faster, summed F1 on the
        ``hst`` validation mosaics 3.8305 against 3.8342 (BENCHMARKS.md).
    core_fraction : float
        A second-pass object closer to the centre of the object whose segment
        holds it than this fraction of that object's radius ``sqrt(area / pi)``
        is not added: there the template's smoothing and any asymmetry of a
        bright core leave residual light of the bright object itself.
    sigma : float
        σ (px) of the Gaussian smoothing of the templates.
    keep_work : bool
        Keep ``residual.work`` (the residual mosaic, its run and catalog).
    """

    min_snr: float = 50.0
    separation: float = 6.0
    min_score: float = None
    flips: bool = True
    core_fraction: float = 0.3
    sigma: float = TEMPLATE_SIGMA
    keep_work: bool = False

    def validate(self):
        """The options with ``min_score`` filled in (a copy).

        Raises
        ------
        ResidualPassError
            A setting out of range.
        """
        if not isinstance(self.flips, (bool, np.bool_)):
            raise ResidualPassError(f"residual pass: flips must be true or false, "
                                    f"got {self.flips!r}")
        chosen = replace(self, flips=bool(self.flips),
                         min_score=(SCORE_CUT[bool(self.flips)] if self.min_score is None
                                    else self.min_score))
        for name in ("min_snr", "separation", "min_score", "core_fraction", "sigma"):
            value = getattr(chosen, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ResidualPassError(f"residual pass: {name} must be a number >= 0, "
                                        f"got {value!r}")
        if self.sigma == 0:
            raise ResidualPassError("residual pass: sigma must be > 0")
        return chosen


@dataclass
class ResidualSummary:
    """What the residual pass did.

    Attributes
    ----------
    results : str
    n_parents : int
        Objects taken out of the bands.
    n_added : int
        Objects added to the catalog.
    n_objects : int
        Catalog rows now.
    seconds : dict
        Wall time per step.
    """

    results: str
    n_parents: int
    n_added: int
    n_objects: int
    seconds: dict = field(default_factory=dict)

    def text(self):
        """One line for ``summary.txt`` and the command line."""
        return (f"residual pass: {self.n_added} objects added from the residual of "
                f"{self.n_parents} bright objects; catalog now {self.n_objects} objects\n")


def residual_pass(results, *, mosaic=None, options=None, client=None, n_workers=None,
                  threads_per_worker=None, scheduler=None, scheduler_file=None, progress=None):
    """Add the objects that a second pass over the bright objects' residual finds.

    Parameters
    ----------
    results : str or Path
        Results folder of a finished ``astrodask merge`` (Mask R-CNN runs).
    mosaic : Mosaic or path, optional
        The mosaic (default: the one recorded in ``run.json``).
    options : ResidualOptions, optional
    client, n_workers, threads_per_worker, scheduler, scheduler_file
        The cluster, as for :func:`astrodask.merge`; the second run and merge
        share it.
    progress : callable, optional
        ``progress(step, done, total)``; the steps are ``residual mosaic``,
        ``run`` and ``merge``.

    Returns
    -------
    ResidualSummary

    Raises
    ------
    ResidualPassError
        No finished merge, a U-Net-only run, or a pass already applied (merge
        again to start from the first pass).
    """
    from .engine.run import run
    from .merging.run import MergeOptions, cluster_for, merge
    from .merging.single import run_mosaic

    options = (options or ResidualOptions()).validate()
    results = Results(results)
    record, merged = _finished_merge(results)
    mosaic = run_mosaic(record, mosaic)
    work = results.file(WORK_DIR)
    seconds = {}
    n_first = int(merged["n_objects"])
    storage.remove(work)
    second = storage.join(work, "results")
    first_options = second_merge_options(merged["options"], options.min_score)
    with cluster_for(client, results.location, n_workers, threads_per_worker, scheduler,
                     scheduler_file) as (cluster, _):
        start = time.perf_counter()
        parents = bright_objects(results.file("catalog.parquet"), mosaic.bands, options.min_snr,
                                 storage.join(work, "parents"), cluster)
        seconds["bright_objects"] = time.perf_counter() - start
        if not len(parents):  # nothing bright: no residual to look at
            return _record(results, merged, options, ResidualSummary(
                results=results.location, n_parents=0, n_added=0, n_objects=n_first,
                seconds=seconds), work)
        start = time.perf_counter()
        residual = _write_residual(mosaic, results.file("segmap.zarr"), parents, options,
                                   storage.join(work, "mosaic.zarr"),
                                   _step(progress, "residual mosaic"), cluster)
        seconds["residual_mosaic"] = time.perf_counter() - start
        start = time.perf_counter()
        run(residual, second, config=second_run_config(record["config"], options.flips),
            client=cluster, progress=_step(progress, "run"), restart=True, report=None)
        seconds["run"] = time.perf_counter() - start
        start = time.perf_counter()
        merge(second, mosaic=residual, options=MergeOptions(**first_options), client=cluster,
              progress=_step(progress, "merge"))
        seconds["merge"] = time.perf_counter() - start

        start = time.perf_counter()
        added = select_additions(results.file("catalog.parquet"),
                                 storage.join(second, "catalog.parquet"),
                                 results.file("segmap.zarr"), parents, options.separation,
                                 n_first, storage.join(work, "additions"),
                                 core_fraction=options.core_fraction, client=cluster)
        storage.put_json(results.file("merge.json"),
                         dict(merged, residual_pass={"state": "publishing"}))
        n_objects = _publish(results, mosaic, merged, added,
                             storage.join(second, "segmap.zarr"), work, cluster)
        seconds["publish"] = time.perf_counter() - start
    return _record(results, merged, options, ResidualSummary(
        results=results.location, n_parents=len(parents), n_added=len(added),
        n_objects=n_objects, seconds=seconds), work)


def second_run_config(config, flips):
    """The first run's configuration (as ``run.json`` holds it) with the Mask R-CNN's ``flips``.

    Parameters
    ----------
    config : dict
    flips : bool

    Returns
    -------
    dict
        A copy; ``config`` is left as it is.
    """
    return dict(config, maskrcnn=dict(config.get("maskrcnn") or {}, flips=bool(flips)))


def second_merge_options(first, min_score):
    """The first merge's options (as ``merge.json`` holds them) for the merge of the second run.

    The pass's own score cut; no pictures, no second residual pass, and no weak
    rule: a weak detection's S/N on the residual measures what the bright
    objects' templates left (on the `hst` validation mosaics the first pass's
    rule at S/N 100, applied there too, kept pieces of the residual around
    stars of S/N 29,000-43,000).

    Parameters
    ----------
    first : dict
    min_score : float

    Returns
    -------
    dict
        A copy; ``first`` is left as it is.
    """
    return dict(first, min_score=min_score, pictures=False, residual_pass=False,
                weak_min_snr=float("inf"))


def _record(results, merged, options, summary, work):
    """Note the pass in ``summary.txt`` and ``merge.json`` (last); drop the work folder."""
    storage.put_bytes(results.file("summary.txt"),
                      storage.get_bytes(results.file("summary.txt")) + summary.text().encode())
    storage.put_json(results.file("merge.json"), dict(
        merged, n_objects=summary.n_objects,
        residual_pass={"state": "complete", "options": asdict(options),
                       "n_parents": summary.n_parents, "n_added": summary.n_added,
                       "first_pass_objects": int(merged["n_objects"]),
                       "quality_flag": RESIDUAL_FLAG, "seconds": summary.seconds}))
    if not options.keep_work:
        storage.remove(work)
    return summary


def _step(progress, name):
    return None if progress is None else (lambda done, total: progress(name, done, total))


def _finished_merge(results):
    from .merging.single import read_finished_run

    record = read_finished_run(results)
    try:
        merged = json.loads(storage.get_bytes(results.file("merge.json")))
    except FileNotFoundError:
        merged = {}
    if "n_objects" not in merged or not storage.exists(results.file("segmap.fits")):
        raise ResidualPassError(f"{results.location} has no finished merge; run "
                                "`astrodask merge` first")
    if "residual_pass" in merged:
        raise ResidualPassError(f"{results.location} already had a residual pass "
                                f"({merged['residual_pass'].get('state')}); run "
                                "`astrodask merge` again to start from the first pass")
    if not any(m["kind"] == "maskrcnn" for m in record["models"]):
        raise ResidualPassError("the residual pass needs a Mask R-CNN run (this run has "
                                "only the U-Net)")
    return record, merged


def _tasks(client, function, items, what, **shared):
    """:func:`astrodask.engine.cluster.task_map` with the residual pass's error."""
    from .engine.cluster import task_map

    return task_map(client, function, items, ResidualPassError, what, **shared)


def bright_objects(catalog, bands, min_snr, out, client=None):
    """The catalog objects a residual pass takes out, one task per catalog part.

    Parameters
    ----------
    catalog : str or Path
        A merged ``catalog.parquet`` (folder of parts).
    bands : sequence of str
    min_snr : float
        Least :func:`astrodask.measure.total_snr`.
    out : str or Path
        A folder (made if missing); a catalog part's objects go to a part of the same name.
    client : distributed.Client, optional
        Read the parts as tasks on this client's cluster, else one after the other here.

    Returns
    -------
    ObjectParts
        Columns ``id``, ``parent_id``, ``family_size``, ``y``, ``x``, ``area`` and
        the half-open box ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1`` of every
        object with S/N at least ``min_snr`` not called irregular, in ID order.
    """
    parts = catalog_parts(catalog)
    storage.makedirs(out)
    return ObjectParts(_tasks(
        client, _bright_part, [(p, storage.join(out, p.rsplit("/", 1)[-1])) for p in parts],
        f"choosing the bright objects of {catalog}", bands=tuple(bands), min_snr=min_snr))


def _bright_part(part, out, *, bands, min_snr):
    """The bright objects of one catalog part, written to ``out`` (a task)."""
    keep = ("id", "parent_id", "family_size", "y", "x", "area") + _BOX
    flux = [f"flux_{b}" for b in bands] + [f"flux_err_{b}" for b in bands]
    # the dominant eq. 16 class from the p_* columns, not the catalog's morphology, which a
    # morphology calibration may name (the pass's choices were made on the dominant class)
    probabilities = [f"p_{c}" for c in SOURCE_CLASSES]
    data = storage.get_bytes(part)
    names = set(storage.parquet_schema(data).names)
    class_columns = (probabilities if names >= set(probabilities)
                     else ["morphology"] if "morphology" in names else [])
    table = storage.parquet_table(data, columns=list(keep) + flux + class_columns)
    columns = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.schema.names}
    wanted = total_snr(columns, bands) >= min_snr
    if class_columns == probabilities:
        dominant = dominant_class(np.column_stack([columns[k] for k in probabilities]),
                                  SOURCE_CLASSES)
        wanted &= dominant != "irregular"
    elif class_columns:
        wanted &= columns["morphology"] != "irregular"
    return write_object_part(table.select(list(keep)).filter(wanted), out)


class _ResidualReader:
    """``read_band(b, rows, cols)`` of the residual mosaic; one segmap read per block.

    Pickled, it keeps the stores' locations (reopened where it lands) and the
    bright objects' parts (:class:`ObjectParts`, read where a block meets
    them): the residual mosaic's blocks are tasks on the cluster.
    """

    def __init__(self, mosaic, segmap, parents, sigma):
        self._mosaic_path, self._segmap = mosaic.path, segmap
        self._parents, self._sigma = parents, sigma
        self._shape = mosaic.tile_grid.height, mosaic.tile_grid.width
        self._open(mosaic)

    def _open(self, mosaic):
        import zarr

        self._image, self._mask = mosaic.array("image"), mosaic.array("mask")
        self._labels = zarr.open_group(self._segmap, mode="r")["labels"]
        self._block = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_image", "_mask", "_labels", "_block")}

    def __setstate__(self, state):
        from .mosaic import open_mosaic

        self.__dict__.update(state)
        self._open(open_mosaic(self._mosaic_path))

    def _objects(self, rows, cols):
        p = self._parents.meeting(rows, cols, columns=["id", "y", "x", *_BOX])
        return [(int(p["id"][k]), float(p["y"][k]), float(p["x"][k]),
                 tuple(int(p[b][k]) for b in _BOX)) for k in range(len(p["id"]))]

    def __call__(self, band, rows, cols):
        key = (rows.start, rows.stop, cols.start, cols.stop)
        if self._block is None or self._block[0] != key:
            objects = self._objects(rows, cols)
            labels = self._labels[rows, cols] if objects else None
            self._block = (key, objects, labels)
        _, objects, labels = self._block
        if not objects:
            return self._image[band, rows, cols]

        def read(r, c):
            values = np.asarray(self._image[band, r, c], dtype=np.float64)
            return np.where((self._mask[band, r, c] == 0) & np.isfinite(values), values, 0.0)

        residual, _ = residual_section(read, labels, objects, rows, cols, self._shape,
                                       self._sigma)
        return residual


def _write_residual(mosaic, segmap, parents, options, out, progress, client=None):
    from .ingestion import derive_mosaic

    reader = _ResidualReader(mosaic, segmap, parents, options.sigma)
    return derive_mosaic(mosaic, out, reader, overwrite=True, progress=progress, client=client,
                         derived_from={"kind": "symmetric_residual", "mosaic": mosaic.path,
                                       "min_snr": options.min_snr, "sigma": options.sigma,
                                       "objects": len(parents)})


def _catalog_dataset(catalog):
    """A merged catalog as a :mod:`pyarrow.dataset`, planned from its ``_metadata`` (one read
    for every part's row-group statistics) where it has one."""
    import pyarrow.dataset as ds

    fs, path = storage.filesystem(catalog)
    summary = storage.join(catalog, "_metadata")
    if storage.exists(summary):
        return ds.parquet_dataset(storage.filesystem(summary)[1], filesystem=fs)
    return ds.dataset(path, format="parquet", filesystem=fs)


def _positions_near(dataset, y0, y1):
    """``(x, y)`` of a catalog dataset's objects with ``y0 <= y <= y1``."""
    import pyarrow.dataset as ds

    table = dataset.to_table(columns=["x", "y"],
                             filter=(ds.field("y") >= y0) & (ds.field("y") <= y1))
    return np.column_stack([table.column("x").to_numpy(), table.column("y").to_numpy()])


def select_additions(first_catalog, second_catalog, first_segmap, parents, separation,
                     n_first, out, core_fraction=0.0, client=None):
    """The second catalog's rows to add, flagged and numbered, one part per second-catalog part.

    Parameters
    ----------
    first_catalog, second_catalog : str or Path
        The first pass's catalog and that of the run on the residual.
    first_segmap : str or Path
        The first pass's ``segmap.zarr``.
    parents : ObjectParts
        The objects taken out (:func:`bright_objects`).
    separation : float
        Least distance (px) of an addition from every first-pass object.
    n_first : int
        Objects of the first catalog (its IDs are ``1 ... n_first``).
    out : str or Path
        A folder (made if missing) for the parts of the additions.
    core_fraction : float
        Least distance of an addition from the centre of the object whose
        segment holds it, in units of that object's radius ``sqrt(area / pi)``.
    client : distributed.Client, optional
        Look at the second catalog's parts as tasks on this client's cluster,
        else one after the other here.

    Returns
    -------
    ObjectParts
        The rows, with the first catalog's schema, read with IDs ``n_first + 1 ...``
        in the second catalog's order, and ``parent_segment`` (the first-pass
        object whose segment holds them) and ``second_id`` (their ID in the
        second catalog) appended.
    """
    from .outputs.catalog import catalog_schema

    parts = catalog_parts(second_catalog) if len(parents) else []
    schema = catalog_schema(first_catalog)
    storage.makedirs(out)
    written = _tasks(client, _part_additions,
                     [(p, storage.join(out, p.rsplit("/", 1)[-1])) for p in parts],
                     f"choosing the additions from {second_catalog}",
                     first_catalog=first_catalog, first_segmap=first_segmap, parents=parents,
                     separation=separation, core_fraction=core_fraction, schema=schema)
    return ObjectParts(written).renumbered(n_first + 1)


def _part_additions(part, out, *, first_catalog, first_segmap, parents, separation,
                    core_fraction, schema):
    """The rows of one second-catalog part that :func:`select_additions` keeps, written to
    ``out`` with their second-catalog IDs (a task); ``None`` if none."""
    import pyarrow as pa
    import zarr
    from scipy.spatial import cKDTree

    table = storage.read_parquet(part)
    if table.num_rows == 0:
        return None
    labels = zarr.open_group(first_segmap, mode="r")["labels"]
    height, width = labels.shape
    x, y = table.column("x").to_numpy(), table.column("y").to_numpy()
    rows = np.clip(np.round(y).astype(np.int64), 0, height - 1)
    cols = np.clip(np.round(x).astype(np.int64), 0, width - 1)
    under = np.asarray(labels.get_coordinate_selection((rows, cols)), dtype=np.int64)
    holders = parents.with_ids(under[under > 0],
                               columns=["id", "parent_id", "family_size", "y", "x", "area"])
    if not len(holders["id"]):
        return None
    parent_ids = holders["id"].astype(np.int64)
    where = np.minimum(np.searchsorted(parent_ids, under), len(parent_ids) - 1)
    inside = parent_ids[where] == under
    if not inside.any():
        return None
    near = _positions_near(_catalog_dataset(first_catalog),
                           y[inside].min() - separation, y[inside].max() + separation)
    distance = np.full(len(x), np.inf)
    if len(near):
        distance[inside] = cKDTree(near).query(np.column_stack([x[inside], y[inside]]))[0]
    core = core_fraction * np.sqrt(holders["area"][where] / np.pi)
    off_core = np.hypot(x - holders["x"][where], y - holders["y"][where])
    keep = inside & (distance >= separation) & (off_core >= core)
    if not keep.any():
        return None
    index = np.flatnonzero(keep)
    added = table.take(pa.array(index))
    holder = where[index]
    columns = {name: added.column(name) for name in schema.names}
    columns["parent_id"] = pa.array(holders["parent_id"][holder].astype(np.int64))
    columns["family_size"] = pa.array(holders["family_size"][holder].astype(np.int32))
    columns["blended"] = pa.array(np.ones(len(index), bool))
    bits = added.column("quality_flags").to_numpy() | FLAGS["blended"] | RESIDUAL_FLAG
    columns["quality_flags"] = pa.array(bits.astype(np.int32))
    rows_out = pa.Table.from_arrays([columns[n].cast(schema.field(n).type) for n in schema.names],
                                    schema=schema)
    rows_out = rows_out.append_column("parent_segment", pa.array(under[index], pa.int64()))
    rows_out = rows_out.append_column("second_id", added.column("id").cast(pa.int64()))
    return write_object_part(rows_out, out)


def _paint(first, second, added, out, client):
    """Copy the first segmap into ``out``, painting the additions' pixels: one task per row
    of chunks on ``client``'s cluster."""
    import zarr

    source = zarr.open_group(first, mode="r")["labels"]
    group = zarr.open_group(out, mode="w", zarr_format=3)
    group.create_array("labels", shape=source.shape, chunks=source.chunks, dtype=source.dtype,
                       fill_value=0, compressors=source.compressors, dimension_names=("y", "x"))
    _tasks(client, _paint_rows, [(y0,) for y0 in range(0, source.shape[0], source.chunks[0])],
           f"painting the additions into {out}", first=first, second=second, out=out,
           added=added)


def _paint_rows(y0, *, first, second, out, added):
    """One row of chunks of :func:`_paint` (a task)."""
    import zarr

    source = zarr.open_group(first, mode="r")["labels"]
    theirs = zarr.open_group(second, mode="r")["labels"]
    labels = zarr.open_group(out, mode="r+")["labels"]
    cy, cx = source.chunks
    rows = slice(y0, min(y0 + cy, source.shape[0]))
    here = added.meeting(rows, slice(0, source.shape[1]),
                         columns=["id", "second_id", "parent_segment", *_BOX])
    for x0 in range(0, source.shape[1], cx):
        cols = slice(x0, min(x0 + cx, source.shape[1]))
        block = source[rows, cols]
        meets = np.flatnonzero(boxes_meet(here, rows, cols))
        if len(meets):
            found = theirs[rows, cols]
            free = block.copy()
            for k in meets:
                held = (free == here["parent_segment"][k]) | (free == 0)
                block[(found == here["second_id"][k]) & held] = here["id"][k]
        labels[rows, cols] = block


def _catalog_part(k, location, *, added):
    """The ``k``-th part of the additions as a catalog part (a task)."""
    table = added.read(added.parts[k]).drop_columns(["parent_segment", "second_id"])
    storage.put_bytes(location, storage.parquet_bytes(table))


def _publish(results, mosaic, merged, added, second_segmap, work, client):
    """Put the catalog with the additions, the segmaps and the pictures in place."""
    import zarr

    from .merging.products import open_unet, write_pictures, write_segmap_fits
    from .merging.run import catalog_classes, move_folder
    from .outputs.catalog import write_dataset_metadata

    catalog = results.file("catalog.parquet")
    parts = catalog_parts(catalog)
    staged = storage.join(work, "catalog")
    storage.remove(staged)
    storage.makedirs(staged)
    storage.copy_many({part: storage.join(staged, part.rsplit("/", 1)[-1]) for part in parts})
    n_objects = int(merged["n_objects"]) + len(added)
    _tasks(client, _catalog_part,
           [(k, storage.join(staged, f"part-{len(parts) + k:05d}.parquet"))
            for k in range(len(added.parts))],
           f"writing the additions into {catalog}", added=added)
    write_dataset_metadata(staged)

    segmap = storage.join(work, "segmap.zarr")
    _paint(results.file("segmap.zarr"), second_segmap, added, segmap, client)
    group = zarr.open_group(segmap, mode="r+")
    group.attrs["astrodask"] = {"kind": "segmap", "n_objects": n_objects}
    move_folder(staged, catalog)
    move_folder(segmap, results.file("segmap.zarr"))
    write_segmap_fits(mosaic, results.file("segmap.zarr"), results.file("segmap.fits"))
    if merged.get("options", {}).get("pictures"):
        unet = open_unet(results) if storage.exists(results.unet_store) else None
        write_pictures(mosaic, results.file("segmap.zarr"), catalog_classes(catalog), unet,
                       results, client)
    return n_objects
