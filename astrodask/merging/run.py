"""``astrodask.merge``: per-window model outputs → catalog, segmentation map, pictures.

Reads a finished run (``astrodask run``), resolves objects across window
edges (:mod:`astrodask.merging.stitch`), paints the exclusive segmentation map
chunk by chunk while measuring every object (:mod:`astrodask.measure`), and
writes the products into the results folder.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
import time

import numpy as np

from .. import __version__, storage
from ..classes import MORPHOLOGY_CLASSES, OBJECT_CLASSES
from ..engine.results import Results
from ..errors import InputError, StoreError
from ..mosaic import open_mosaic
from ..sky import detection_reader
from .pieces import morpheus_pieces, read_instance_pieces
from .stitch import (MATCH_IOU, blend_families, drop_hidden, paint_priority, resolve,
                     select_objects)

#: Catalog flag bits.
FLAGS = {"blended": 1, "truncated": 2, "tile_edge": 4, "masked": 8, "morpheus_undetected": 16}


@dataclass
class MergeOptions:
    """Settings of the merge stage.

    Attributes
    ----------
    match_iou : float
        Pieces of neighbouring windows are the same object at this IoU within
        the windows' overlap.
    morpheus_threshold, morpheus_background_level : float
        Algorithm 1 on the mean background probability (U-Net-only runs):
        background ≤ threshold seeds a source, ≥ level seeds the background.
        (Morpheus applied 0 and 1 to rank votes; mean probabilities are
        rarely exactly 0 or 1.)
    morpheus_min_distance, morpheus_max_peaks : int
        Algorithm 2 deblending seeds (U-Net-only runs).
    morpheus_min_area, morpheus_min_snr : float
        U-Net-only runs: smallest segment kept, and its minimum S/N.
    min_score : float, optional
        Mask R-CNN runs: objects whose detection score is below this are left
        out of the catalog. Default: the model card's ``catalog_min_score``
        (chosen for purity on validation mosaics), else none.
    detection_threshold : float
        ``morpheus_detected`` is true where the object's minimum background
        probability is at most this (as the Morpheus value-added catalog flags
        sources the network saw).
    pictures : bool
        Write the PNG quick-looks.
    """

    match_iou: float = MATCH_IOU
    morpheus_threshold: float = 0.1
    morpheus_background_level: float = 0.9
    morpheus_min_distance: int = 5
    morpheus_max_peaks: int = 20
    morpheus_min_area: int = 5
    morpheus_min_snr: float = 5.0
    min_score: float = None
    detection_threshold: float = 0.5
    pictures: bool = True


def catalog_min_score(record, options):
    """The score cut of a run's catalog: the option, else its Mask R-CNN card's, else none."""
    if options.min_score is not None:
        if not 0 <= options.min_score <= 1:
            raise InputError(f"min score must lie in [0, 1], got {options.min_score}")
        return float(options.min_score)
    for model in record["models"]:
        if model["kind"] == "maskrcnn":
            value = model["card"].get("catalog_min_score")
            return float(value) if value is not None else None
    return None


@dataclass
class MergeSummary:
    """What the merge produced."""

    results: str
    n_objects: int
    by_class: dict
    by_morphology: dict
    files: dict
    seconds: dict = field(default_factory=dict)


def merge(results, *, mosaic=None, options=None, threads=None, progress=None):
    """Merge a finished run into a catalog and maps.

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
    record = results.read_run()
    if record is None:
        raise StoreError(f"{results.location} is not an astrodask results folder (no run.json)")
    if not record.get("complete"):
        raise StoreError(f"the run in {results.location} did not finish; run `astrodask run` "
                         "again to resume it, then merge")
    if mosaic is None or isinstance(mosaic, (str, Path)):
        mosaic = open_mosaic(mosaic or record["mosaic"])
    kinds = {m["kind"]: m for m in record["models"]}
    unet = _open_unet(results) if "unet" in kinds else None
    seconds = {}

    start = time.perf_counter()
    if "maskrcnn" in kinds:
        pieces = read_instance_pieces(results)
    else:
        pieces = morpheus_pieces(mosaic, unet, threshold=options.morpheus_threshold,
                                 background_level=options.morpheus_background_level,
                                 min_distance=options.morpheus_min_distance,
                                 max_peaks=options.morpheus_max_peaks,
                                 min_area=options.morpheus_min_area,
                                 min_snr=options.morpheus_min_snr)
    objects = resolve(pieces, mosaic.tile_grid, brightness=detection_reader(mosaic),
                      match_iou=options.match_iou)
    min_score = catalog_min_score(record, options) if "maskrcnn" in kinds else None
    if min_score is not None:
        objects = select_objects(objects, np.flatnonzero(objects.score >= min_score))
    objects = blend_families(drop_hidden(objects))
    seconds["stitch"] = time.perf_counter() - start

    start = time.perf_counter()
    segmap_path = results.file("segmap.zarr")
    with storage.staged_folder(segmap_path) as target:
        measured = _paint_and_measure(mosaic, objects, unet, target, threads or cpu_count(),
                                      progress)
    seconds["paint_measure"] = time.perf_counter() - start

    start = time.perf_counter()
    table = _catalog_table(mosaic, objects, measured, unet, options)
    provenance = _provenance(mosaic, record, options)
    from ..outputs.catalog import write_catalog

    files = {"catalog": write_catalog(table, results.file("catalog.parquet"), provenance),
             "segmap_zarr": segmap_path}
    files["segmap_fits"] = _write_segmap_fits(mosaic, segmap_path, results.file("segmap.fits"))
    if unet is not None:
        files["morphology_fits"] = _write_morphology_fits(mosaic, unet,
                                                          results.file("morphology.fits"))
    if options.pictures:
        files.update(_write_pictures(mosaic, segmap_path, objects, unet, results))
    seconds["write"] = time.perf_counter() - start

    summary = MergeSummary(results=results.location, n_objects=len(objects),
                           by_class=_counts(table.column("class").to_pylist()),
                           by_morphology=_counts(table.column("morphology").to_pylist())
                           if "morphology" in table.column_names else {},
                           files={k: str(v) for k, v in files.items()}, seconds=seconds)
    summary.files["summary"] = results.file("summary.txt")
    storage.put_bytes(summary.files["summary"], summary_text(summary).encode())
    storage.put_json(results.file("merge.json"),
                     {"options": options.__dict__, "min_score_applied": min_score,
                      "n_objects": len(objects),
                      "files": summary.files})
    return summary


def _open_unet(results):
    import zarr

    group = zarr.open_group(results.unet_store, mode="r")
    classes = list(group.attrs["astrodask"]["classes"])
    if classes[-1] != "background":
        raise StoreError(f"U-Net classes {classes} do not end with background")
    return group


def _chunk_objects(objects, grid):
    """Object indices whose boxes meet each window core (chunk of the maps)."""
    core = grid.core
    buckets = {}
    for k in range(len(objects)):
        for iy in range(objects.y0[k] // core, (objects.y1[k] - 1) // core + 1):
            for ix in range(objects.x0[k] // core, (objects.x1[k] - 1) // core + 1):
                buckets.setdefault((iy, ix), []).append(k)
    return buckets


def _paint(objects, indices, rank, ys, xs):
    labels = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=np.int32)
    for k in sorted(indices, key=lambda k: -rank[k]):  # highest priority painted last
        sy0, sx0 = max(objects.y0[k], ys.start), max(objects.x0[k], xs.start)
        sy1, sx1 = min(objects.y1[k], ys.stop), min(objects.x1[k], xs.stop)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        part = objects.masks[k][sy0 - objects.y0[k]:sy1 - objects.y0[k],
                                sx0 - objects.x0[k]:sx1 - objects.x0[k]]
        view = labels[sy0 - ys.start:sy1 - ys.start, sx0 - xs.start:sx1 - xs.start]
        view[part] = k + 1
    return labels


def _paint_and_measure(mosaic, objects, unet, segmap_path, threads, progress):
    """Paint each chunk of the exclusive map (one writer per chunk) and measure objects."""
    import zarr
    from zarr.codecs import BloscCodec

    from ..measure import Accumulator, chunk_sums, near_flagged

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
    weight = mosaic.array("weight") if mosaic.has_weight else None
    accumulator = Accumulator(len(objects), len(mosaic.bands),
                              n_classes=unet["mean"].shape[0] if unet is not None else None,
                              with_weight=weight is not None)

    def one_chunk(index):
        iy, ix = index
        ys, xs = grid.core_slices(iy, ix)
        labels = _paint(objects, buckets.get(index, []), rank, ys, xs)
        labels_array[ys, xs] = labels
        if not labels.any():
            return None
        return chunk_sums(labels, ys.start, xs.start, image[:, ys, xs], flags[:, ys, xs],
                          weight[:, ys, xs] if weight is not None else None,
                          unet["mean"][:, ys, xs] if unet is not None else None,
                          touching=near_flagged(flags, ys, xs))

    indices = grid.indices()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, sums in enumerate(pool.map(one_chunk, indices), start=1):
            if sums is not None:
                accumulator.add(sums)
            if progress is not None:
                progress(done, len(indices))
    return accumulator


def _catalog_table(mosaic, objects, accumulator, unet, options):
    import pyarrow as pa

    from ..measure import ab_magnitude, sky_coordinates

    stats = mosaic.attrs["band_stats"]
    noise = None if mosaic.has_weight else [stats[b]["mad_std"] for b in mosaic.bands]
    measured = accumulator.columns(mosaic.bands, noise=noise)
    n = len(objects)
    ra, dec = sky_coordinates(mosaic.wcs, measured["x"], measured["y"])
    grid = mosaic.tile_grid
    truncated = ((objects.y0 == 0) | (objects.x0 == 0) | (objects.y1 == grid.height)
                 | (objects.x1 == grid.width))
    tile_edge = objects.cut | (objects.n_pieces > 1)
    blended = objects.family_size > 1
    masked = measured["masked_pixels"] > 0
    columns = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "parent_id": objects.parent_id.astype(np.int64),
        "family_size": objects.family_size.astype(np.int32),
        "x": measured["x"], "y": measured["y"], "ra": ra, "dec": dec,
        "bbox_y0": objects.y0, "bbox_x0": objects.x0,
        "bbox_y1": objects.y1, "bbox_x1": objects.x1,
        "area": measured["area"],
        "anchor_y": objects.anchor_y, "anchor_x": objects.anchor_x,
    }
    for band in mosaic.bands:
        columns[f"flux_{band}"] = measured[f"flux_{band}"]
        columns[f"flux_err_{band}"] = measured[f"flux_err_{band}"]
        columns[f"mag_{band}"] = ab_magnitude(measured[f"flux_{band}"],
                                              mosaic.attrs.get("zeropoints", {}).get(band))
    columns["class_id"] = objects.class_id
    columns["class"] = pa.array([OBJECT_CLASSES[c] if c > 0 else None for c in objects.class_id],
                                type=pa.string())
    columns["class_score"] = np.where(objects.class_id > 0, objects.score, np.nan)
    morpheus_undetected = np.zeros(n, dtype=bool)
    if unet is not None:
        probabilities = measured["class_probabilities"]
        for k, name in enumerate(MORPHOLOGY_CLASSES):
            columns[f"p_{name}"] = probabilities[:, k]
        sources = probabilities[:, :-1]
        dominant = np.argmax(np.nan_to_num(sources, nan=-1.0), axis=1)
        columns["morphology"] = pa.array(
            [MORPHOLOGY_CLASSES[d] if np.isfinite(sources[i]).all() else None
             for i, d in enumerate(dominant)], type=pa.string())
        columns["min_background"] = measured["min_background"]
        columns["morpheus_detected"] = measured["min_background"] <= options.detection_threshold
        morpheus_undetected = ~columns["morpheus_detected"]
    columns.update(blended=blended, truncated=truncated, tile_edge=tile_edge, masked=masked,
                   n_pieces=objects.n_pieces)
    bits = (blended * FLAGS["blended"] | truncated * FLAGS["truncated"]
            | tile_edge * FLAGS["tile_edge"] | masked * FLAGS["masked"]
            | morpheus_undetected * FLAGS["morpheus_undetected"])
    columns["flags"] = np.asarray(bits, dtype=np.int32)
    return pa.table(columns)


def _provenance(mosaic, record, options):
    import dask
    import zarr

    return {
        "astrodask_version": __version__,
        "versions": {"dask": dask.__version__, "zarr": zarr.__version__},
        "mosaic": record["mosaic"],
        "mosaic_inputs": mosaic.attrs["inputs"],
        "bands": list(mosaic.bands),
        "tile_grid": mosaic.tile_grid.to_dict(),
        "models": [{"kind": m["kind"], "name": m["name"], "card": m["card"]}
                   for m in record["models"]],
        "run_config": record["config"],
        "merge_options": options.__dict__,
        "flags": FLAGS,
        "pixel_convention": "0-based pixel coordinates, pixel centres on integers; "
                            "ra/dec in degrees (ICRS)",
    }


def _strips(array, grid, index=None):
    """Row strips (one window core high) of a 2-D Zarr array, or of ``array[index]``."""
    for iy in range(grid.shape[0]):
        ys, _ = grid.core_slices(iy, 0)
        yield array[ys] if index is None else array[index, ys]


def _write_segmap_fits(mosaic, segmap_path, path):
    import zarr

    from ..outputs.fits import StreamingFits, image_header

    labels = zarr.open_group(segmap_path, mode="r")["labels"]
    grid = mosaic.tile_grid
    header = image_header((grid.height, grid.width), "int32", mosaic.header if mosaic.wcs else None,
                          cards=[("BUNIT", "", "object id of catalog.parquet; 0 = none")])
    with StreamingFits(path) as out:
        out.image(header, _strips(labels, grid))
    return path


def _write_morphology_fits(mosaic, unet, path):
    from ..outputs.fits import StreamingFits, image_header

    grid = mosaic.tile_grid
    classes = unet.attrs["astrodask"]["classes"]
    sky = mosaic.header if mosaic.wcs else None
    with StreamingFits(path) as out:
        out.empty_primary(cards=[("ORIGIN", "astrodask", "U-Net class probabilities"),
                                 ("NCLASS", len(classes), "one image extension per class")])
        for k, name in enumerate(classes):
            header = image_header((grid.height, grid.width), "float32", sky, extension=True,
                                  name=name.upper())
            out.image(header, _strips(unet["mean"], grid, index=k))
    return path


def _write_pictures(mosaic, segmap_path, objects, unet, results):
    import zarr

    from ..morphology.colour import colour_image
    from ..outputs.images import overview_rgb, preview_step, save_png

    grid = mosaic.tile_grid
    step = preview_step(grid.height, grid.width)
    image = np.nan_to_num(mosaic.array("image")[:, ::step, ::step], nan=0.0).sum(axis=0)
    labels = zarr.open_group(segmap_path, mode="r")["labels"][::step, ::step]
    class_of = np.concatenate([[0], objects.class_id.astype(np.int64)])
    files = {"overview_png": save_png(results.file("overview.png"),
                                      overview_rgb(image, labels, class_of))}
    if unet is not None:
        mean = np.nan_to_num(unet["mean"][:, ::step, ::step], nan=0.0)
        rgb = np.round(colour_image(mean, classes=unet.attrs["astrodask"]["classes"]) * 255)
        files["colour_png"] = save_png(results.file("morpheus_colour.png"), rgb.astype(np.uint8))
    return files


def _counts(values):
    counts = {}
    for value in values:
        key = value if value is not None else "unclassified"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def summary_text(summary):
    """A short text summary of a merge."""
    lines = [f"astrodask {__version__}: {summary.n_objects} objects in {summary.results}"]
    if summary.by_class:
        lines.append("by class: " + ", ".join(f"{k} {v}" for k, v in summary.by_class.items()))
    if summary.by_morphology:
        lines.append("by morphology: " + ", ".join(f"{k} {v}"
                                                    for k, v in summary.by_morphology.items()))
    lines.append("files: " + ", ".join(f"{k}={Path(v).name}" for k, v in summary.files.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.seconds.items()))
    return "\n".join(lines) + "\n"
