"""Ownership and stitching: pieces from overlapping windows → one set of objects.

Rules (see ``../shared/FIELD_NOTES.md`` for what StarDist, Cellpose and
dask-image do at seams and where each breaks):

1. **Ownership.** An object is kept by the window whose half-open core holds
   its anchor (the brightest pixel of its mask). Pieces whose anchor lies in
   their window's halo are never objects by themselves: the owning window
   decides whether there is an object.
2. **Matching.** The same object seen from two windows may come out slightly
   different (proposals and NMS are not local), so pieces of neighbouring
   windows are matched by mask IoU *inside the overlap of the two windows*,
   not by equality.
3. **Duplicates.** Two owned pieces that match (their anchors moved between
   views) are one object: the piece whose anchor lies deepest inside its
   window (most context) is kept.
4. **Stitching.** An owned piece cut by a window edge inside the mosaic is
   extended by the matching pieces of the neighbouring windows, transitively,
   so objects larger than the halo (or than a window) come out whole.

Global IDs are assigned by sorting objects on their anchor, so the same
pieces give the same IDs whatever the worker count or completion order.
"""

from dataclasses import dataclass, field

import numpy as np

#: Pieces of two windows match when their masks' IoU within the windows' overlap reaches this.
MATCH_IOU = 0.5


@dataclass
class Objects:
    """Merged objects, sorted by ID (``id = index + 1``).

    Attributes
    ----------
    y0, x0, y1, x1 : ndarray of int64
        Half-open bounding boxes (mosaic pixels).
    masks : list of ndarray of bool
        Each object's mask over its box.
    class_id : ndarray of int8
        1 star, 2 galaxy, 0 unclassified.
    score : ndarray of float32
    anchor_y, anchor_x : ndarray of int64
    n_pieces : ndarray of int32
        Pieces (windows) the object was assembled from.
    cut : ndarray of bool
        The owning window's piece was cut by a window edge (so it was stitched).
    centre_y, centre_x : ndarray of float64
        The owning piece's centre from the centre network (mosaic pixels; NaN
        where the detector has none): the catalog's position where finite.
    vouched : ndarray of bool
        The owning piece scored under the catalog cut but its S/N vouched for
        it (:mod:`astrodask.merging.weak`): it stays in the catalog.
    """

    y0: np.ndarray
    x0: np.ndarray
    y1: np.ndarray
    x1: np.ndarray
    masks: list
    class_id: np.ndarray
    score: np.ndarray
    anchor_y: np.ndarray
    anchor_x: np.ndarray
    n_pieces: np.ndarray
    cut: np.ndarray
    centre_y: np.ndarray = field(default=None)
    centre_x: np.ndarray = field(default=None)
    vouched: np.ndarray = field(default=None)
    parent_id: np.ndarray = field(default=None)
    family_size: np.ndarray = field(default=None)

    def __len__(self):
        return len(self.masks)

    @property
    def ids(self):
        return np.arange(1, len(self) + 1, dtype=np.int64)


def _window_rects(pieces, grid):
    """Mosaic rectangle (clipped) of each piece's window: (n, 4) y0, x0, y1, x1."""
    t, core, halo = grid.tile, grid.core, grid.halo
    wy0 = pieces.tile_iy.astype(np.int64) * core - halo
    wx0 = pieces.tile_ix.astype(np.int64) * core - halo
    return np.stack([np.maximum(wy0, 0), np.maximum(wx0, 0),
                     np.minimum(wy0 + t, grid.height), np.minimum(wx0 + t, grid.width)], axis=1)


def box_pairs(y0, x0, y1, x1, margin=0):
    """Index pairs ``(i, j)``, ``i < j``, of half-open boxes that meet once grown by ``margin``.

    Parameters
    ----------
    y0, x0, y1, x1 : array_like of int, shape (n,)
        The boxes.
    margin : int
        Pixels added to the far edges of the first box of a pair: ``1`` also
        pairs boxes that only touch.

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Sorted lexicographically.
    """
    y0, x0, y1, x1 = (np.asarray(a, dtype=np.int64) for a in (y0, x0, y1, x1))
    order = np.argsort(y0, kind="stable")
    sy0, sy1, sx0, sx1 = y0[order], y1[order], x0[order], x1[order]
    # Sweep along y: only boxes starting before this one ends (plus margin) can meet it.
    ends = np.searchsorted(sy0, sy1 + margin, side="left")
    found = []
    for a in range(len(order)):
        b = np.arange(a + 1, ends[a])
        meet = (sx0[b] < sx1[a] + margin) & (sx0[a] < sx1[b] + margin)
        if meet.any():
            i, j = order[a], order[b[meet]]
            found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def candidate_pairs(pieces):
    """Index pairs ``(i, j)``, ``i < j``, of pieces from different windows whose boxes meet."""
    pairs = box_pairs(pieces.y0, pieces.x0, pieces.y1, pieces.x1)
    iy, ix = pieces.tile_iy, pieces.tile_ix
    other = (iy[pairs[:, 0]] != iy[pairs[:, 1]]) | (ix[pairs[:, 0]] != ix[pairs[:, 1]])
    return pairs[other]


def components(n, pairs):
    """Connected components of the graph of ``n`` nodes with edges ``pairs``.

    Returns
    -------
    n_components : int
    label : ndarray of int, shape (n,)
        Component of each node, numbered in the order of each component's
        lowest node (so the labelling depends only on the graph).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)


def smallest_member(label, values):
    """For each node, the smallest ``values`` entry over its component."""
    values = np.asarray(values)
    if not len(values):
        return values.copy()
    smallest = np.full(int(label.max()) + 1, np.iinfo(values.dtype).max, dtype=values.dtype)
    np.minimum.at(smallest, label, values)
    return smallest[label]


def overlap_iou(pieces, rects, i, j):
    """IoU of pieces ``i`` and ``j`` restricted to the overlap of their two windows."""
    ry0, rx0 = max(rects[i, 0], rects[j, 0]), max(rects[i, 1], rects[j, 1])
    ry1, rx1 = min(rects[i, 2], rects[j, 2]), min(rects[i, 3], rects[j, 3])
    # the part of the overlap that either box covers
    uy0 = max(ry0, min(pieces.y0[i], pieces.y0[j]))
    ux0 = max(rx0, min(pieces.x0[i], pieces.x0[j]))
    uy1 = min(ry1, max(pieces.y1[i], pieces.y1[j]))
    ux1 = min(rx1, max(pieces.x1[i], pieces.x1[j]))
    if uy1 <= uy0 or ux1 <= ux0:
        return 0.0
    a = mask_in_box(pieces.mask(i), pieces.y0[i], pieces.x0[i], uy0, ux0, uy1, ux1)
    b = mask_in_box(pieces.mask(j), pieces.y0[j], pieces.x0[j], uy0, ux0, uy1, ux1)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def mask_in_box(mask, mask_y0, mask_x0, y0, x0, y1, x1):
    """A mask whose first pixel sits at ``(mask_y0, mask_x0)``, cut or padded to a box.

    Returns a boolean array over ``[y0, y1) x [x0, x1)`` (mosaic pixels).
    """
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    my1, mx1 = mask_y0 + mask.shape[0], mask_x0 + mask.shape[1]
    sy0, sx0 = max(y0, mask_y0), max(x0, mask_x0)
    sy1, sx1 = min(y1, my1), min(x1, mx1)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = \
            mask[sy0 - mask_y0:sy1 - mask_y0, sx0 - mask_x0:sx1 - mask_x0]
    return out


def depth(pieces, rects, i):
    """Distance of the anchor from the nearest edge of its window (more = more context)."""
    return min(pieces.anchor_y[i] - rects[i, 0], rects[i, 2] - 1 - pieces.anchor_y[i],
               pieces.anchor_x[i] - rects[i, 1], rects[i, 3] - 1 - pieces.anchor_x[i])


def match_pieces(pieces, grid, match_iou=MATCH_IOU):
    """The match graph of pieces: who matches whom, and each piece's window.

    Parameters
    ----------
    pieces : Pieces
        Sorted by window then detection (as :class:`Pieces` sorts them), so
        that index order is the global order of pieces.
    grid : TileGrid
    match_iou : float
        Matching threshold (IoU within the windows' overlap).

    Returns
    -------
    rects : ndarray, shape (n, 4)
        Each piece's window rectangle (clipped to the mosaic).
    matches : list of list of (float, int)
        For each piece, ``(iou, j)`` for every piece ``j`` it matches, ``j``
        ascending.
    """
    rects = _window_rects(pieces, grid)
    matches = [[] for _ in range(len(pieces))]
    for i, j in candidate_pairs(pieces):
        iou = overlap_iou(pieces, rects, i, j)
        if iou >= match_iou:
            matches[i].append((iou, j))
            matches[j].append((iou, i))
    return rects, matches


def decide(matches, in_core, cut, rank_key, nodes=None):
    """Which pieces become objects, and which pieces extend each of them.

    Rules 3 and 4 of this module over a match graph; only small per-piece
    values are needed (no masks), so the same function resolves a window's
    neighbourhood and the global step over objects that span many windows.
    The outcome for a connected component of the match graph depends only on
    that component.

    Parameters
    ----------
    matches : sequence of list of (float, int)
        As returned by :func:`match_pieces` (node indices in global order).
    in_core, cut : sequence of bool
        Per node.
    rank_key : callable
        ``rank_key(i)`` of an owned node: lower keeps first among duplicates.
    nodes : iterable of int, optional
        Decide only for these nodes (whole connected components); default all.

    Returns
    -------
    list of (int, list of int)
        ``(kept node, extending nodes)`` in keeping order.
    """
    nodes = range(len(matches)) if nodes is None else sorted(nodes)
    owned = [i for i in nodes if in_core[i]]
    # Duplicates: matching owned pieces; keep the deepest anchor (ties: score, then order).
    rank = sorted(owned, key=rank_key)
    kept, dropped = [], set()
    for i in rank:
        if i in dropped:
            continue
        kept.append(i)
        dropped.update(j for _, j in matches[i] if in_core[j])

    # Stitching: each non-owned piece extends at most one object (its best match).
    claimed = {}
    for i in kept:
        if not cut[i]:
            continue
        frontier, seen = [i], {i}
        while frontier:
            k = frontier.pop()
            for iou, j in matches[k]:
                if j in seen or in_core[j]:
                    continue
                seen.add(j)
                if iou > claimed.get(j, (0.0, None))[0]:
                    claimed[j] = (iou, i)
                if cut[j]:
                    frontier.append(j)
    extensions = {i: [] for i in kept}
    for j, (_, i) in sorted(claimed.items()):
        extensions[i].append(j)
    return [(i, extensions[i]) for i in kept]


def owned_rank_key(pieces, rects):
    """Keeping order of owned pieces: deepest anchor, then score, then index."""
    return lambda i: (-depth(pieces, rects, i), -pieces.score[i], i)


def resolve(pieces, grid, brightness=None, match_iou=MATCH_IOU):
    """Turn pieces into objects with the rules of this module.

    Parameters
    ----------
    pieces : Pieces
    grid : TileGrid
    brightness : callable, optional
        ``brightness(y0, x0, y1, x1) -> ndarray`` of the detection image, used to
        re-pick the anchor of stitched objects; without it the owned piece's
        anchor is kept.
    match_iou : float
        Matching threshold (IoU within the windows' overlap).

    Returns
    -------
    Objects
    """
    rects, matches = match_pieces(pieces, grid, match_iou)
    chosen = decide(matches, pieces.in_core, pieces.cut, owned_rank_key(pieces, rects))
    records = [assemble(pieces, i, extra, brightness) for i, extra in chosen]
    records.sort(key=lambda r: (r["anchor_y"], r["anchor_x"], r["class_id"], -r["score"]))
    return _objects(records)


def assemble(pieces, i, extra, brightness):
    """Object record from owned piece ``i`` and the pieces ``extra`` that extend it."""
    members = [i] + sorted(extra)
    y0 = min(int(pieces.y0[m]) for m in members)
    x0 = min(int(pieces.x0[m]) for m in members)
    y1 = max(int(pieces.y1[m]) for m in members)
    x1 = max(int(pieces.x1[m]) for m in members)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for m in members:
        mask[pieces.y0[m] - y0:pieces.y1[m] - y0, pieces.x0[m] - x0:pieces.x1[m] - x0] |= \
            pieces.mask(m)
    anchor_y, anchor_x = int(pieces.anchor_y[i]), int(pieces.anchor_x[i])
    if extra and brightness is not None:
        image = np.where(mask, brightness(y0, x0, y1, x1), -np.inf)
        ay, ax = np.unravel_index(int(np.argmax(image)), image.shape)
        anchor_y, anchor_x = y0 + int(ay), x0 + int(ax)
    return dict(y0=y0, x0=x0, y1=y1, x1=x1, mask=mask, class_id=int(pieces.class_id[i]),
                score=float(pieces.score[i]), anchor_y=anchor_y, anchor_x=anchor_x,
                n_pieces=len(members), cut=bool(pieces.cut[i]),
                centre_y=float(pieces.centre_y[i]), centre_x=float(pieces.centre_x[i]),
                vouched=bool(pieces.vouched[i]))


def _objects(records):
    def column(name, dtype):
        return np.array([r[name] for r in records], dtype=dtype)

    return Objects(y0=column("y0", np.int64), x0=column("x0", np.int64),
                   y1=column("y1", np.int64), x1=column("x1", np.int64),
                   masks=[r["mask"] for r in records], class_id=column("class_id", np.int8),
                   score=column("score", np.float32), anchor_y=column("anchor_y", np.int64),
                   anchor_x=column("anchor_x", np.int64), n_pieces=column("n_pieces", np.int32),
                   cut=column("cut", bool), centre_y=column("centre_y", np.float64),
                   centre_x=column("centre_x", np.float64), vouched=column("vouched", bool))


def _object_pairs(objects, margin):
    return box_pairs(objects.y0, objects.x0, objects.y1, objects.x1, margin)


def _in_box(objects, j, y0, x0, y1, x1):
    """Object ``j``'s mask pasted into the box ``[y0, y1) x [x0, x1)``."""
    return mask_in_box(objects.masks[j], objects.y0[j], objects.x0[j], y0, x0, y1, x1)


def hiding_priority(objects):
    """Rank of each object when deciding which objects are hidden (0 = on top).

    Higher score wins; at equal score the smaller mask wins; then the lower
    ID. An object whose whole mask lies under objects ranked above it here is
    another proposal for them (a knot, a nested second box), not a source.
    """
    return _rank(objects, by_score_first=True)


def paint_priority(objects):
    """Rank of each object when painting the exclusive map (0 = on top).

    The smaller mask wins, then the higher score, then the lower ID: a compact
    source on or beside an extended one keeps its own core, whichever of the
    two the detector scored higher (painted by score, a companion lying on a
    bright galaxy's mask kept only its far side, and its centroid and flux
    went with it). Which objects are hidden is decided by score
    (:func:`hiding_priority`, :func:`drop_hidden`).
    """
    return _rank(objects, by_score_first=False)


def _rank(objects, by_score_first):
    areas = np.array([np.count_nonzero(m) for m in objects.masks], dtype=np.int64)
    score = -objects.score.astype(np.float64)
    keys = (areas, score) if by_score_first else (score, areas)
    order = np.lexsort((np.arange(len(objects)),) + keys)
    rank = np.empty(len(objects), dtype=np.int64)
    rank[order] = np.arange(len(objects))
    return rank


#: A mask wholly under higher-scored ones is another proposal for the same source (hidden)
#: only when its centre lies within this fraction of the larger mask's radius
#: (``sqrt(area / pi)``), or within :data:`SAME_SOURCE_MIN_PX`, of the other's centre;
#: farther out it is a companion on the larger one's outskirts and stays. Chosen on the
#: ``hst`` validation mosaics (BENCHMARKS.md): 0.3-0.7 all gain, 0.5 is the plateau's middle.
SAME_SOURCE_RADIUS = 0.5
SAME_SOURCE_MIN_PX = 3.0


def drop_hidden(objects):
    """Remove objects hidden by others, then those the exclusive map would leave no pixel.

    An object is hidden when objects ranked above it by score
    (:func:`hiding_priority`) and centred near it (:func:`hiding_pairs`) cover
    its whole mask: it is another proposal for the same source (a nested
    second box). Of the others, one that the exclusive map
    (:func:`paint_priority`, smaller on top) would leave without a pixel is
    dropped too, as an empty segment would be in the catalog.
    """
    boxes = (objects.y0, objects.x0, objects.y1, objects.x1)
    pairs = hiding_pairs(objects.masks, *boxes)
    kept = select_objects(objects, np.flatnonzero(
        uncovered(objects.masks, *boxes, pairs, hiding_priority(objects))))
    return select_objects(kept, np.flatnonzero(
        uncovered(kept.masks, kept.y0, kept.x0, kept.y1, kept.x1, _object_pairs(kept, 0),
                  paint_priority(kept))))


def hiding_pairs(masks, y0, x0, y1, x1):
    """Pairs ``(i, j)`` of overlapping boxes whose masks are centred near each other.

    Near: within ``max(SAME_SOURCE_MIN_PX, SAME_SOURCE_RADIUS * sqrt(A / pi))``
    pixels, ``A`` the larger mask's area; centres are the masks' mean pixels.
    """
    pairs = box_pairs(y0, x0, y1, x1)
    if not len(pairs):
        return pairs
    area = np.array([np.count_nonzero(m) for m in masks], dtype=np.float64)
    cy = np.array([np.nonzero(m)[0].mean() if a else np.nan for m, a in zip(masks, area)]) + y0
    cx = np.array([np.nonzero(m)[1].mean() if a else np.nan for m, a in zip(masks, area)]) + x0
    i, j = pairs[:, 0], pairs[:, 1]
    reach = np.maximum(SAME_SOURCE_MIN_PX,
                       SAME_SOURCE_RADIUS * np.sqrt(np.maximum(area[i], area[j]) / np.pi))
    return pairs[np.hypot(cy[i] - cy[j], cx[i] - cx[j]) <= reach]


def uncovered(masks, y0, x0, y1, x1, pairs, rank, region=None):
    """Whether each mask keeps a pixel that no paired mask ranked above it covers.

    Parameters
    ----------
    masks : list of ndarray of bool
        Each over its half-open box ``[y0, y1) x [x0, x1)`` (mosaic pixels).
    y0, x0, y1, x1 : ndarray of int
    pairs : ndarray of int, shape (k, 2)
        The pairs that may cover one another.
    rank : ndarray of int
        0 = on top.
    region : (slice, slice), optional
        Only pixels in these mosaic rows and columns count (one chunk of the map).

    Returns
    -------
    ndarray of bool
    """
    covers = {i: [] for i in range(len(masks))}
    for i, j in pairs:
        if rank[i] < rank[j]:
            covers[j].append(i)
        else:
            covers[i].append(j)
    shown = np.zeros(len(masks), dtype=bool)
    for i, mask in enumerate(masks):
        box = (y0[i], x0[i], y1[i], x1[i])
        mask = mask.copy()
        if region is not None:
            ys, xs = region
            inside = np.zeros_like(mask)
            inside[max(ys.start - box[0], 0):max(ys.stop - box[0], 0),
                   max(xs.start - box[1], 0):max(xs.stop - box[1], 0)] = True
            mask &= inside
        for j in covers[i]:
            if not mask.any():
                break
            mask &= ~mask_in_box(masks[j], y0[j], x0[j], *box)
        shown[i] = mask.any()
    return shown


def select_objects(objects, keep):
    """The objects at indices ``keep`` (in that order)."""
    keep = np.asarray(keep, dtype=np.int64)
    return Objects(y0=objects.y0[keep], x0=objects.x0[keep], y1=objects.y1[keep],
                   x1=objects.x1[keep], masks=[objects.masks[i] for i in keep],
                   class_id=objects.class_id[keep], score=objects.score[keep],
                   anchor_y=objects.anchor_y[keep], anchor_x=objects.anchor_x[keep],
                   n_pieces=objects.n_pieces[keep], cut=objects.cut[keep],
                   centre_y=objects.centre_y[keep], centre_x=objects.centre_x[keep],
                   vouched=objects.vouched[keep] if objects.vouched is not None else None)


def blend_families(objects):
    """Group objects whose masks overlap or touch (8-connected) into blend families.

    Sets ``objects.parent_id`` (the smallest ID of the family) and
    ``objects.family_size``; returns ``objects``.
    """
    from scipy import ndimage

    n = len(objects)
    grown = {}
    touching = []
    for i, j in _object_pairs(objects, 1):
        if i not in grown:
            grown[i] = ndimage.binary_dilation(np.pad(objects.masks[i], 1),
                                               structure=np.ones((3, 3), bool))
        box = (objects.y0[i] - 1, objects.x0[i] - 1, objects.y1[i] + 1, objects.x1[i] + 1)
        if (grown[i] & _in_box(objects, j, *box)).any():
            touching.append((i, j))
    _, label = components(n, touching)
    objects.parent_id = smallest_member(label, np.arange(n, dtype=np.int64)) + 1
    objects.family_size = np.bincount(label, minlength=1)[label].astype(np.int32)
    return objects
