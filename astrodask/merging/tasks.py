"""The merge's Dask tasks: each reads what it needs from storage and writes its own outputs.

Only small values (counts, a few records per object that spans many
windows) come back to the client; masks, sums and catalog rows stay in the
work folder (``RESULTS/merge.work``). Stages, in order:

``pieces``  (U-Net-only runs) Morpheus segments of one window.
``resolve`` one window: match the pieces of its neighbourhood, resolve the
            connected groups of pieces that it is the home of (rules of
            :mod:`.stitch`), write their objects; report its pieces whose group
            reaches beyond the neighbourhood.
``large``   one task: the groups that no neighbourhood holds whole, decided
            from small records (ids, boxes, IoUs), never masks.
``assemble`` the masks of those large objects, per window of their owner piece.
``visible`` one chunk (window core): an object wholly under higher-scored ones
            centred near it, everywhere, is hidden (dropped from the catalog).
``painted`` one chunk: paint the objects not hidden, smaller on top; an object
            left without a pixel anywhere is dropped too (no empty segments).
``order``   one block of window rows: its remaining objects in ID order.
``paint``   one chunk: the segmentation map with final IDs (one writer per
            chunk), per-object sums, and which objects touch (blends).
``families`` one task: blend families over the touching pairs (IDs only).
``catalog`` one block: measured columns, written as one Parquet part.

Global IDs are ranks in the order of :func:`astrodask.merging.stitch.resolve`
(anchor, class, score, then keeping order), counted per block, so they do
not depend on the number of workers or the order in which tasks finish.
"""

from functools import partial
import math

import numpy as np
import pyarrow as pa

from .. import storage
from ..engine.results import Results
from ..instances import SCHEMA, decode_mask, encode_mask
from ..mosaic import Block
from .pieces import (PIECE_SCHEMA, Pieces, morpheus_window_pieces, read_window_pieces,
                     read_windows_pieces)
from .hosts import host_rule
from .weak import rule_applies, vouching
from .stitch import (_window_rects, assemble, box_pairs, components, decide, depth,
                     hiding_pairs, mask_in_box, match_pieces, owned_rank_key, smallest_member,
                     uncovered)

#: Bits of a piece's id left for its detection index: uid = window << 24 | det.
DET_BITS = 24

OBJECT_SCHEMA = pa.schema([
    ("uid", pa.int64()), ("y0", pa.int64()), ("x0", pa.int64()), ("y1", pa.int64()),
    ("x1", pa.int64()), ("class_id", pa.int8()), ("score", pa.float32()),
    ("anchor_y", pa.int64()), ("anchor_x", pa.int64()), ("n_pieces", pa.int32()),
    ("cut", pa.bool_()), ("depth", pa.int64()), ("area", pa.int64()),
    ("centre_y", pa.float64()), ("centre_x", pa.float64()), ("vouched", pa.bool_()),
    ("mask", pa.binary()),
])
SMALL_COLUMNS = [name for name in OBJECT_SCHEMA.names if name != "mask"]


# --- geometry shared with the client -------------------------------------------------------

def reach(grid):
    """Windows within this many rows/columns of each other can share pieces.

    Windows ``k`` apart overlap when ``(k - 1) * core < 2 * halo``.
    """
    return math.ceil(2 * grid.halo / grid.core)


def spread(grid):
    """Chunks (window cores) within this distance of an object's resolving window hold it all.

    Its box, grown by one pixel (for touching neighbours), lies in the areas
    of the windows within :func:`reach`, which extend ``halo`` beyond their cores.
    """
    return reach(grid) + math.ceil((grid.halo + 1) / grid.core)


def touched_windows(grid, y0, x0, y1, x1):
    """Range ``(iy0, ix0, iy1, ix1)`` (inclusive) of windows whose area meets a box.

    Works on arrays of boxes too.
    """
    ny, nx = grid.shape
    core, halo = grid.core, grid.halo

    def low(a, n):
        return np.clip((np.asarray(a) - halo) // core, 0, n - 1)

    def high(b, n):
        return np.clip(-((-(np.asarray(b) + halo)) // core) - 1, 0, n - 1)

    return low(y0, ny), low(x0, nx), high(y1, ny), high(x1, nx)


def chunks_of_box(grid, y0, x0, y1, x1):
    """Range ``(cy0, cx0, cy1, cx1)`` (inclusive) of chunks (cores) that a box meets."""
    core = grid.core
    return int(y0) // core, int(x0) // core, (int(y1) - 1) // core, (int(x1) - 1) // core


def uid_of(grid, iy, ix, det):
    """Global id of a piece; its order is the order of (window row, column, detection)."""
    return ((np.asarray(iy, np.int64) * grid.shape[1] + np.asarray(ix, np.int64)) << DET_BITS) \
        | np.asarray(det, np.int64)


def window_of_uid(grid, uid):
    """Window ``(iy, ix)`` of a piece (or object) id."""
    return divmod(int(uid) >> DET_BITS, grid.shape[1])


def sort_columns(table):
    """Key columns of the objects' ID order (last key first, for :func:`numpy.lexsort`)."""
    score = -table["score"].astype(np.float64)
    return (table["uid"], -table["depth"], score, table["class_id"], table["anchor_x"],
            table["anchor_y"])


def hiding_order(table):
    """Indices from highest hiding priority down: score, then smaller area, then ID order
    (:func:`astrodask.merging.stitch.hiding_priority`)."""
    score = -table["score"].astype(np.float64)
    return np.lexsort(sort_columns(table) + (table["area"], score))


def paint_order(table):
    """Indices from highest painting priority down: smaller area, then score, then ID order
    (:func:`astrodask.merging.stitch.paint_priority`)."""
    score = -table["score"].astype(np.float64)
    return np.lexsort(sort_columns(table) + (score, table["area"]))


# --- worker-side helpers -------------------------------------------------------------------

class Context:
    """What every task needs to find its inputs (a small picklable value)."""

    def __init__(self, results, work, mosaic, mosaic_token, grid, options, morpheus, unet):
        self.results, self.work, self.mosaic = results, work, mosaic
        self.mosaic_token = mosaic_token
        self.grid, self.options, self.morpheus, self.unet = grid, options, morpheus, unet

    def path(self, *parts):
        return storage.join(self.work, *parts)

    @property
    def staged_pieces(self):
        """Whether each window's pieces are made once, by the ``pieces`` stage, into the work
        folder: Morpheus segments, and Mask R-CNN pieces whose weak ones are weighed by their
        S/N (a read of the mosaic per window, which the several tasks that read a window's
        pieces should not repeat)."""
        o = self.options
        return self.morpheus or rule_applies(o.get("min_score"), o.get("weak_min_score"),
                                             o.get("weak_min_snr"))


def _mosaic(ctx):
    from ..mosaic import cached_mosaic

    return cached_mosaic(ctx.mosaic, ctx.mosaic_token)


# Intermediate tables are Arrow IPC files: opening one costs far less than a Parquet file,
# and each task opens a few dozen. Only the catalog parts are Parquet.

def _read_tables(locations, columns=None, missing_ok=True):
    """The tables at ``locations``, fetched together (:func:`astrodask.storage.get_many`);
    ``None`` for a missing one when ``missing_ok`` (a bool, or one per location)."""
    if isinstance(missing_ok, bool):
        missing_ok = [missing_ok] * len(locations)
    tables = []
    for location, data, may_miss in zip(locations, storage.get_many(locations), missing_ok):
        if data is None:
            if not may_miss:
                raise FileNotFoundError(location)
            tables.append(None)
            continue
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        tables.append(table.select(columns) if columns is not None else table)
    return tables


def _table_bytes(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _put_table(location, table):
    storage.put_bytes(location, _table_bytes(table))


def tile_name(iy, ix):
    return f"tile-{iy:05d}-{ix:05d}"


def _windows_pieces(ctx, windows):
    """The pieces of ``windows`` (``[(iy, ix), ...]``) as one table."""
    if ctx.staged_pieces:
        tables = _read_tables([ctx.path("pieces", tile_name(iy, ix) + ".arrow")
                               for iy, ix in windows])
        empty = (SCHEMA if ctx.morpheus else PIECE_SCHEMA).empty_table()
        tables = [empty if table is None else table for table in tables]
    else:
        tables = read_windows_pieces(Results(ctx.results), windows, ctx.options.get("min_score"),
                                     parts=_host_parts(ctx))
    return pa.concat_tables(tables)


def _host_parts(ctx):
    """The large-host rule of the merge (:mod:`astrodask.merging.hosts`), or None when off."""
    if ctx.options.get("large_host_area") is None:
        return None
    return host_rule(ctx.options, _mosaic(ctx).pixel_scale)


def _brightness(ctx):
    from ..sky import detection_reader

    return detection_reader(_mosaic(ctx))


def _object_rows(ctx, records, uids, depths):
    """Objects as rows; those scored below the catalog cut (``min_score``) and not
    vouched for are left out."""
    rows = {name: [] for name in OBJECT_SCHEMA.names}
    min_score = ctx.options.get("min_score")
    for record, uid, d in zip(records, uids, depths):
        if min_score is not None and record["score"] < min_score and not record["vouched"]:
            continue
        values = dict(record, uid=int(uid), depth=int(d), area=int(np.count_nonzero(record["mask"])),
                      mask=encode_mask(record["mask"]))
        for name in OBJECT_SCHEMA.names:
            rows[name].append(values[name])
    return pa.table(rows, schema=OBJECT_SCHEMA)


# --- stages --------------------------------------------------------------------------------

def pieces_task(ctx, iy, ix):
    """Pieces of window ``(iy, ix)`` into the work folder (:attr:`Context.staged_pieces`).

    Morpheus segments (U-Net-only runs), or the Mask R-CNN pieces with the weak
    ones their S/N vouches for kept (:mod:`astrodask.merging.weak`).
    """
    from .products import open_unet

    o = ctx.options
    if not ctx.morpheus:
        table = read_window_pieces(Results(ctx.results), iy, ix, o["min_score"],
                                   vouching(_mosaic(ctx), o), _host_parts(ctx))
        _put_table(ctx.path("pieces", tile_name(iy, ix) + ".arrow"), table)
        return {"pieces": table.num_rows}
    table = morpheus_window_pieces(
        _mosaic(ctx), open_unet(Results(ctx.results)), iy, ix,
        threshold=o["morpheus_threshold"], background_level=o["morpheus_background_level"],
        min_distance=o["morpheus_min_distance"], max_peaks=o["morpheus_max_peaks"],
        min_area=o["morpheus_min_area"], min_snr=o["morpheus_min_snr"])
    _put_table(ctx.path("pieces", tile_name(iy, ix) + ".arrow"), table)
    return {"pieces": table.num_rows}


def resolve_task(ctx, iy, ix):
    """Resolve the groups of pieces whose home is window ``(iy, ix)``.

    A group (connected component of the match graph) is complete in a
    window's neighbourhood when every piece's box meets only windows of that
    neighbourhood: a matching piece must meet it, so none is missing. Its
    home is the first window (row-major) whose neighbourhood holds it whole.
    """
    grid = ctx.grid
    ny, nx = grid.shape
    r = reach(grid)
    view = [(vy, vx) for vy in range(max(iy - r, 0), min(iy + r, ny - 1) + 1)
            for vx in range(max(ix - r, 0), min(ix + r, nx - 1) + 1)]
    pieces = Pieces(_windows_pieces(ctx, view))
    n = len(pieces)
    rects, matches = match_pieces(pieces, grid, ctx.options["match_iou"])
    _, label = components(n, [(i, j) for i in range(n) for _, j in matches[i]])
    ty0, tx0, ty1, tx1 = touched_windows(grid, pieces.y0, pieces.x0, pieces.y1, pieces.x1)
    n_groups = label.max() + 1 if n else 0
    gy0 = np.full(n_groups, ny)
    gx0 = np.full(n_groups, nx)
    gy1 = np.full(n_groups, -1)
    gx1 = np.full(n_groups, -1)
    np.minimum.at(gy0, label, ty0)
    np.minimum.at(gx0, label, tx0)
    np.maximum.at(gy1, label, ty1)
    np.maximum.at(gx1, label, tx1)
    complete = (gy0 >= iy - r) & (gy1 <= iy + r) & (gx0 >= ix - r) & (gx1 <= ix + r)
    home = complete & (np.maximum(gy1 - r, 0) == iy) & (np.maximum(gx1 - r, 0) == ix)

    uids = uid_of(grid, pieces.tile_iy, pieces.tile_ix, pieces.det)
    nodes = np.flatnonzero(home[label]) if n else np.zeros(0, np.int64)
    chosen = decide(matches, pieces.in_core, pieces.cut, owned_rank_key(pieces, rects), nodes)
    brightness = _brightness(ctx)
    records = [assemble(pieces, i, extra, brightness) for i, extra in chosen]
    objects = _object_rows(ctx, records, [uids[i] for i, _ in chosen],
                           [depth(pieces, rects, i) for i, _ in chosen])
    outputs = {ctx.path("objects", tile_name(iy, ix) + ".arrow"): _table_bytes(objects)}

    # This window's pieces whose group may reach beyond any neighbourhood.
    own = (pieces.tile_iy == iy) & (pieces.tile_ix == ix)
    report = np.flatnonzero(own & ~complete[label]) if n else np.zeros(0, np.int64)
    candidates = pa.table({
        "uid": uids[report], "in_core": pieces.in_core[report], "cut": pieces.cut[report],
        "score": pieces.score[report],
        "depth": np.array([depth(pieces, rects, i) for i in report], dtype=np.int64),
        "ty0": ty0[report], "tx0": tx0[report], "ty1": ty1[report], "tx1": tx1[report],
        "y0": pieces.y0[report].astype(np.int64), "x0": pieces.x0[report].astype(np.int64),
        "y1": pieces.y1[report].astype(np.int64), "x1": pieces.x1[report].astype(np.int64),
        "match_uid": pa.array([[int(uids[j]) for _, j in matches[i]] for i in report],
                              type=pa.list_(pa.int64())),
        "match_iou": pa.array([[iou for iou, _ in matches[i]] for i in report],
                              type=pa.list_(pa.float64())),
    })
    if len(report):
        outputs[ctx.path("candidates", tile_name(iy, ix) + ".arrow")] = _table_bytes(candidates)
    storage.put_many(outputs)
    return {"objects": objects.num_rows, "candidates": int(len(report))}


def large_task(ctx, windows):
    """Decide the groups that no window's neighbourhood holds whole.

    Every piece of such a group was reported by its own window, with all its
    matches; a group with an unreported member is therefore one that some
    neighbourhood holds whole, and is left to its home window.

    Returns
    -------
    list of dict
        One small record per large object: its owner piece ``uid``, its
        members and its box.
    """
    grid = ctx.grid
    r = reach(grid)
    tables = _read_tables([ctx.path("candidates", tile_name(iy, ix) + ".arrow")
                           for iy, ix in windows], missing_ok=False)
    if not tables:
        return []
    table = pa.concat_tables(tables).sort_by("uid")
    c = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
         if not name.startswith("match_")}
    match_uid = table.column("match_uid").to_pylist()
    match_iou = table.column("match_iou").to_pylist()
    n = len(c["uid"])
    index = {int(u): k for k, u in enumerate(c["uid"])}
    matches = [[] for _ in range(n)]
    open_ended = np.zeros(n, dtype=bool)
    for k in range(n):
        for u, iou in zip(match_uid[k], match_iou[k]):
            if u in index:
                matches[k].append((iou, index[u]))
            else:
                open_ended[k] = True
        matches[k].sort(key=lambda m: m[1])
    n_groups, label = components(n, [(i, j) for i in range(n) for _, j in matches[i]])
    out = []
    for g in range(n_groups):
        members = np.flatnonzero(label == g)
        if open_ended[members].any():
            continue
        span_y = c["ty1"][members].max() - c["ty0"][members].min()
        span_x = c["tx1"][members].max() - c["tx0"][members].min()
        if span_y <= 2 * r and span_x <= 2 * r:
            continue  # a neighbourhood holds it whole: its home window resolved it
        chosen = decide(matches, c["in_core"], c["cut"],
                        lambda i: (-c["depth"][i], -c["score"][i], i), members)
        for i, extra in chosen:
            parts = [i] + sorted(extra)
            out.append({"uid": int(c["uid"][i]), "members": [int(c["uid"][m]) for m in parts],
                        "box": [int(c["y0"][parts].min()), int(c["x0"][parts].min()),
                                int(c["y1"][parts].max()), int(c["x1"][parts].max())]})
    return out


def assemble_task(ctx, iy, ix, plan):
    """Masks and anchors of the large objects whose owner piece is in window ``(iy, ix)``."""
    grid = ctx.grid
    windows = sorted({window_of_uid(grid, u) for record in plan for u in record["members"]})
    pieces = Pieces(_windows_pieces(ctx, windows))
    uids = uid_of(grid, pieces.tile_iy, pieces.tile_ix, pieces.det)
    index = {int(u): k for k, u in enumerate(uids)}
    rects = _window_rects(pieces, grid)
    brightness = _brightness(ctx)
    records, owners, depths = [], [], []
    for record in plan:
        i = index[record["uid"]]
        records.append(assemble(pieces, i, [index[u] for u in record["members"][1:]],
                                brightness))
        owners.append(record["uid"])
        depths.append(depth(pieces, rects, i))
    objects = _object_rows(ctx, records, owners, depths)
    _put_table(ctx.path("objects", f"large-{iy:05d}-{ix:05d}.arrow"), objects)
    return [{"uid": int(u), "box": [int(v) for v in (o["y0"], o["x0"], o["y1"], o["x1"])],
             "anchor_y": int(o["anchor_y"])}
            for u, o in zip(owners, objects.select(["y0", "x0", "y1", "x1", "anchor_y"])
                            .to_pylist())]


def _objects_near(ctx, cy, cx, large_files, columns=None):
    """Objects whose box grown by one pixel meets chunk ``(cy, cx)``.

    From the resolving windows around the chunk plus the listed large-object files.
    """
    locations = _near_locations(ctx, cy, cx, large_files)
    return _meeting(ctx, cy, cx, _read_tables(locations, columns=columns, missing_ok=False))


def _near_locations(ctx, cy, cx, large_files):
    """The object tables that may hold objects meeting chunk ``(cy, cx)``."""
    ny, nx = ctx.grid.shape
    d = spread(ctx.grid)
    names = [tile_name(vy, vx) for vy in range(max(cy - d, 0), min(cy + d, ny - 1) + 1)
             for vx in range(max(cx - d, 0), min(cx + d, nx - 1) + 1)] + list(large_files)
    return [ctx.path("objects", name + ".arrow") for name in names]


def _meeting(ctx, cy, cx, tables):
    """``(table, ys, xs)``: the rows of ``tables`` whose box grown by one pixel meets
    chunk ``(cy, cx)``, and the chunk's slices."""
    table = pa.concat_tables(tables)
    ys, xs = ctx.grid.core_slices(cy, cx)
    y0, x0 = table["y0"].to_numpy(), table["x0"].to_numpy()
    y1, x1 = table["y1"].to_numpy(), table["x1"].to_numpy()
    meet = (y0 <= ys.stop) & (y1 >= ys.start) & (x0 <= xs.stop) & (x1 >= xs.start)
    return table.filter(pa.array(meet)), ys, xs


def _columns(table):
    return {name: table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names if name != "mask"}


def _masks(table, c):
    packed = table.column("mask").to_pylist()
    return [decode_mask(p, int(c["y1"][k] - c["y0"][k]), int(c["x1"][k] - c["x0"][k]))
            for k, p in enumerate(packed)]


def _paint(table, c, values, ys, xs):
    from .products import paint

    order = paint_order(c)[::-1]  # lowest priority first, the top one last
    masks = _masks(table, c)
    return paint([(c["y0"][k], c["x0"][k], c["y1"][k], c["x1"][k]) for k in order],
                 [masks[k] for k in order], [values[k] for k in order], ys, xs), masks


def visible_task(ctx, cy, cx, large_files):
    """Objects that keep a pixel of chunk ``(cy, cx)`` that no object ranked above them in
    hiding order and centred near them covers: the others are hidden
    (:func:`astrodask.merging.stitch.drop_hidden`)."""
    table, ys, xs = _objects_near(ctx, cy, cx, large_files)
    c = _columns(table)
    masks = _masks(table, c)
    boxes = (c["y0"], c["x0"], c["y1"], c["x1"])
    rank = np.empty(table.num_rows, dtype=np.int64)
    rank[hiding_order(c)] = np.arange(table.num_rows)
    shown = np.flatnonzero(uncovered(masks, *boxes, hiding_pairs(masks, *boxes), rank,
                                     region=(ys, xs)))
    storage.put_bytes(ctx.path("visible", tile_name(cy, cx) + ".bin"),
                      np.sort(c["uid"][shown]).astype("<i8").tobytes())
    return {"visible": int(len(shown))}


def painted_task(ctx, cy, cx, large_files):
    """Objects that keep a pixel of chunk ``(cy, cx)`` when the ones not hidden (``visible``
    somewhere) are painted in painting order; an object that keeps none would be an empty
    segment (:func:`astrodask.merging.stitch.drop_hidden`)."""
    table, ys, xs = _objects_near(ctx, cy, cx, large_files)
    c = _columns(table)
    core = ctx.grid.core
    spans = [[(vy, vx) for vy in range(y0 // core, (y1 - 1) // core + 1)
              for vx in range(x0 // core, (x1 - 1) // core + 1)]
             for y0, x0, y1, x1 in zip(c["y0"], c["x0"], c["y1"], c["x1"])]
    chunks = sorted({chunk for span in spans for chunk in span})
    lists = dict(zip(chunks, _read_ids([ctx.path("visible", tile_name(vy, vx) + ".bin")
                                        for vy, vx in chunks])))
    keep = np.array([any(np.isin(uid, lists[chunk]) for chunk in span)
                     for uid, span in zip(c["uid"], spans)], dtype=bool)
    table = table.filter(pa.array(keep))
    c = _columns(table)
    labels, _ = _paint(table, c, np.arange(1, table.num_rows + 1), ys, xs)
    shown = np.unique(labels[labels > 0]) - 1
    storage.put_bytes(ctx.path("painted", tile_name(cy, cx) + ".bin"),
                      np.sort(c["uid"][shown]).astype("<i8").tobytes())
    return {"painted": int(len(shown))}


def _read_ids(locations):
    """The ID lists at ``locations``, fetched together; empty for a missing one."""
    return [np.zeros(0, "<i8") if data is None else np.frombuffer(data, dtype="<i8")
            for data in storage.get_many(locations)]


def _block_rows(ctx, block, rows_per_block):
    ny = ctx.grid.shape[0]
    return block * rows_per_block, min((block + 1) * rows_per_block, ny)


def order_task(ctx, block, rows_per_block, chunk_rows, large_files):
    """The visible objects anchored in a block of window rows, in ID order.

    ``chunk_rows`` ``(lo, hi)``: the chunk rows that these objects can meet.
    """
    grid = ctx.grid
    ny, nx = grid.shape
    r0, r1 = _block_rows(ctx, block, rows_per_block)
    d = spread(grid)
    names = [tile_name(vy, vx) for vy in range(max(r0 - d, 0), min(r1 - 1 + d, ny - 1) + 1)
             for vx in range(nx)] + list(large_files)
    table = pa.concat_tables(_read_tables([ctx.path("objects", name + ".arrow") for name in names],
                                          columns=SMALL_COLUMNS, missing_ok=False))
    row = table["anchor_y"].to_numpy() // grid.core
    table = table.filter(pa.array((row >= r0) & (row < r1)))
    lo, hi = chunk_rows
    shown = np.concatenate(_read_ids([ctx.path("painted", tile_name(vy, vx) + ".bin")
                                      for vy in range(lo, hi + 1) for vx in range(nx)])
                           + [np.zeros(0, "<i8")])
    table = table.filter(pa.array(np.isin(table["uid"].to_numpy(), shown)))
    table = table.take(pa.array(np.lexsort(sort_columns(_columns(table)))))
    _put_table(ctx.path("blocks", f"block-{block:05d}.arrow"), table)
    return {"objects": table.num_rows}


def paint_task(ctx, cy, cx, large_files, blocks):
    """Chunk ``(cy, cx)`` of the segmentation map with final IDs, its sums and touching pairs.

    ``blocks``: ``[(block, first_id), ...]`` whose objects may meet this chunk.
    """
    import zarr

    from ..measure import measure_chunk, measure_margin

    near = _near_locations(ctx, cy, cx, large_files)
    tables = _read_tables(near + [ctx.path("blocks", f"block-{block:05d}.arrow")
                                  for block, _ in blocks], missing_ok=False)
    table, ys, xs = _meeting(ctx, cy, cx, tables[:len(near)])
    ids_of = {}
    for (_, first_id), block_table in zip(blocks, tables[len(near):]):
        uids = block_table["uid"].to_numpy()
        ids_of.update(zip(uids.tolist(), range(first_id, first_id + len(uids))))
    uid = table["uid"].to_numpy()
    keep = np.array([u in ids_of for u in uid.tolist()], dtype=bool)
    table = table.filter(pa.array(keep))
    c = _columns(table)
    ids = np.array([ids_of[u] for u in c["uid"].tolist()], dtype=np.int64)
    c["uid"] = ids  # within a chunk, ID order is the objects' order
    labels, masks = _paint(table, c, ids, ys, xs)
    segmap = zarr.open_group(ctx.path("segmap.zarr"), mode="r+")["labels"]

    def write_segmap():
        segmap[ys, xs] = labels

    sigma = ctx.options.get("irregular_centroid_sigma")
    read = {}
    if labels.any():
        # The pixels the sums need, read while the chunk's labels are written: on an
        # object store their requests then wait together (storage.map_requests).
        mosaic = _mosaic(ctx)
        reach = measure_margin(sigma)
        read = {"image": (mosaic.array("image"), reach), "mask": (mosaic.array("mask"), reach)}
        if mosaic.has_weight:
            read["weight"] = (mosaic.array("weight"), 0)
        if ctx.unet:
            from .products import open_unet

            read["unet"] = (open_unet(Results(ctx.results))["mean"], 0)
    jobs = [write_segmap] + [partial(Block, array, ys, xs, margin)
                             for array, margin in read.values()]
    pixels = dict(zip(read, storage.map_requests([ctx.mosaic, ctx.results], lambda job: job(),
                                                 jobs)[1:]))
    result = {"sums": False, "edges": 0}
    outputs = {}
    if labels.any():
        sums = measure_chunk(labels, ys, xs, pixels["image"], pixels["mask"],
                             pixels.get("weight"), pixels.get("unet"),
                             saturation=[mosaic.saturation[b] for b in mosaic.bands],
                             anchors=(ids, c["anchor_y"], c["anchor_x"]), sigma=sigma)
        columns = {}
        for name, value in sums.items():
            columns[name] = list(value) if value.ndim == 2 else value
        outputs[ctx.path("sums", tile_name(cy, cx) + ".arrow")] = _table_bytes(pa.table(columns))
        result["sums"] = True

    pairs = _touching_pairs(c, ids, masks, ys, xs)
    if pairs:
        outputs[ctx.path("edges", tile_name(cy, cx) + ".bin")] = np.array(pairs, "<i8").tobytes()
    storage.put_many(outputs)
    result["edges"] = len(pairs)
    return result


def _touching_pairs(c, ids, masks, ys, xs):
    """ID pairs ``(a, b)``, ``a < b``, whose masks touch (8-connected) inside a chunk.

    A pair is found in the chunk that holds the pixel of ``b`` next to ``a``;
    the pairs come in ID order.
    """
    from scipy import ndimage

    rank = np.argsort(np.argsort(ids))
    candidates = box_pairs(c["y0"], c["x0"], c["y1"], c["x1"], margin=1)
    # orient each pair lower ID first, in the order (rank of a, rank of b)
    swap = rank[candidates[:, 0]] > rank[candidates[:, 1]]
    candidates[swap] = candidates[swap][:, ::-1]
    candidates = candidates[np.lexsort((rank[candidates[:, 1]], rank[candidates[:, 0]]))]
    pairs, grown = [], {}
    for a, b in candidates:
        box = (c["y0"][a] - 1, c["x0"][a] - 1, c["y1"][a] + 1, c["x1"][a] + 1)
        sy0, sx0 = max(box[0], ys.start), max(box[1], xs.start)  # grown box within the chunk
        sy1, sx1 = min(box[2], ys.stop), min(box[3], xs.stop)
        if sy1 <= sy0 or sx1 <= sx0 or not (c["y0"][b] < sy1 and c["y1"][b] > sy0
                                             and c["x0"][b] < sx1 and c["x1"][b] > sx0):
            continue
        if a not in grown:
            grown[a] = ndimage.binary_dilation(np.pad(masks[a], 1),
                                               structure=np.ones((3, 3), bool))
        here = grown[a][sy0 - box[0]:sy1 - box[0], sx0 - box[1]:sx1 - box[1]]
        other = mask_in_box(masks[b], c["y0"][b], c["x0"][b], sy0, sx0, sy1, sx1)
        if (here & other).any():
            pairs.append((ids[a], ids[b]))
    return pairs


def families_task(ctx, chunks):
    """Blend families over the touching pairs of ``chunks``: parent = smallest ID."""
    pairs = np.concatenate(_read_ids([ctx.path("edges", tile_name(cy, cx) + ".bin")
                                      for cy, cx in chunks])
                           + [np.zeros(0, "<i8")]).reshape(-1, 2)
    nodes, inverse = np.unique(pairs, return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    n = len(nodes)
    if n == 0:
        _put_table(ctx.path("families.arrow"), pa.table(
            {"id": nodes, "parent_id": nodes, "family_size": np.zeros(0, np.int32)}))
        return {"blended": 0}
    _, label = components(n, inverse)
    table = pa.table({"id": nodes, "parent_id": smallest_member(label, nodes),
                      "family_size": np.bincount(label)[label].astype(np.int32)})
    _put_table(ctx.path("families.arrow"), table)
    return {"blended": n}


def catalog_task(ctx, block, first_id, chunk_rows, provenance):
    """Measure the objects of one block and write its catalog part."""
    import json

    import pyarrow.compute as pc
    import zarr

    from ..measure import Accumulator
    from .products import MergeOptions, catalog_counts, catalog_table, open_unet
    from .stitch import Objects

    grid = ctx.grid
    nx = grid.shape[1]
    mosaic = _mosaic(ctx)
    lo, hi = chunk_rows
    # One request round for all the task reads: its block, the chunks' sums, the families.
    sums_files = [ctx.path("sums", tile_name(cy, cx) + ".arrow")
                  for cy in range(lo, hi + 1) for cx in range(nx)]
    table, families, *sums_tables = _read_tables(
        [ctx.path("blocks", f"block-{block:05d}.arrow"), ctx.path("families.arrow")]
        + sums_files, missing_ok=[False, False] + [True] * len(sums_files))
    c = _columns(table)
    n = table.num_rows
    unet = open_unet(Results(ctx.results)) if ctx.unet else None
    accumulator = Accumulator(n, len(mosaic.bands),
                              n_classes=unet["mean"].shape[0] if unet is not None else None,
                              with_weight=mosaic.has_weight)
    for sums in sums_tables:  # row-major, as the single-process merge adds them
        if sums is None:
            continue
        local = sums["id"].to_numpy() - (first_id - 1)
        inside = (local >= 1) & (local <= n)
        if not inside.any():
            continue
        part = {"id": local[inside]}
        for name in sums.column_names:
            if name == "id":
                continue
            column = sums[name]
            value = (np.array(column.to_pylist(), dtype=np.float64)
                     if pa.types.is_list(column.type) else column.to_numpy())
            part[name] = value[inside]
        accumulator.add(part)
    families = families.filter(pc.and_(pc.greater_equal(families["id"], first_id),
                                       pc.less(families["id"], first_id + n)))
    parent = np.arange(first_id, first_id + n, dtype=np.int64)
    size = np.ones(n, dtype=np.int32)
    where = families["id"].to_numpy() - first_id
    parent[where] = families["parent_id"].to_numpy()
    size[where] = families["family_size"].to_numpy()
    objects = Objects(y0=c["y0"], x0=c["x0"], y1=c["y1"], x1=c["x1"], masks=[None] * n,
                      class_id=c["class_id"], score=c["score"], anchor_y=c["anchor_y"],
                      anchor_x=c["anchor_x"], n_pieces=c["n_pieces"], cut=c["cut"],
                      centre_y=c["centre_y"], centre_x=c["centre_x"],
                      parent_id=parent, family_size=size)
    labels = zarr.open_group(ctx.path("segmap.zarr"), mode="r")["labels"]
    part = catalog_table(mosaic, objects, accumulator, unet, MergeOptions(**ctx.options),
                         labels, first_id=first_id)
    metadata = dict(part.schema.metadata or {})
    metadata[b"astrodask"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    part = part.replace_schema_metadata(metadata)
    storage.put_bytes(ctx.path("catalog", f"part-{block:05d}.parquet"),
                      storage.parquet_bytes(part))
    return {"rows": n, **catalog_counts(part)}
