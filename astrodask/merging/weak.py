"""Weak detections that their own photometry vouches for.

The catalog cut (``min_score``) is chosen for purity, so it also leaves out
real sources the detector was unsure of: on crowded fields mostly the fainter
member of a blend, a shoulder on a brighter neighbour's profile, whose centre
peak stays low. Below the cut a detection is still a source when its pixels
say so: a piece scored at least ``weak_min_score`` whose S/N over all bands
within its mask reaches ``weak_min_snr`` stays in the catalog (it is
*vouched for*) unless it lies mostly on a piece at or above the cut
(another proposal for that source) or, when asked, within
``weak_min_separation`` px of one, or with less than ``weak_min_contrast``
of the S/N of those it touches, or centred within ``weak_core_fraction`` of
the radius of one (its core: another proposal for it), or touching one
larger than ``weak_max_host_area`` arcsec² (a large, resolved galaxy, whose
HII regions and arm segments pass the S/N test); the others leave it as before (folded
into the source they touch, :func:`astrodask.merging.pieces.fold_faint_pieces`).
The rule is on when the options or the card (``catalog_weak_*`` keys) give
a score floor and an S/N (BENCHMARKS.md).

The S/N is measured as the catalog measures it (:mod:`astrodask.measure`:
flux summed over the mask, errors from the sky noise or the weights, with the
noise's correlation between pixels), but over the piece's own mask in its
window rather than over the exclusive segment the merge paints later.
"""

import numpy as np

from ..instances import decode_mask
from ..measure import Accumulator, chunk_sums, measurement_noise, total_snr


def rule_applies(min_score, weak_min_score, weak_min_snr):
    """Whether the rule is on: a catalog cut, a score floor and an S/N are all given."""
    return None not in (min_score, weak_min_score, weak_min_snr)


def mask_snr(mosaic, boxes, masks):
    """S/N over all bands of each mask on the mosaic's pixels.

    Parameters
    ----------
    mosaic : Mosaic
    boxes : sequence of (y0, x0, y1, x1)
        Half-open mosaic boxes (0-based) of the masks.
    masks : sequence of ndarray of bool
        Each mask over its box.

    Returns
    -------
    ndarray of float64
        ``sum(flux) / sqrt(sum(flux_err**2))`` per mask; NaN where no error
        can be given (no unflagged pixel).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    y0, x0 = boxes[:, 0].min(), boxes[:, 1].min()
    y1, x1 = boxes[:, 2].max(), boxes[:, 3].max()
    # one read of the masks' union box, then a slice per mask
    image = np.asarray(mosaic.array("image")[:, y0:y1, x0:x1])
    flags = np.asarray(mosaic.array("mask")[:, y0:y1, x0:x1])
    weight = np.asarray(mosaic.array("weight")[:, y0:y1, x0:x1]) if mosaic.has_weight else None
    accumulator = Accumulator(n, len(mosaic.bands), with_weight=mosaic.has_weight)
    for k, ((by0, bx0, by1, bx1), mask) in enumerate(zip(boxes, masks)):
        sl = (slice(None), slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
        labels = np.where(mask, k + 1, 0)
        sums = chunk_sums(labels, int(by0), int(bx0), image[sl], flags[sl],
                          weight[sl] if weight is not None else None)
        accumulator.add(sums)
    noise, correlation = measurement_noise(mosaic)
    measured = accumulator.columns(mosaic.bands, noise=noise, correlation=correlation)
    return total_snr(measured, mosaic.bands)


def vouched_pieces(table, mosaic, min_score, weak_min_score, weak_min_snr, weak_min_contrast=None,
                   weak_min_separation=None, weak_max_host_area=None, weak_core_fraction=None):
    """Which of one window's pieces under the catalog cut stay in the catalog.

    Parameters
    ----------
    table : pyarrow.Table
        One window's pieces (:data:`astrodask.instances.SCHEMA`).
    mosaic : Mosaic
    min_score : float or None
        The catalog cut; None vouches for nothing (nothing is cut).
    weak_min_score, weak_min_snr : float or None
        A piece scored in ``[weak_min_score, min_score)`` with S/N (all bands,
        within its mask) of at least ``weak_min_snr`` is vouched for, unless
        more than half of it lies on pieces at or above the cut (another
        proposal for them, which :func:`astrodask.merging.pieces.fold_faint_pieces`
        leaves to the cut); either None turns the rule off.
    weak_min_contrast : float, optional
        And, where it touches or overlaps pieces at or above the cut, its S/N
        is at least this fraction of theirs (the largest): a knot or an arm
        of a large bright galaxy reaches S/N 10 on its own but is a small
        part of its galaxy, while the fainter member of a blend is not.
    weak_min_separation : float, optional
        And its centre (the detector's, else its anchor) lies at least this
        many pixels from every piece at or above the cut: a second, weaker
        peak within about a PSF FWHM of a confident one is part of the same
        source far more often than a source of its own.
    weak_max_host_area : float, optional
        And it touches or overlaps no piece at or above the cut whose mask
        covers more than this many arcsec² (the mosaic's ``pixel_scale``;
        ignored when the mosaic has none): the knots and arms of a large,
        resolved galaxy reach S/N 10 on their own and are not sources.
    weak_core_fraction : float, optional
        And its centre lies at least this fraction of the radius
        ``sqrt(area / pi)`` from the centre of every piece at or above the cut
        (the separation growing with the piece's size): a large galaxy's
        core proposed on its own beside a confident, offset proposal for the
        whole galaxy is not a second source.

    Returns
    -------
    ndarray of bool, one per row of ``table``
    """
    vouched = np.zeros(table.num_rows, dtype=bool)
    if not rule_applies(min_score, weak_min_score, weak_min_snr):
        return vouched
    score, area = (table.column(name).to_numpy() for name in ("score", "area"))
    candidates = np.flatnonzero((score >= weak_min_score) & (score < min_score))
    if len(candidates) == 0:
        return vouched
    if weak_min_separation is not None or weak_core_fraction is not None:
        y, x = piece_centres(table)
        confident = np.flatnonzero(score >= min_score)
        if len(confident):
            distance = np.hypot(y[candidates, None] - y[None, confident],
                                x[candidates, None] - x[None, confident])
            # the least distance from each confident piece: fixed, or growing with its size
            least = np.full(len(confident), float(weak_min_separation or 0.0))
            if weak_core_fraction is not None:
                radius = np.sqrt(area[confident] / np.pi)
                least = np.maximum(least, weak_core_fraction * radius)
            candidates = candidates[(distance >= least[None, :]).all(axis=1)]
        if len(candidates) == 0:
            return vouched
    boxes, masks = _boxes_and_masks(table, candidates)
    snr = np.nan_to_num(mask_snr(mosaic, boxes, masks), nan=-np.inf)
    passing = snr >= weak_min_snr
    touched, covered = _confident_contacts(table, score >= min_score, boxes, masks, passing)
    for k, pixels in covered.items():
        # lying mostly on confident pieces: another proposal for them, as the fold says
        passing[k] &= 2 * pixels <= np.count_nonzero(masks[k])
    if weak_max_host_area is not None and mosaic.pixel_scale:
        largest = weak_max_host_area / float(mosaic.pixel_scale) ** 2   # in pixels
        for k, js in touched.items():
            passing[k] &= max(area[j] for j in js) <= largest
    if weak_min_contrast is not None and passing.any():
        touched = {k: js for k, js in touched.items() if passing[k]}
        others = sorted({j for js in touched.values() for j in js})
        if others:
            other_boxes, other_masks = _boxes_and_masks(table, np.array(others))
            other_snr = dict(zip(others, mask_snr(mosaic, other_boxes, other_masks)))
            for k, js in touched.items():
                strongest = max(np.nan_to_num(other_snr[j], nan=0.0) for j in js)
                passing[k] &= snr[k] >= weak_min_contrast * strongest
    vouched[candidates] = passing
    return vouched


def piece_centres(table):
    """Each piece's centre ``(y, x)``: the detector's where finite, else its anchor."""
    y, x = (table.column(f"centre_{a}").to_numpy() for a in ("y", "x"))
    ay, ax = (table.column(f"anchor_{a}").to_numpy().astype(np.float64) for a in ("y", "x"))
    return np.where(np.isfinite(y), y, ay), np.where(np.isfinite(x), x, ax)


def _boxes_and_masks(table, rows):
    box = {name: table.column(name).to_numpy()[rows] for name in ("y0", "x0", "y1", "x1")}
    packed = table.column("mask").take(rows).to_pylist()
    boxes = list(zip(box["y0"], box["x0"], box["y1"], box["x1"]))
    return boxes, [decode_mask(p, int(b[2] - b[0]), int(b[3] - b[1]))
                   for p, b in zip(packed, boxes)]


def _confident_contacts(table, confident, boxes, masks, which):
    """The confident pieces each candidate ``k`` (where ``which``) meets.

    Returns ``({k: [rows]}, {k: pixels})``: the confident pieces it touches
    (4-connected) or overlaps, and how many of its pixels lie on them.
    """
    from scipy import ndimage

    rows = np.flatnonzero(confident)
    c = {name: table.column(name).to_numpy()[rows] for name in ("y0", "x0", "y1", "x1")}
    decoded = {}
    touched, covered = {}, {}
    for k in np.flatnonzero(which):
        y0, x0, y1, x1 = (int(v) for v in boxes[k])
        near = np.flatnonzero((c["y0"] <= y1) & (c["y1"] >= y0) & (c["x0"] <= x1)
                              & (c["x1"] >= x0))
        if not len(near):
            continue
        grown = ndimage.binary_dilation(np.pad(masks[k], 1))  # box (y0-1, x0-1)..(y1+1, x1+1)
        under = np.zeros_like(masks[k])
        hits = []
        for i in near:
            j = int(rows[i])
            if j not in decoded:
                decoded[j] = _boxes_and_masks(table, np.array([j]))[1][0]
            oy0, ox0, oy1, ox1 = (int(c[n][i]) for n in ("y0", "x0", "y1", "x1"))
            sy0, sx0 = max(oy0, y0 - 1), max(ox0, x0 - 1)
            sy1, sx1 = min(oy1, y1 + 1), min(ox1, x1 + 1)
            if sy1 <= sy0 or sx1 <= sx0:
                continue
            mine = grown[sy0 - y0 + 1:sy1 - y0 + 1, sx0 - x0 + 1:sx1 - x0 + 1]
            theirs = decoded[j][sy0 - oy0:sy1 - oy0, sx0 - ox0:sx1 - ox0]
            if (mine & theirs).any():
                hits.append(j)
                iy0, ix0 = max(oy0, y0), max(ox0, x0)
                iy1, ix1 = min(oy1, y1), min(ox1, x1)
                if iy1 > iy0 and ix1 > ix0:
                    under[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] |= \
                        decoded[j][iy0 - oy0:iy1 - oy0, ix0 - ox0:ix1 - ox0]
        if hits:
            touched[k] = hits
            covered[k] = int(np.count_nonzero(under & masks[k]))
    return touched, covered


#: The rule's optional conditions, by their :class:`~astrodask.MergeOptions` names.
CONDITIONS = ("weak_min_contrast", "weak_min_separation", "weak_max_host_area",
              "weak_core_fraction")


def vouching(mosaic, settings):
    """The rule as ``vouch(table) -> bool array`` for one window's pieces, or None when off.

    ``settings`` maps the merge's resolved options by their
    :class:`~astrodask.MergeOptions` names (``min_score``, ``weak_min_score``,
    ``weak_min_snr`` and the :data:`CONDITIONS`; missing ones are None), as
    ``vars(options)`` or the merge's options record. See :func:`vouched_pieces`;
    the form :func:`astrodask.merging.pieces.read_window_pieces` takes.
    """
    min_score, floor, snr = (settings.get(n) for n in ("min_score", "weak_min_score",
                                                       "weak_min_snr"))
    if not rule_applies(min_score, floor, snr):
        return None
    conditions = {name: settings.get(name) for name in CONDITIONS}
    return lambda table: vouched_pieces(table, mosaic, min_score, floor, snr, **conditions)
