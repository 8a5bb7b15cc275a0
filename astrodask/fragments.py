"""Knots of irregular galaxies, detected as objects of their own, folded back into their galaxy.

At HST resolution the star-forming knots of an irregular galaxy stand out of
its light, and the Mask R-CNN reports some of them as separate objects beside
the galaxy itself: on the `hst` validation mosaics most unmatched catalog
objects are such knots, 9 to 25 px from their galaxy's centre. The U-Net knows
irregular light when it sees it. Within one window, detections whose masks
overlap or touch (directly or through others: a blend family, as the merge
defines it) form a family; where the U-Net calls the family's largest member
irregular, every other member it also calls irregular and whose area is below
``max_area_fraction`` of the largest's is a knot: its mask joins the largest
member's and it is no longer a detection. A compact neighbour of another
class (a star, a small spheroid or disk) is never folded.

Positions are window pixels, ``(y, x)``.
"""

import numpy as np


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
    sources = np.nan_to_num(np.asarray(probabilities, dtype=np.float64)[:-1], nan=0.0)
    out = np.full(len(masks), -1, dtype=np.int64)
    for k, mask in enumerate(masks):
        w = weight[mask]
        if not w.sum() > 0:
            continue
        totals = sources[:, mask] @ w
        if totals.max() > 0:
            out[k] = int(np.argmax(totals))
    return out


def touching_pairs(masks):
    """Pairs ``(a, b)``, ``a < b``, of masks that overlap or touch (8-connected).

    Only masks whose bounding boxes, grown by one pixel, meet are compared.
    """
    from scipy import ndimage

    n = len(masks)
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append((ys[0], xs[0], ys[-1] + 1, xs[-1] + 1) if ys.size else None)
    height, width = masks.shape[1:]
    pairs = []
    for a in range(n):
        if boxes[a] is None:
            continue
        ay0, ax0, ay1, ax1 = boxes[a]
        y0, x0 = max(ay0 - 1, 0), max(ax0 - 1, 0)
        y1, x1 = min(ay1 + 1, height), min(ax1 + 1, width)
        grown = None
        for b in range(a + 1, n):
            if boxes[b] is None:
                continue
            by0, bx0, by1, bx1 = boxes[b]
            if by0 >= y1 or by1 <= y0 or bx0 >= x1 or bx1 <= x0:
                continue
            if grown is None:
                grown = ndimage.binary_dilation(masks[a, y0:y1, x0:x1],
                                                structure=np.ones((3, 3), bool))
            if (grown & masks[b, y0:y1, x0:x1]).any():
                pairs.append((a, b))
    return pairs


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
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(masks)
    keep = np.arange(n)
    if n < 2 or not max_area_fraction > 0:
        return masks, keep
    pairs = touching_pairs(masks)
    if not pairs:
        return masks, keep
    a, b = np.array(pairs).T
    _, family = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)),
                                     directed=False)
    area = masks.reshape(n, -1).sum(axis=1)
    dominant = dominant_classes(masks, probabilities, weight)
    masks = masks.copy()
    folded = np.zeros(n, bool)
    for f in np.unique(family):
        members = np.flatnonzero(family == f)
        if members.size < 2:
            continue
        main = members[np.argmax(area[members])]  # the first of equal areas
        if dominant[main] != irregular:
            continue
        knots = members[(members != main) & (dominant[members] == irregular)
                        & (area[members] < max_area_fraction * area[main])]
        if knots.size:
            masks[main] |= masks[knots].any(axis=0)
            folded[knots] = True
    keep = np.flatnonzero(~folded)
    return masks[keep], keep
