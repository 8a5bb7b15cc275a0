"""The merge in one process: the reference that the merge on Dask reproduces.

Reads a finished run (``astrodask run``), resolves objects across window
edges (:mod:`astrodask.merging.stitch`) with every piece of the mosaic in
memory, paints the exclusive segmentation map chunk by chunk with local
threads while measuring every object (:mod:`astrodask.measure`), and writes
the products into the results folder. Fine for small mosaics; kept as the
reference for :func:`astrodask.merging.run.merge`, which must give the same
bytes.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import time

import numpy as np

from .. import storage
from ..engine.results import Results
from ..errors import StoreError
from ..mosaic import open_mosaic
from ..sky import detection_reader
from .pieces import morpheus_pieces, read_instance_pieces
from .products import (MergeOptions, MergeSummary, catalog_counts, catalog_table, resolved_options,
                       open_unet, paint, provenance, summary_text, write_morphology_fits,
                       write_pictures, write_segmap_fits)
from .stitch import blend_families, drop_hidden, paint_priority, resolve, select_objects
from .hosts import host_rule
from .weak import vouching


def read_finished_run(results):
    """The ``run.json`` record of a finished run; one-line :class:`StoreError` otherwise."""
    record = results.read_run()
    if record is None:
        raise StoreError(f"{results.location} is not an astrodask results folder (no run.json)")
    if not record.get("complete"):
        raise StoreError(f"the run in {results.location} did not finish; run `astrodask run` "
                         "again to resume it, then merge")
    return record


def run_mosaic(record, mosaic=None):
    """The mosaic a finished run read: ``mosaic`` (a :class:`Mosaic` or path) or the one
    ``run.json`` names.

    Raises
    ------
    StoreError
        If the store no longer holds what the run read (ingested again since,
        with other inputs or options): its detections would not fit its pixels.
    """
    if mosaic is None or isinstance(mosaic, (str, Path)):
        mosaic = open_mosaic(mosaic or record["mosaic"])
    expected = record.get("mosaic_digest")  # runs recorded before the digest was kept pass
    if expected is not None and mosaic.content_digest != expected:
        raise StoreError(f"mosaic {mosaic.path} is not the store the run read (ingested again "
                         "since?); run again with --restart, then merge")
    return mosaic


def merge_in_process(results, *, mosaic=None, options=None, threads=None, progress=None):
    """Merge a finished run in this process (the reference for :func:`astrodask.merge`).

    Parameters
    ----------
    results : str or Path
        Results folder (local path or fsspec URL) of a complete ``astrodask run``.
    mosaic : Mosaic or path, optional
        The mosaic (default: the one recorded in ``run.json``).
    options : MergeOptions, optional
    threads : int, optional
        Threads painting and measuring chunks (default: cores).
    progress : callable, optional
        ``progress(done_chunks, total_chunks)``.

    Returns
    -------
    MergeSummary
    """
    from ..engine.cluster import cpu_count

    options = options or MergeOptions()
    results = Results(results)
    record = read_finished_run(results)
    mosaic = run_mosaic(record, mosaic)
    kinds = {m["kind"]: m for m in record["models"]}
    unet = open_unet(results) if "unet" in kinds else None
    seconds = {}

    start = time.perf_counter()
    options = resolved_options(record, options)
    if "maskrcnn" in kinds:
        vouch = vouching(mosaic, vars(options))
        pieces = read_instance_pieces(results, min_score=options.min_score, vouch=vouch,
                                      parts=host_rule(vars(options), mosaic.pixel_scale))
    else:
        pieces = morpheus_pieces(mosaic, unet, threshold=options.morpheus_threshold,
                                 background_level=options.morpheus_background_level,
                                 min_distance=options.morpheus_min_distance,
                                 max_peaks=options.morpheus_max_peaks,
                                 min_area=options.morpheus_min_area,
                                 min_snr=options.morpheus_min_snr)
    objects = resolve(pieces, mosaic.tile_grid, brightness=detection_reader(mosaic),
                      match_iou=options.match_iou)
    min_score = options.min_score
    if min_score is not None:
        objects = select_objects(objects, np.flatnonzero((objects.score >= min_score)
                                                         | objects.vouched))
    objects = blend_families(drop_hidden(objects))
    seconds["stitch"] = time.perf_counter() - start

    start = time.perf_counter()
    segmap_path = results.file("segmap.zarr")
    with storage.staged_folder(segmap_path) as target:
        measured = _paint_and_measure(mosaic, objects, unet, target, threads or cpu_count(),
                                      progress, options.irregular_centroid_sigma)
    seconds["paint_measure"] = time.perf_counter() - start

    start = time.perf_counter()
    import zarr

    table = catalog_table(mosaic, objects, measured, unet, options,
                          zarr.open_group(segmap_path, mode="r")["labels"])
    meta = provenance(mosaic, record, options)
    from ..outputs.catalog import write_catalog

    files = {"catalog": write_catalog(table, results.file("catalog.parquet"), meta),
             "segmap_zarr": segmap_path}
    files["segmap_fits"] = write_segmap_fits(mosaic, segmap_path, results.file("segmap.fits"))
    if unet is not None:
        files["morphology_fits"] = write_morphology_fits(mosaic, unet,
                                                          results.file("morphology.fits"))
    if options.pictures:
        class_id = np.asarray(objects.class_id, dtype=np.int64)
        files.update(write_pictures(mosaic, segmap_path, lambda ids: class_id[ids - 1], unet,
                                    results))
    seconds["write"] = time.perf_counter() - start

    summary = MergeSummary(results=results.location, n_objects=len(objects),
                           **catalog_counts(table),
                           files={k: str(v) for k, v in files.items()}, seconds=seconds)
    summary.files["summary"] = results.file("summary.txt")
    storage.put_bytes(summary.files["summary"], summary_text(summary).encode())
    storage.put_json(results.file("merge.json"),
                     {"options": options.__dict__, "n_objects": len(objects),
                      "files": summary.files})
    return summary


def _paint_and_measure(mosaic, objects, unet, segmap_path, threads, progress, sigma=None):
    """Paint each chunk of the exclusive map (one writer per chunk) and measure objects.

    ``sigma``: also sum each object's moments over the detection image
    smoothed by a Gaussian of that many pixels (:func:`astrodask.measure.smoothed_detection`).
    """
    import zarr
    from zarr.codecs import BloscCodec

    from ..measure import Accumulator, measure_chunk

    grid = mosaic.tile_grid
    group = zarr.open_group(segmap_path, mode="w", zarr_format=3)
    labels_array = group.create_array(
        "labels", shape=(grid.height, grid.width), chunks=(grid.core, grid.core), dtype="int32",
        fill_value=0, compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
        dimension_names=("y", "x"))
    group.attrs["astrodask"] = {"kind": "segmap", "n_objects": len(objects)}
    buckets = _chunk_objects(objects, grid)
    rank = paint_priority(objects)
    image, flags = mosaic.array("image"), mosaic.array("mask")
    saturation = [mosaic.saturation[b] for b in mosaic.bands]
    weight = mosaic.array("weight") if mosaic.has_weight else None
    accumulator = Accumulator(len(objects), len(mosaic.bands),
                              n_classes=unet["mean"].shape[0] if unet is not None else None,
                              with_weight=weight is not None)

    def one_chunk(index):
        iy, ix = index
        ys, xs = grid.core_slices(iy, ix)
        order = sorted(buckets.get(index, []), key=lambda k: -rank[k])  # top priority last
        labels = paint([(objects.y0[k], objects.x0[k], objects.y1[k], objects.x1[k])
                        for k in order], [objects.masks[k] for k in order],
                       [k + 1 for k in order], ys, xs)
        labels_array[ys, xs] = labels
        if not labels.any():
            return None
        return measure_chunk(labels, ys, xs, image, flags, weight,
                             unet["mean"] if unet is not None else None, saturation=saturation,
                             anchors=(np.add(order, 1), objects.anchor_y[order],
                                      objects.anchor_x[order]), sigma=sigma)

    indices = grid.indices()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, sums in enumerate(pool.map(one_chunk, indices), start=1):
            if sums is not None:
                accumulator.add(sums)
            if progress is not None:
                progress(done, len(indices))
    return accumulator


def _chunk_objects(objects, grid):
    """Object indices whose boxes meet each window core (chunk of the maps)."""
    core = grid.core
    buckets = {}
    for k in range(len(objects)):
        for iy in range(objects.y0[k] // core, (objects.y1[k] - 1) // core + 1):
            for ix in range(objects.x0[k] // core, (objects.x1[k] - 1) // core + 1):
                buckets.setdefault((iy, ix), []).append(k)
    return buckets
