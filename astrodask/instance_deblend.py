"""Split a Mask R-CNN instance that holds several significant peaks (deblending).

Without a centre network (``maskrcnn_hst``) a Mask R-CNN instance is an
object of the catalog, and the network sometimes draws one instance over two
galaxies, or over a galaxy and a faint companion on its outskirts: the
catalog then holds one object at the light-weighted centroid between them,
matching neither. This is the deblending step of SExtractor applied inside
each instance:

- the **peaks** are the local maxima of the smoothed detection image
  (:func:`astrodask.centre_segments.smoothed_detection`) inside the
  instance's mask, at least ``min_separation`` px apart;
- a peak within :data:`~astrodask.centre_segments.CORE_RADIUS` of the core
  (the brightest smoothed pixel) of *another* instance that covers it is
  that instance's: the network already made it an object;
- the instance is cut into the watershed basins of its peaks, and a basin
  whose light above the saddle to a brighter neighbour is not significant
  (below ``min_snr`` times the noise of that sum, or below ``min_contrast``
  of the instance's light) joins that neighbour
  (:func:`astrodask.centre_segments.merge_low_contrast`);
- each basin left that holds neither the instance's core nor another
  instance's becomes a detection of its own (the instance's class and
  score); one that holds another instance's core goes to that instance
  (its galaxy's light then no longer pulls this instance's centroid); the
  instance keeps the rest of its mask.

Instances scoring under ``min_score`` (the engine passes the card's
``catalog_min_score``: the merge drops them) are neither split nor hold a
peak for another instance: a peak that only such an instance holds is split
off as a new detection. Instances that ``keep_whole`` marks (the engine
marks those the U-Net calls irregular: their star-forming knots are peaks
of one galaxy, see :mod:`astrodask.fragments`) and stars (an Airy or
diffraction pattern has rings of local maxima) are never split, with one
exception (``irregular_by_class``): an instance the U-Net calls irregular
that also holds a significant basin the U-Net calls another class (a
spheroid or disk galaxy beside or on the irregular one, which the network
drew as one instance) is cut in two kinds of piece, every irregular basin
together (the knots stay one galaxy) and each basin of another class alone.
Drawn as one instance, such a pair was one irregular object whose centroid
lay between the two galaxies and matched neither.
"""

import numpy as np

from .centre_segments import (CORE_RADIUS, _core, merge_low_contrast, smoothed_detection,
                              smoothed_noise)
from .classes import OBJECT_CODE

#: Peaks of one instance closer than this (px) are one peak.
MIN_SEPARATION = 4


def split_instances(masks, class_ids, scores, brightness, min_snr, min_contrast=0.0,
                    min_separation=MIN_SEPARATION, keep_whole=None, min_score=None,
                    unet=None, irregular_by_class=False, split_others=True):
    """The instances of one window with those over several significant peaks split.

    Parameters
    ----------
    masks : ndarray of bool, shape (M, H, W)
    class_ids : ndarray, shape (M,)
    scores : ndarray, shape (M,)
    brightness : ndarray, shape (H, W)
        The detection image (bands in sky-σ units summed; ``-inf`` on flagged
        pixels; :func:`astrodask.sky.detection_image`).
    min_snr : float
        A basin stays separate only where its light above the saddle is at
        least this many times the noise of that sum (the detection image's
        pixel noise times the square root of the pixels above the saddle).
        ``None`` or 0 splits nothing.
    min_contrast : float
        ... and at least this fraction of the instance's light (SExtractor's
        ``DEBLEND_MINCONT``; 0: no such test).
    min_separation : int
        Smallest distance between two peaks of one instance (px).
    keep_whole : array_like of bool, shape (M,), optional
        Instances never split.
    min_score : float, optional
        Instances scoring under this are ignored (see the module's docstring).
    unet : tuple, optional
        ``(probabilities, irregular)``: the U-Net's class maps over the window,
        shape (classes, H, W) with background last, and the index of the
        irregular class; needed by ``irregular_by_class``.
    irregular_by_class : bool
        Split the ``keep_whole`` instances too, between their irregular light
        and their basins of another class (see the module's docstring).
    split_others : bool
        False leaves every instance outside ``keep_whole`` whole.

    Returns
    -------
    masks : ndarray of bool, shape (M + K, H, W)
        The instances (each without the basins split off it), then the K new
        detections.
    class_ids : ndarray, shape (M + K,)
    scores : ndarray, shape (M + K,)
    """
    from scipy import ndimage

    masks = np.asarray(masks, dtype=bool)
    class_ids, scores = np.asarray(class_ids), np.asarray(scores)
    if not min_snr or len(masks) == 0:
        return masks, class_ids, scores
    keep_whole = (np.zeros(len(masks), bool) if keep_whole is None
                  else np.asarray(keep_whole, dtype=bool))
    by_class = irregular_by_class and unet is not None
    candidates = (~keep_whole if split_others else np.zeros(len(masks), bool)) \
        | (keep_whole & by_class)
    candidates = np.flatnonzero(candidates & (class_ids != OBJECT_CODE["star"]))
    if not candidates.size:  # (a window without irregular galaxies, with split_others off)
        return masks, class_ids, scores
    finite, image, smoothed = smoothed_detection(brightness)
    pixel_noise = smoothed_noise(np.where(finite, image, np.nan))
    usable = masks & finite
    counted = np.ones(len(masks), bool) if min_score is None else scores >= min_score
    # (y, x) of each instance's core; NaN for those that hold no peak
    cores = np.array([_core(mask, smoothed) if ok and mask.any() else (np.nan, np.nan)
                      for mask, ok in zip(usable, counted)], dtype=np.float64)
    out_masks, new_masks, new_of = masks.copy(), [], []
    for m in candidates:
        if np.isnan(cores[m, 0]):
            continue
        # the instance's box with a margin where the smoothing reaches (4 σ)
        box = tuple(slice(max(s.start - 4, 0), s.stop + 4)
                    for s in ndimage.find_objects(usable[m].astype(np.int8))[0])
        offset = np.array([box[0].start, box[1].start])
        peaks = _peaks(usable[m][box], smoothed[box], cores[m].astype(np.int64) - offset,
                       min_separation)
        owner = _owners(m, peaks + offset, cores, usable)
        if (owner == m).all():
            continue
        basins = _basins(usable[m][box], smoothed[box], peaks)
        kept, merged = _significant(basins, brightness[box], pixel_noise, min_snr,
                                    min_contrast)
        if keep_whole[m]:
            kept, merged = _irregular_and_others(kept, merged, unet, brightness, box)
        for k, basin in zip(kept, merged):
            if owner[k] == m:
                continue
            full = np.zeros_like(masks[m])
            full[box] = basin
            out_masks[m] &= ~full
            if owner[k] < 0:
                new_masks.append(full)
                new_of.append(m)
            else:
                out_masks[owner[k]] |= full
    if not new_masks:
        return out_masks, class_ids, scores
    return (np.concatenate([out_masks, np.stack(new_masks)]),
            np.concatenate([class_ids, class_ids[new_of]]),
            np.concatenate([scores, scores[new_of]]))


def _irregular_and_others(kept, basins, unet, brightness, box):
    """An irregular-called instance's significant basins as pieces: all those the U-Net
    calls irregular as one (named by the first of them), each of another class alone.

    ``kept`` names each basin by its peak (0: the instance's core). Nothing to
    split (``[0]`` and the whole) unless both kinds are there.
    """
    from .fragments import dominant_classes, light_weight

    probabilities, irregular = unet
    basins = np.asarray(basins)
    window = (slice(None),) + box
    irr = dominant_classes(basins, probabilities[window], light_weight(brightness[box])) \
        == irregular
    if irr.all() or not irr.any():
        return [kept[0]], [basins.any(axis=0)]
    first = int(np.flatnonzero(irr)[0])
    pieces = [(kept[i], basins[i]) for i in np.flatnonzero(~irr)]
    pieces.append((kept[first], basins[irr].any(axis=0)))
    pieces.sort(key=lambda piece: piece[0])
    return [k for k, _ in pieces], [b for _, b in pieces]


def _peaks(mask, smoothed, core, min_separation):
    """Local maxima of ``smoothed`` in ``mask`` at least ``min_separation`` apart, as
    ``(y, x)`` rows, ``core`` first (the others that near it are the core)."""
    from skimage.feature import peak_local_max

    # a finite fill: peak_local_max multiplies the image by each label's indicator
    found = peak_local_max(np.where(mask, smoothed, smoothed[mask].min()),
                           min_distance=min_separation, labels=mask.astype(np.int32),
                           exclude_border=False)
    found = found[np.hypot(*(found - core).T) >= min_separation]
    return np.concatenate([core[None], found]).astype(np.int64)


def _owners(m, peaks, cores, usable):
    """The instance each of instance ``m``'s ``peaks`` belongs to.

    ``m`` for its core (the first peak); for a peak within
    :data:`CORE_RADIUS` of the core of another instance covering it, that
    instance (the nearest core; of equals, the first); -1 for the others (a
    detection to split off). ``cores`` is ``(M, 2)``, NaN where an instance
    holds no peak.
    """
    distance = np.hypot(*(peaks[:, None, :] - cores[None]).transpose(2, 0, 1))
    claim = (distance <= CORE_RADIUS) & usable[:, peaks[:, 0], peaks[:, 1]].T
    claim[:, m] = False
    nearest = np.argmin(np.where(claim, distance, np.inf), axis=1)
    owner = np.where(claim.any(axis=1), nearest, -1)
    owner[0] = m
    return owner


def _basins(mask, smoothed, peaks):
    """The watershed basins of ``peaks`` in ``mask`` on ``smoothed``, shape (P, H, W)."""
    from skimage.segmentation import watershed

    markers = np.zeros(mask.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    labels = watershed(-smoothed, markers, mask=mask)
    return labels[None] == np.arange(1, len(peaks) + 1)[:, None, None]


def _significant(basins, brightness, pixel_noise, min_snr, min_contrast):
    """``(kept, basins)``: the basins left once the insignificant ones joined a neighbour."""
    return merge_low_contrast(basins, np.zeros(len(basins), np.float32), brightness,
                              min_contrast, min_snr=min_snr, pixel_noise=pixel_noise)[:2]
