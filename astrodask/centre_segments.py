"""One detection per centre: the centre network decides which sources a window holds.

The Mask R-CNN merges sources a few pixels apart into one instance, and its
centroid then falls between them; the centre network
(:mod:`astrodask.models.centres`) keeps them as separate peaks. So, in a
window with both, each centre becomes one detection:

- its **segment** is its watershed basin in the smoothed detection image,
  seeded at every centre of the window, over the footprint of the Mask
  R-CNN's masks and the pixels more than :data:`FOOTPRINT_SIGMA` noise σ
  above the sky (so masks are not cut by the detector's boxes);
- its **class** is that of the best-scoring Mask R-CNN instance whose mask
  holds the centre, else of the instance that covers most of its segment,
  else galaxy;
- its **score** is the heatmap's peak, and its **position** the centre
  (the catalog's ``x``, ``y``).

Mask R-CNN instances that hold no centre are dropped.
"""

import numpy as np

from .classes import OBJECT_CODE

#: Footprint threshold: smoothed detection image above this many of its noise σ.
FOOTPRINT_SIGMA = 2.0
#: σ (px) of the Gaussian that smooths the detection image for the watershed.
SMOOTHING_SIGMA = 1.0


def smoothed_noise(smoothed):
    """Robust σ (astropy's ``mad_std``) of a smoothed detection image's finite pixels.

    1 where there are none, or where half of them or more are equal (σ 0).
    """
    from astropy.stats import mad_std

    values = smoothed[np.isfinite(smoothed)]
    sigma = float(mad_std(values)) if values.size else 0.0
    return sigma if sigma > 0 else 1.0


def centre_detections(centres, scores, masks, class_ids, instance_scores, brightness):
    """Detections of one window from its centres and its Mask R-CNN instances.

    Parameters
    ----------
    centres : ndarray, shape (N, 2)
        ``(y, x)`` of the centres, window pixels (:func:`~astrodask.models.centres.find_centres`).
    scores : ndarray, shape (N,)
        Their heatmap peaks.
    masks : ndarray of bool, shape (M, H, W)
        The Mask R-CNN's instance masks.
    class_ids : ndarray, shape (M,)
    instance_scores : ndarray, shape (M,)
    brightness : ndarray, shape (H, W)
        The detection image (``-inf`` on flagged pixels).

    Returns
    -------
    masks : ndarray of bool, shape (N', H, W)
    class_ids : ndarray of int64, shape (N',)
    scores : ndarray of float32, shape (N',)
    centres : ndarray of float64, shape (N', 2)
        One per centre that lies on a usable pixel, in the order given (of
        two centres on one pixel, the first).
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    height, width = brightness.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    pixels = np.clip(np.round(centres).astype(np.int64), 0, [height - 1, width - 1])
    usable = np.isfinite(brightness[pixels[:, 0], pixels[:, 1]])
    # two refined centres that round to one pixel: the first keeps it
    _, first = np.unique(pixels[:, 0] * width + pixels[:, 1], return_index=True)
    usable &= np.isin(np.arange(len(pixels)), first)
    centres, pixels, scores = centres[usable], pixels[usable], np.asarray(scores)[usable]
    n = len(centres)
    if n == 0:
        return (np.zeros((0, height, width), bool), np.zeros(0, np.int64),
                np.zeros(0, np.float32), np.zeros((0, 2)))
    image = np.where(np.isfinite(brightness), brightness, 0.0).astype(np.float64)
    smoothed = ndimage.gaussian_filter(image, SMOOTHING_SIGMA)
    footprint = smoothed > FOOTPRINT_SIGMA * smoothed_noise(
        np.where(np.isfinite(brightness), smoothed, np.nan))
    masks = np.asarray(masks, dtype=bool)
    if len(masks):
        footprint |= masks.any(axis=0)
    footprint &= np.isfinite(brightness)
    markers = np.zeros((height, width), dtype=np.int32)
    markers[pixels[:, 0], pixels[:, 1]] = np.arange(1, n + 1)
    footprint[pixels[:, 0], pixels[:, 1]] = True
    labels = watershed(-smoothed, markers, mask=footprint)
    out_masks = np.zeros((n, height, width), dtype=bool)
    boxes = ndimage.find_objects(labels, n)
    for k, box in enumerate(boxes):
        out_masks[k][box] = labels[box] == k + 1
    classes = _classes(pixels, labels, boxes, masks, np.asarray(class_ids),
                       np.asarray(instance_scores))
    return out_masks, classes, scores.astype(np.float32), centres


def _classes(pixels, labels, boxes, masks, class_ids, instance_scores):
    """Class of each centre from the Mask R-CNN instances (see the module's docstring)."""
    classes = np.full(len(pixels), OBJECT_CODE["galaxy"], dtype=np.int64)
    if len(masks) == 0:
        return classes
    for k, (y, x) in enumerate(pixels):
        holding = np.flatnonzero(masks[:, y, x])
        if len(holding):
            # the best score; of equal scores the first instance
            classes[k] = class_ids[holding[np.argmax(instance_scores[holding])]]
            continue
        box = boxes[k]
        overlap = masks[(slice(None),) + box][:, labels[box] == k + 1].sum(axis=1)
        if overlap.max() > 0:
            classes[k] = class_ids[int(np.argmax(overlap))]
    return classes
