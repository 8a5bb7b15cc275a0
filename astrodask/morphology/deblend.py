"""Morpheus Algorithm 2: split segments at flux peaks.

Inside each segment, local maxima of the flux (at least ``min_distance``
apart, at most ``max_peaks``) or given positions seed a watershed of the
negative flux image. Each piece keeps the id of its parent segment.
"""

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from ..errors import InputError
from .segmentation import _pixel_positions


def deblend(segmap, flux, min_distance=20, max_peaks=20, positions=None):
    """Deblend a segmentation map (Morpheus Algorithm 2).

    Parameters
    ----------
    segmap : ndarray of int, shape (H, W)
        Segments, 0 = background.
    flux : ndarray, shape (H, W)
        Flux image (Morpheus uses H band).
    min_distance : int
        Minimum distance between peaks (about the PSF radius).
    max_peaks : int
        Most pieces one segment is split into.
    positions : array-like of (y, x), optional
        Seeds to use instead of the flux peaks.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Objects: a segment with fewer than two seeds keeps its id; the pieces
        of a split segment get new ids above the largest segment id, in
        segment order and, within a segment, in order of peak flux (or of the
        given positions).
    table : dict of ndarray
        ``id``, ``parent_id`` (the segment) and ``sub_id`` (0 for an unsplit
        segment, 1..k for the pieces), sorted by ``id``.
    """
    segmap = np.asarray(segmap)
    flux = np.asarray(flux, dtype=np.float64)
    if segmap.shape != flux.shape or segmap.ndim != 2:
        raise InputError(f"segmap {segmap.shape} and flux {flux.shape} must be 2-d "
                         "images of one shape")
    labels = segmap.astype(np.int32).copy()
    seeds = None
    if positions is not None:
        ys, xs = _pixel_positions(positions, segmap.shape)
        seeds = np.zeros(segmap.shape, np.int32)
        seeds[ys, xs] = np.arange(1, len(ys) + 1)
    next_id = int(segmap.max()) + 1
    ids, parents, subs = [], [], []
    for parent, box in enumerate(ndimage.find_objects(segmap), start=1):
        if box is None:
            continue
        inside = segmap[box] == parent
        flux_map = np.where(inside, flux[box], 0.0)
        if seeds is None:
            peaks = peak_local_max(flux_map, min_distance=min_distance, num_peaks=max_peaks,
                                   labels=inside.astype(np.int32), exclude_border=False)
        else:
            local = np.where(inside, seeds[box], 0)
            order = np.argsort(local[local > 0])
            peaks = np.argwhere(local > 0)[order]
        if len(peaks) < 2:
            ids.append(parent), parents.append(parent), subs.append(0)
            continue
        markers = np.zeros(inside.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        pieces = watershed(-flux_map, markers, mask=inside)
        labels[box][inside] = pieces[inside] + next_id - 1
        ids.extend(range(next_id, next_id + len(peaks)))
        parents.extend([parent] * len(peaks))
        subs.extend(range(1, len(peaks) + 1))
        next_id += len(peaks)
    order = np.argsort(ids, kind="stable")
    table = {"id": np.asarray(ids, np.int64)[order],
             "parent_id": np.asarray(parents, np.int64)[order],
             "sub_id": np.asarray(subs, np.int64)[order]}
    return labels, table
