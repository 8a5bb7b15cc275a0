"""Truth tables and per-object masks: building, writing, reading.

``truth.parquet`` has one row per object (columns in :func:`truth_table`).
``masks.parquet`` holds every non-empty per-object mask, cropped to its box:
``id``, ``y0``, ``x0``, ``y1``, ``x1`` (0-based, exclusive ends) and
``bits`` (the row-major crop packed with ``numpy.packbits``). Masks may
overlap; the exclusive label map is written separately.
"""

from collections import namedtuple

import numpy as np

from ..classes import MORPHOLOGY_CLASSES, OBJECT_CODE

#: One per-object mask: ``box`` is ``(y0, x0, y1, x1)``, ``mask`` the bool crop.
ObjectMask = namedtuple("ObjectMask", ["id", "box", "mask"])


def neighbour_counts(n_objects, pairs):
    """Number of other objects whose masks overlap each object's mask (index = id - 1)."""
    counts = np.zeros(n_objects, dtype=np.int32)
    if pairs:
        arr = np.array(sorted(pairs), dtype=np.int64)
        np.add.at(counts, arr[:, 0] - 1, 1)
        np.add.at(counts, arr[:, 1] - 1, 1)
    return counts


def truth_table(plan, truths, pairs):
    """Build the truth table of a field as a :class:`pyarrow.Table`.

    Parameters
    ----------
    plan : FieldPlan
    truths : dict
        id -> ObjectTruth for every object of the field.
    pairs : set
        ``(id_a, id_b)`` of objects whose masks overlap.
    """
    import pyarrow as pa

    pop = plan.population
    n = len(pop)
    ra, dec = plan.wcs.all_pix2world(pop.x, pop.y, 0) if n else (np.zeros(0), np.zeros(0))
    object_class = np.where(pop.is_star, "star", "galaxy")
    columns = {
        "id": pop.id,
        "class": object_class,
        "class_code": np.where(pop.is_star, OBJECT_CODE["star"], OBJECT_CODE["galaxy"]).astype(np.int8),
        "morphology": np.array(MORPHOLOGY_CLASSES)[pop.morphology] if n else np.array([], str),
        "morphology_code": pop.morphology,
        "x": pop.x, "y": pop.y, "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
    }
    for b, model in enumerate(plan.models):
        flux = pop.flux[:, b]
        columns[f"flux_{model.name}"] = flux
        with np.errstate(divide="ignore"):
            columns[f"mag_{model.name}"] = model.zeropoint - 2.5 * np.log10(flux)
        columns[f"image_flux_{model.name}"] = np.array(
            [truths[i].image_flux[b] for i in pop.id], dtype=np.float64).reshape(n)
    empty = (-1, -1, -1, -1)
    boxes = np.array([truths[i].mask_box or empty for i in pop.id], dtype=np.int64).reshape(n, 4)
    columns.update({
        "bulge_n": pop.bulge_n, "bulge_hlr": pop.bulge_hlr, "disk_hlr": pop.disk_hlr,
        "bulge_fraction": pop.bulge_fraction, "n_knots": pop.n_knots,
        "hlr": pop.hlr, "q": pop.q, "ellipticity": 1.0 - pop.q,
        "position_angle": pop.position_angle,
        "snr": np.array([truths[i].snr for i in pop.id], dtype=np.float64),
        "peak_snr": np.array([truths[i].peak_snr for i in pop.id], dtype=np.float64),
        "mask_area": np.array([truths[i].area for i in pop.id], dtype=np.int64),
        "bbox_y0": boxes[:, 0], "bbox_x0": boxes[:, 1],
        "bbox_y1": boxes[:, 2], "bbox_x1": boxes[:, 3],
        "n_neighbours": neighbour_counts(n, pairs),
    })
    table = pa.table({k: pa.array(np.asarray(v)) for k, v in columns.items()})
    units = {"x": "pixel (0-based)", "y": "pixel (0-based)", "ra": "deg", "dec": "deg",
             "hlr": "arcsec", "bulge_hlr": "arcsec", "disk_hlr": "arcsec",
             "position_angle": "deg counter-clockwise from +x",
             "snr": "detection-image sigma", "peak_snr": "detection-image sigma"}
    meta = {"units": repr(units), "flux_unit": plan.preset.bunit}
    return table.replace_schema_metadata({k: str(v) for k, v in meta.items()})


def masks_table(items):
    """Table of per-object masks from ``(id, ObjectTruth)`` items (empty masks skipped)."""
    import pyarrow as pa

    rows = [(oid, t) for oid, t in items if t.mask is not None]
    boxes = np.array([t.mask_box for _, t in rows], dtype=np.int64).reshape(len(rows), 4)
    return pa.table({
        "id": pa.array(np.array([oid for oid, _ in rows], dtype=np.int64)),
        "y0": pa.array(boxes[:, 0]), "x0": pa.array(boxes[:, 1]),
        "y1": pa.array(boxes[:, 2]), "x1": pa.array(boxes[:, 3]),
        "bits": pa.array([np.packbits(t.mask.ravel()).tobytes() for _, t in rows],
                         type=pa.binary()),
    })


def decode_masks(table):
    """Yield :class:`ObjectMask` from a masks table (as written by :func:`masks_table`)."""
    cols = {name: table.column(name).to_pylist() for name in ("id", "y0", "x0", "y1", "x1")}
    bits = table.column("bits").to_pylist()
    for k, raw in enumerate(bits):
        y0, x0, y1, x1 = (cols[c][k] for c in ("y0", "x0", "y1", "x1"))
        h, w = y1 - y0, x1 - x0
        mask = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=h * w).astype(bool)
        yield ObjectMask(cols["id"][k], (y0, x0, y1, x1), mask.reshape(h, w))


def read_object_masks(path):
    """Read ``masks.parquet`` into a list of :class:`ObjectMask`, sorted by id."""
    import pyarrow.parquet as pq

    return sorted(decode_masks(pq.read_table(path)), key=lambda m: m.id)
