"""Pieces of one source, detected as objects of their own, folded back into it.

At HST resolution the star-forming knots of an irregular galaxy stand out of
its light, and the Mask R-CNN reports some of them as separate objects beside
the galaxy itself: on the `hst` validation mosaics most unmatched catalog
objects are such knots, 9 to 63 px from their galaxy's centre. The U-Net knows
irregular light when it sees it. Within one window, detections whose masks
overlap or touch (directly or through others: a blend family, as the merge
defines it) form a family; where the U-Net calls the family's largest member
irregular, every other member it also calls irregular and whose area is below
``max_area_fraction`` of the largest's is a knot: its mask joins the largest
member's and it is no longer a detection (:func:`fold_irregular_fragments`).
A compact neighbour of another class (a star, a small spheroid or disk) is
never folded.

A saturated star's bleed trails run along its columns, and the Mask R-CNN
may report pieces of them beside the star (on the `decam` masked test
mosaic, 6 of its 16 saturated objects). :func:`fold_saturated_pieces` folds
every member of a family that holds saturated pixels into the family's
largest member when that one holds saturated pixels too.

Positions are window pixels, ``(y, x)``.
"""

import numpy as np


def light_weight(brightness):
    """Non-negative light of a detection image: clipped at 0, 0 where flagged (``-inf``).

    The ``weight`` of :func:`dominant_classes` and :func:`fold_irregular_fragments`.
    """
    return np.where(np.isfinite(brightness), np.clip(brightness, 0.0, None), 0.0)


def dominant_classes(masks, probabilities, weight):
    """Each detection's largest flux-weighted U-Net class, background left out.

    Parameters
    ----------
    masks : ndarray of bool, shape (n, H, W)
    probabilities : ndarray, shape (classes, H, W)
        U-Net class probabilities over the window, background last.
    weight : ndarray, shape (H, W)
        Non-negative light (the detection image clipped at 0, 0 where flagged).

    Returns
    -------
    ndarray of int, shape (n,)
        Class index, or -1 where the mask holds no light or no finite probability.
    """
    from .models.detections import mask_box

    sources = np.nan_to_num(np.asarray(probabilities, dtype=np.float64)[:-1], nan=0.0)
    out = np.full(len(masks), -1, dtype=np.int64)
    for k, mask in enumerate(masks):
        box = mask_box(mask)
        if box is None:
            continue
        inside = mask[box]
        w = weight[box][inside]
        if not w.sum() > 0:
            continue
        totals = sources[(slice(None),) + box][:, inside] @ w
        if totals.max() > 0:
            out[k] = int(np.argmax(totals))
    return out


def touching_pairs(masks):
    """Pairs ``(a, b)``, ``a < b``, of masks that overlap or touch (8-connected).

    Only masks whose boxes meet once grown by one pixel
    (:func:`astrodask.merging.stitch.box_pairs`) are compared.
    """
    from scipy import ndimage

    from .merging.stitch import box_pairs
    from .models.detections import boxes_from_masks

    height, width = masks.shape[1:]
    boxes = boxes_from_masks(masks).astype(np.int64)
    grown = {}
    pairs = []
    for a, b in box_pairs(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], margin=1):
        y0, x0 = max(boxes[a, 0] - 1, 0), max(boxes[a, 1] - 1, 0)
        y1, x1 = min(boxes[a, 2] + 1, height), min(boxes[a, 3] + 1, width)
        if a not in grown:
            grown[a] = ndimage.binary_dilation(masks[a, y0:y1, x0:x1],
                                               structure=np.ones((3, 3), bool))
        if (grown[a] & masks[b, y0:y1, x0:x1]).any():
            pairs.append((int(a), int(b)))
    return pairs


def blend_families(masks):
    """Family label of each mask: connected components of :func:`touching_pairs`."""
    from .merging.stitch import components

    return components(len(masks), touching_pairs(masks))[1]


def _unfolded(masks):
    """``(masks, keep, members)`` of a window where nothing folds."""
    n = len(masks)
    return masks, np.arange(n), [np.array([i]) for i in range(n)]


def _fold(masks, pieces_of):
    """Join the members ``pieces_of(others, main, area)`` picks into each family's largest.

    Returns the kept masks (each largest member with its pieces), their
    indices in the input, and the input indices each holds (itself first).
    """
    n = len(masks)
    if n < 2:
        return _unfolded(masks)
    family = blend_families(masks)
    area = masks.reshape(n, -1).sum(axis=1)
    folded = np.zeros(n, bool)
    joined = {}
    for f in np.unique(family):
        members = np.flatnonzero(family == f)
        if members.size < 2:
            continue
        main = members[np.argmax(area[members])]  # the first of equal areas
        pieces = pieces_of(members[members != main], main, area)
        if pieces.size:
            joined[main] = (masks[main] | masks[pieces].any(axis=0), pieces)
            folded[pieces] = True
    if not joined:
        return _unfolded(masks)
    keep = np.flatnonzero(~folded)
    out = masks[keep]
    members = []
    for k, i in enumerate(keep):
        held = np.array([i])
        if i in joined:
            out[k], pieces = joined[i]
            held = np.concatenate([held, pieces])
        members.append(held)
    return out, keep, members


def fold_irregular_fragments(masks, probabilities, weight, irregular, max_area_fraction):
    """Fold the knots of irregular galaxies into their galaxy (see the module's text).

    Parameters
    ----------
    masks : ndarray of bool, shape (n, H, W)
        A window's detections.
    probabilities : ndarray, shape (classes, H, W)
        The U-Net's class probabilities over the same window, background last.
    weight : ndarray, shape (H, W)
        Non-negative light that weights the probabilities.
    irregular : int
        Index of the irregular class in ``probabilities``.
    max_area_fraction : float
        A member is a knot only when its area is below this fraction of the
        family's largest member's.

    Returns
    -------
    masks : ndarray of bool, shape (m, H, W)
        The detections kept, each galaxy's mask with its knots'.
    keep : ndarray of int, shape (m,)
        Indices of the kept detections in the input (for their scores and
        classes).
    members : list of ndarray of int, length m
        Indices in the input of the detections each kept one now holds (its
        own first, then its knots): a galaxy is as certain as its most
        confident knot (:meth:`astrodask.engine.runners.MaskRCNNRunner.fold`).
    """
    if len(masks) < 2 or not max_area_fraction > 0:
        return _unfolded(masks)

    def knots(others, main, area):
        # classes only of the families' members that could be folded
        if dominant_classes(masks[[main]], probabilities, weight)[0] != irregular:
            return others[:0]
        small = others[area[others] < max_area_fraction * area[main]]
        return small[dominant_classes(masks[small], probabilities, weight) == irregular]

    return _fold(masks, knots)


def fold_saturated_pieces(masks, saturated):
    """Fold the detected pieces of a saturated star into it (see the module's text).

    Parameters
    ----------
    masks : ndarray of bool, shape (n, H, W)
        A window's detections.
    saturated : ndarray of bool, shape (H, W)
        Saturated pixels (:func:`astrodask.sky.saturated_pixels`).

    Returns
    -------
    masks, keep, members
        As :func:`fold_irregular_fragments`.
    """
    if len(masks) < 2 or not saturated.any():
        return _unfolded(masks)
    clipped = np.array([bool((mask & saturated).any()) for mask in masks], dtype=bool)
    if clipped.sum() < 2:
        return _unfolded(masks)

    def pieces(others, main, area):
        return others[clipped[others]] if clipped[main] else others[:0]

    return _fold(masks, pieces)
