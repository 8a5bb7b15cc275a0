"""One detection per centre: the centre network decides which sources a window holds.

The Mask R-CNN merges sources a few pixels apart into one instance, and its
centroid then falls between them; the centre network
(:mod:`astrodask.models.centres`) keeps them as separate peaks. So, in a
window with both, each centre becomes one detection:

- its **segment** is its watershed basin in the smoothed detection image,
  seeded at every centre of the window, over the footprint of the Mask
  R-CNN's masks and the pixels more than :data:`FOOTPRINT_SIGMA` noise σ
  above the sky (so masks are not cut by the detector's boxes);
- its **class** is that of the Mask R-CNN instance whose mask holds the
  centre (of several, the one whose core, its brightest pixel of the
  smoothed detection image, lies nearest the centre: a star blended with a
  galaxy takes the star's instance, not the one over both), else of the
  instance that covers most of its segment, else galaxy;
- its **score** is the heatmap's peak, and its **position** the centre
  (the catalog's ``x``, ``y``). Where the card's ``confirm_instances`` is
  set, the centre nearest the core of a Mask R-CNN instance scoring at
  least that (the instance's brightest pixel of the smoothed detection
  image, a local maximum there), if within :data:`CORE_RADIUS` of it,
  takes the instance's score where it is higher: a large or diffuse
  galaxy, whose peak the centre network draws low, is kept when the Mask
  R-CNN is sure of it. One instance vouches for one centre only, so a
  faint second peak beside a galaxy's core does not become a duplicate.

The centre network also marks the brighter knots of an irregular galaxy,
and each knot's basin takes a share of the galaxy's light.
:func:`fold_knot_centres` gives them back where the U-Net ran too: inside a
confident instance (score >= :data:`KNOT_INSTANCE_SCORE`), the centres
other than the one at its core are knots when the U-Net calls both them
and the core's segment irregular and they are small beside it.

A Mask R-CNN instance with no centre within :data:`CORE_RADIUS` of its
core is dropped, unless its score reaches the card's ``keep_instances``:
then it is a detection of its own, seeded at its core with the others (a
large smooth galaxy may get no heatmap peak at all, and its pixels would
otherwise go to its neighbours). A centre on a flagged pixel is no
detection (whatever the network saw there was filled in), and it still
counts as the centre near an instance's core: a source whose centre lies on
a bad column or a trail is not brought back at its brightest unflagged
pixel, beside the flag, by the instance over it. Nor is an instance without
a centre kept when its core lies within 2 px of a flagged pixel (the network
may see no centre in a source cut in half by a stripe).

Stars bright enough to place themselves (:func:`stars_at_image_peaks`, the
card's ``centres.star_peak_snr``) move from the heatmap's peak to that of
the smoothed detection image: a star's light is the PSF, peaked on its true
centre, and the image places it several times closer than the heatmap does.
"""

import numpy as np

from .classes import OBJECT_CODE

#: Footprint threshold: smoothed detection image above this many of its noise σ.
FOOTPRINT_SIGMA = 2.0
#: σ (px) of the Gaussian that smooths the detection image for the watershed.
SMOOTHING_SIGMA = 1.0
#: An instance's core with a centre within this many pixels holds a peak.
CORE_RADIUS = 3.0
#: Mask R-CNN instances at this score or above anchor the knots of their galaxy.
KNOT_INSTANCE_SCORE = 0.8
#: :func:`reclaim_host_light`: the excess (in noise σ of the smoothed detection image)
#: over a brighter neighbour's mirrored light that keeps a basin's pixel its own.
RECLAIM_SIGMA = 3.0
#: :func:`reclaim_host_light`: pixels this near a detection's centre (px) stay its own.
RECLAIM_KEEP_RADIUS = 2.0


def smoothed_noise(smoothed):
    """Robust σ (astropy's ``mad_std``) of a smoothed detection image's finite pixels.

    1 where there are none, or where half of them or more are equal (σ 0).
    """
    from astropy.stats import mad_std

    values = smoothed[np.isfinite(smoothed)]
    sigma = float(mad_std(values)) if values.size else 0.0
    return sigma if sigma > 0 else 1.0


def smoothed_detection(brightness):
    """``(finite, image, smoothed)`` of a detection image: where it has data, the image
    with flagged pixels (``-inf``) at 0 (float64), and that smoothed by
    :data:`SMOOTHING_SIGMA` (the image the watershed and the cores are read on)."""
    from scipy import ndimage

    finite = np.isfinite(brightness)
    image = np.where(finite, brightness, 0.0).astype(np.float64)
    return finite, image, ndimage.gaussian_filter(image, SMOOTHING_SIGMA)


def centre_detections(centres, scores, masks, class_ids, instance_scores, brightness,
                      keep_instances=None, confirm_instances=None, core_radius=CORE_RADIUS,
                      reclaim_sigma=None):
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
    keep_instances : float, optional
        Instances at this score or above that hold no centre near their core
        are detections of their own (see the module's docstring); ``None``:
        every instance without a centre is dropped.
    confirm_instances : float, optional
        A centre near the core of an instance at this score or above takes
        the instance's score where it is higher; ``None``: scores are the
        peaks.
    core_radius : float
        A centre this near an instance's core (px) is near it (the card's
        ``centres.core_radius``; default :data:`CORE_RADIUS`).
    reclaim_sigma : float, optional
        Give a brighter neighbour back the pixels of a basin that its
        mirrored light explains to within this many noise σ
        (:func:`reclaim_host_light`); ``None``: the watershed's basins.

    Returns
    -------
    masks : ndarray of bool, shape (N', H, W)
    class_ids : ndarray of int64, shape (N',)
    scores : ndarray of float32, shape (N',)
    centres : ndarray of float64, shape (N', 2)
        One per centre that lies on a usable pixel, in the order given (of
        two centres on one pixel, the first), then one per kept instance (its
        core refined to the vertex of a Gaussian through its 3x3 pixels), score and
        class its own.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    from .models.centres import refine_peaks

    height, width = brightness.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    pixels = np.clip(np.round(centres).astype(np.int64), 0, [height - 1, width - 1])
    usable = np.isfinite(brightness[pixels[:, 0], pixels[:, 1]])
    on_flags = pixels[~usable]
    # two refined centres that round to one pixel: the first keeps it
    _, first = np.unique(pixels[:, 0] * width + pixels[:, 1], return_index=True)
    usable &= np.isin(np.arange(len(pixels)), first)
    centres, pixels, scores = centres[usable], pixels[usable], np.asarray(scores)[usable]
    finite, image, smoothed = smoothed_detection(brightness)
    masks = np.asarray(masks, dtype=bool)
    instance_scores = np.asarray(instance_scores)
    cores = _instance_cores(smoothed, masks, finite, instance_scores,
                            min(v for v in (keep_instances, confirm_instances, np.inf)
                                if v is not None))
    scores = _confirmed(scores, pixels, cores, instance_scores, confirm_instances, core_radius)
    kept, cores = _unpeaked(np.concatenate([pixels, on_flags]), cores, instance_scores,
                            keep_instances, core_radius, finite)
    n_peaks = len(centres)
    if kept:
        pixels = np.concatenate([pixels, cores])
        centres = np.concatenate(
            [centres, np.stack(refine_peaks(np.clip(smoothed, 0.0, None), *cores.T), axis=1)])
        scores = np.concatenate([scores, instance_scores[kept]])
    n = len(centres)
    if n == 0:
        return (np.zeros((0, height, width), bool), np.zeros(0, np.int64),
                np.zeros(0, np.float32), np.zeros((0, 2)))
    noise = smoothed_noise(np.where(finite, smoothed, np.nan))
    footprint = smoothed > FOOTPRINT_SIGMA * noise
    if len(masks):
        footprint |= masks.any(axis=0)
    footprint &= finite
    markers = np.zeros((height, width), dtype=np.int32)
    markers[pixels[:, 0], pixels[:, 1]] = np.arange(1, n + 1)
    footprint[pixels[:, 0], pixels[:, 1]] = True
    labels = watershed(-smoothed, markers, mask=footprint)
    if reclaim_sigma is not None:
        labels = reclaim_host_light(labels, smoothed, pixels, noise, reclaim_sigma)
    out_masks = np.zeros((n, height, width), dtype=bool)
    boxes = ndimage.find_objects(labels, n)
    for k, box in enumerate(boxes):
        out_masks[k][box] = labels[box] == k + 1
    class_ids = np.asarray(class_ids)
    classes = _classes(pixels[:n_peaks], labels, boxes, masks, class_ids, instance_scores,
                       smoothed)
    classes = np.concatenate([classes, class_ids[kept].astype(np.int64)])
    return out_masks, classes, scores.astype(np.float32), centres


def reclaim_host_light(labels, smoothed, seeds, noise, min_excess=RECLAIM_SIGMA,
                       keep_radius=RECLAIM_KEEP_RADIUS):
    """Give a brighter neighbour back the pixels of a basin that only its light explains.

    A watershed basin seeded on a faint source that sits on a bright
    galaxy's disk runs down the disk away from the galaxy (the "shadow" of
    the bump), and takes a wedge of the galaxy with it: on the real SDSS
    field a compact source at a spiral's edge held 1,121 px of it. A galaxy
    is close to symmetric about its centre ``p`` (the idea of the SDSS
    deblender's templates), so a pixel ``x`` of a neighbour's basin whose
    smoothed light does not exceed that at ``2p - x`` (a pixel of the
    galaxy's own segment) by ``min_excess`` noise σ holds nothing the
    neighbour adds: it is the galaxy's, where it joins the galaxy's segment
    through such pixels. A neighbour keeps the pixels where its own light
    stands out, and those within ``keep_radius`` of its seed. Hosts are taken
    in order of the light of their basins (as the watershed drew them), and
    only a basin of less light gives pixels to its neighbour.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Watershed labels, 0 = none, ``k + 1`` for seed ``k``; changed in place.
    smoothed : ndarray of float, shape (H, W)
        The smoothed detection image the basins were drawn on.
    seeds : ndarray of int, shape (N, 2)
        ``(y, x)`` of each label's seed (its centre).
    noise : float
        The noise σ of ``smoothed``.
    min_excess : float
        Excess over the mirrored light, in ``noise``, that a neighbour's pixel
        needs to stay its own.
    keep_radius : float
        Pixels this near a neighbour's seed (px) always stay its own.

    Returns
    -------
    ndarray of int
        ``labels``.
    """
    from scipy import ndimage

    n = len(seeds)
    if n < 2:
        return labels
    height, width = labels.shape
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 2)
    # hosts by the light of their basins, not their peaks: a compact source can peak
    # higher than a large galaxy's nucleus
    light = np.bincount(labels.ravel(), weights=np.clip(smoothed, 0.0, None).ravel(),
                        minlength=n + 1)[1:n + 1]
    touching = [set(neighbours) for neighbours in _saddles(labels, smoothed, n)]
    boxes = ndimage.find_objects(labels, n)  # a neighbour's pixels only ever leave its box
    for h in np.lexsort((np.arange(n), -light)):  # the brightest host first
        hy, hx = seeds[h]
        for i in sorted(touching[h]):
            if not light[i] < light[h]:
                continue
            box = boxes[i]
            if box is None:
                continue
            ys, xs = np.nonzero(labels[box] == i + 1)
            ys, xs = ys + box[0].start, xs + box[1].start
            my, mx = 2 * hy - ys, 2 * hx - xs
            inside = (my >= 0) & (my < height) & (mx >= 0) & (mx < width)
            # the mirror image must be the host's, and hold its light: sky-level pixels stay
            mirrored = np.full(len(ys), -np.inf)
            on_host = np.zeros(len(ys), dtype=bool)
            on_host[inside] = labels[my[inside], mx[inside]] == h + 1
            mirrored[on_host] = smoothed[my[on_host], mx[on_host]]
            explained = ((mirrored > min_excess * noise)
                         & (smoothed[ys, xs] <= mirrored + min_excess * noise)
                         & (np.hypot(ys - seeds[i, 0], xs - seeds[i, 1]) > keep_radius))
            if not explained.any():
                continue
            # only what joins the host's segment through explained pixels
            y0, x0 = max(box[0].start - 1, 0), max(box[1].start - 1, 0)
            y1, x1 = min(box[0].stop + 1, height), min(box[1].stop + 1, width)
            host = labels[y0:y1, x0:x1] == h + 1
            region = host.copy()
            region[ys[explained] - y0, xs[explained] - x0] = True
            parts, _ = ndimage.label(region)
            joined = np.unique(parts[host])
            moved = explained & np.isin(parts[ys - y0, xs - x0], joined[joined > 0])
            labels[ys[moved], xs[moved]] = h + 1
    return labels


def _instance_cores(smoothed, masks, usable, instance_scores, min_score):
    """``(index, y, x)`` of each instance scoring ``min_score`` or more whose core is a
    local maximum of ``smoothed`` (its brightest usable mask pixel there)."""
    from scipy import ndimage

    if not np.isfinite(min_score) or len(masks) == 0:
        return []
    local_max = smoothed >= ndimage.maximum_filter(smoothed, size=3)
    cores = []
    for i in np.flatnonzero(instance_scores >= min_score):
        mask = masks[i] & usable
        if mask.any():
            y, x = _core(mask, smoothed)
            if local_max[y, x]:
                cores.append((int(i), y, x))
    return cores


def _near(pixels, y, x, radius):
    """Which of ``pixels`` lie within ``radius`` of ``(y, x)``."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    return np.hypot(pixels[:, 0] - y, pixels[:, 1] - x) <= radius


def _confirmed(scores, pixels, cores, instance_scores, min_score, radius):
    """Each centre's score raised to that of the best instance of ``min_score`` or more
    whose core lies near it and nearer to it than to any other centre (module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    raised = scores.copy()
    if min_score is None:
        return raised
    for i, y, x in cores:
        # one instance vouches for one source: a second peak beside its core is not
        # confirmed by it
        k = (_centre_at_core(pixels, scores, y, x, radius) if instance_scores[i] >= min_score
             else None)
        if k is not None:
            raised[k] = max(raised[k], instance_scores[i])
    return raised


def _centre_at_core(pixels, scores, y, x, radius, candidates=None):
    """Index of the centre (of ``candidates``, a boolean mask, where given) nearest the
    core ``(y, x)`` within ``radius``; of equals the higher score, then the
    first. ``None`` where there is none."""
    near = _near(pixels, y, x, radius)
    if candidates is not None:
        near &= candidates
    near = np.flatnonzero(near)
    if not len(near):
        return None
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    distance = np.hypot(pixels[near, 0] - y, pixels[near, 1] - x).round(6)
    return near[np.lexsort((near, -np.asarray(scores)[near], distance))[0]]


def _unpeaked(pixels, cores, instance_scores, min_score, radius, finite):
    """Indices and core pixels of the instances kept without a centre (module docstring).

    An instance whose core lies within 2 px of a flagged pixel (``finite``
    False) is not kept: its brightest pixel is where a flag cuts the source
    off (the smoothing that finds the core dims the pixel next to the flag).
    """
    taken = [tuple(p) for p in pixels]
    kept, kept_cores = [], []
    if min_score is not None:
        for i, y, x in cores:
            if not finite[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].all():
                continue
            if instance_scores[i] >= min_score and not _near(taken, y, x, radius).any():
                kept.append(i)
                kept_cores.append((y, x))
                taken.append((y, x))
    return kept, np.asarray(kept_cores, dtype=np.int64).reshape(-1, 2)


def _classes(pixels, labels, boxes, masks, class_ids, instance_scores, smoothed):
    """Class of each centre from the Mask R-CNN instances (see the module's docstring)."""
    classes = np.full(len(pixels), OBJECT_CODE["galaxy"], dtype=np.int64)
    if len(masks) == 0:
        return classes
    cores = {}
    for k, (y, x) in enumerate(pixels):
        holding = np.flatnonzero(masks[:, y, x])
        if len(holding):
            # the instance whose core is nearest; then the best score; then the first
            for i in holding:
                if i not in cores:
                    cores[i] = _core(masks[i], smoothed)
            distance = [round(float(np.hypot(cores[i][0] - y, cores[i][1] - x)), 6)
                        for i in holding]
            best = min(range(len(holding)),
                       key=lambda j: (distance[j], -instance_scores[holding[j]], j))
            classes[k] = class_ids[holding[best]]
            continue
        box = boxes[k]
        overlap = masks[(slice(None),) + box][:, labels[box] == k + 1].sum(axis=1)
        if overlap.max() > 0:
            classes[k] = class_ids[int(np.argmax(overlap))]
    return classes


def _core(mask, smoothed):
    """``(y, x)`` of ``mask``'s brightest pixel of ``smoothed`` (the first in row-major
    order of equals; ``(0, 0)`` for an empty mask)."""
    from .models.detections import mask_box

    box = mask_box(mask)
    if box is None:
        return 0, 0
    inside = mask[box]
    flat = np.argmax(np.where(inside, smoothed[box], -np.inf))
    y, x = np.unravel_index(flat, inside.shape)
    return int(y) + box[0].start, int(x) + box[1].start


def fold_knot_centres(segments, scores, centres, masks, instance_scores, brightness,
                      probabilities, irregular, max_area_fraction, core_radius=CORE_RADIUS):
    """Fold the centres on an irregular galaxy's knots into the galaxy's (module docstring).

    For each Mask R-CNN instance scoring at least :data:`KNOT_INSTANCE_SCORE`
    (best first) whose core has a centre within :data:`CORE_RADIUS` (the
    nearest: the galaxy), every other centre on the instance's mask whose
    segment is below ``max_area_fraction`` of the galaxy's is a knot when the
    U-Net's dominant class of both segments is irregular: its segment joins
    the galaxy's and it is no longer a detection. A galaxy is never folded
    into another.

    Parameters
    ----------
    segments : ndarray of bool, shape (N, H, W)
        The detections' segments (:func:`centre_detections`).
    scores : ndarray, shape (N,)
    centres : ndarray, shape (N, 2)
        ``(y, x)`` of the detections, window pixels.
    masks : ndarray of bool, shape (M, H, W)
        The Mask R-CNN's instance masks.
    instance_scores : ndarray, shape (M,)
    brightness : ndarray, shape (H, W)
        The detection image (``-inf`` on flagged pixels).
    probabilities : ndarray, shape (classes, H, W)
        The U-Net's class probabilities over the window, background last.
    irregular : int
        Index of the irregular class in ``probabilities``.
    max_area_fraction : float
    core_radius : float
        As in :func:`centre_detections`.

    Returns
    -------
    keep : ndarray of int
        Indices of the detections kept, in order.
    segments : ndarray of bool, shape (len(keep), H, W)
        Their segments, each galaxy's with its knots'.
    """
    from .fragments import dominant_classes

    segments = np.asarray(segments, dtype=bool)
    n = len(segments)
    if n < 2 or len(masks) == 0 or not max_area_fraction > 0:
        return np.arange(n), segments
    finite, image, smoothed = smoothed_detection(brightness)
    instance_scores = np.asarray(instance_scores)
    cores = _instance_cores(smoothed, np.asarray(masks, dtype=bool), finite, instance_scores,
                            KNOT_INSTANCE_SCORE)
    height, width = brightness.shape
    pixels = np.clip(np.round(np.asarray(centres, dtype=np.float64)).astype(np.int64), 0,
                     [height - 1, width - 1]).reshape(-1, 2)
    classes = dominant_classes(segments, probabilities, np.clip(image, 0.0, None))
    area = segments.reshape(n, -1).sum(axis=1)
    alive = np.ones(n, dtype=bool)
    galaxy = np.zeros(n, dtype=bool)
    grown = {}  # the galaxies' segments with their knots' (the input stays as it is)
    for i, y, x in sorted(cores, key=lambda core: -instance_scores[core[0]]):
        main = _centre_at_core(pixels, scores, y, x, core_radius, alive)
        if main is None or classes[main] != irregular:
            continue
        galaxy[main] = True
        on_mask = masks[i][pixels[:, 0], pixels[:, 1]] & alive & ~galaxy
        for k in np.flatnonzero(on_mask):
            if classes[k] == irregular and area[k] < max_area_fraction * area[main]:
                grown[main] = grown.get(main, segments[main]) | segments[k]
                alive[k] = False
    keep = np.flatnonzero(alive)
    if not grown:
        return keep, segments if len(keep) == n else segments[keep]
    out = segments[keep]
    for row, main in enumerate(keep):
        if main in grown:
            out[row] = grown[main]
    return keep, out


def merge_low_contrast(segments, scores, brightness, min_contrast, min_snr=None,
                       pixel_noise=1.0):
    """Merge detections that do not stand out of their neighbour's light (SExtractor's contrast).

    The centre network marks every local bump: on a large galaxy of real
    pixels (HII regions, spiral arms, the bulge of a nearby spiral), each
    bump becomes a detection whose watershed basin takes a share of the
    galaxy. SExtractor keeps a branch of its deblending tree as a separate
    object only when its light exceeds ``DEBLEND_MINCONT`` of the whole
    composite's; the same test on the basins: going from the faintest
    peak up, a detection whose light above the saddle to its neighbour of
    brighter peak (the highest saddle, if several) is under ``min_contrast``
    of the light of its footprint (the connected region of all segments it
    lies in) joins that neighbour. Light is the smoothed detection image
    (bands in sky-σ units, :data:`SMOOTHING_SIGMA`), clipped at 0. A merged
    detection keeps the brighter peak's centre and class and takes the best
    score of its parts. With ``min_snr``, a detection must also stand out of
    the noise: its light above the saddle at least ``min_snr`` times
    ``pixel_noise`` times the square root of the number of its pixels above
    the saddle (:mod:`astrodask.instance_deblend`).

    Parameters
    ----------
    segments : ndarray of bool, shape (N, H, W)
        Exclusive segments (:func:`centre_detections`).
    scores : ndarray, shape (N,)
    brightness : ndarray, shape (H, W)
        The detection image (``-inf`` on flagged pixels).
    min_contrast : float
        Fraction of the footprint's light; ``None`` or 0: no such test.
    min_snr : float, optional
        Significance of the light above the saddle; ``None`` or 0: no such
        test. With neither test nothing merges.
    pixel_noise : float
        σ of one pixel of the detection image.

    Returns
    -------
    keep : ndarray of int
        Indices of the detections kept, in order.
    segments : ndarray of bool, shape (len(keep), H, W)
        Their segments, each with those merged into it.
    scores : ndarray of float32, shape (len(keep),)
    """
    from scipy import ndimage

    segments = np.asarray(segments, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    n = len(segments)
    if n < 2 or not (min_contrast or min_snr):
        return np.arange(n), segments, scores
    light = np.clip(smoothed_detection(brightness)[2], 0.0, None)
    labels = np.zeros(brightness.shape, dtype=np.int64)
    for k in range(n):
        labels[segments[k]] = k + 1
    footprint, _ = ndimage.label(labels > 0)
    total = ndimage.sum_labels(light, footprint, np.arange(footprint.max() + 1))
    members = ndimage.value_indices(labels, ignore_value=0)
    values = [light[members[k + 1]] if k + 1 in members else np.zeros(0) for k in range(n)]
    peak = np.array([v.max() if v.size else -np.inf for v in values])
    region = [int(footprint[members[k + 1]][0]) if k + 1 in members else 0 for k in range(n)]
    saddles = _saddles(labels, light, n)

    root = np.arange(n)
    merged_scores = scores.copy()
    # faintest peak first (ties: the later detection), so a branch is decided before its trunk
    for a in np.lexsort((-np.arange(n), peak)):
        brighter = [(level, b) for b, level in saddles[a].items()
                    if (peak[b], -b) > (peak[a], -a)]
        if not brighter or not values[a].size:
            continue
        level, b = max(brighter, key=lambda item: (item[0], -item[1]))
        above = np.clip(values[a] - level, 0.0, None)
        if (above.sum() >= (min_contrast or 0.0) * total[region[a]]
                and (not min_snr or (above.sum() > 0 and above.sum()
                                     >= min_snr * pixel_noise * np.sqrt((above > 0).sum())))):
            continue
        root[a] = b
        values[b] = np.concatenate([values[b], values[a]])
        merged_scores[b] = max(merged_scores[b], merged_scores[a])
        around, saddles[a] = saddles[a], {}
        for c, other in around.items():
            saddles[c].pop(a)
            if c != b:
                saddles[b][c] = max(saddles[b].get(c, -np.inf), other)
                saddles[c][b] = saddles[b][c]
    for k in range(n):  # follow each detection up to the one it ended in
        while root[root[k]] != root[k]:
            root[k] = root[root[k]]
    keep = np.flatnonzero(root == np.arange(n))
    out = segments[keep].copy()
    position = {int(k): j for j, k in enumerate(keep)}
    for k in np.flatnonzero(root != np.arange(n)):
        out[position[int(root[k])]] |= segments[k]
    return keep, out, merged_scores[keep]


def _saddles(labels, light, n):
    """For each segment (0-based), ``{neighbour: saddle level}``: the highest of
    ``min(light)`` over the 4-connected pixel pairs across their border."""
    saddles = [dict() for _ in range(n)]
    for a, b, la, lb in ((labels[:, :-1], labels[:, 1:], light[:, :-1], light[:, 1:]),
                         (labels[:-1], labels[1:], light[:-1], light[1:])):
        across = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[across], b[across]) - 1
        hi = np.maximum(a[across], b[across]) - 1
        level = np.minimum(la[across], lb[across])
        if not lo.size:
            continue
        order = np.lexsort((level, hi, lo))
        lo, hi, level = lo[order], hi[order], level[order]
        last = np.r_[(lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1]), True]
        for i, j, v in zip(lo[last], hi[last], level[last]):
            i, j, v = int(i), int(j), float(v)
            saddles[i][j] = max(saddles[i].get(j, -np.inf), v)
            saddles[j][i] = saddles[i][j]
    return saddles


def stars_at_image_peaks(table, brightness, origin, min_snr):
    """Bright stars of one window moved to the peak of the smoothed detection image.

    The heatmap of the centre network places a bright star within ~0.06 px;
    the star's own light, the PSF, does better. A row whose ``class`` is star
    and whose centre's 3x3 neighbourhood in the smoothed detection image
    (:func:`smoothed_detection`) peaks at ``min_snr`` or more of that image's
    noise σ moves to the vertex of a Gaussian through the peak's 3x3 pixels
    (:func:`~astrodask.models.centres.refine_peaks`), unless that lies more
    than a pixel away.

    Parameters
    ----------
    table : pyarrow.Table
        The window's instances (:func:`astrodask.instances.tile_instances`):
        ``class``, ``centre_y``, ``centre_x`` in mosaic pixels.
    brightness : ndarray, shape (H, W)
        The window's detection image (``-inf`` on flags).
    origin : tuple of int
        Mosaic pixel of the window's ``[0, 0]``.
    min_snr : float

    Returns
    -------
    pyarrow.Table
        The same rows, stars' ``centre_y``, ``centre_x`` moved.
    """
    import pyarrow as pa

    from .models.centres import refine_peaks

    if table.num_rows == 0:
        return table
    # mosaic pixels, kept bit for bit for the rows that stay
    new_y = table.column("centre_y").to_numpy(zero_copy_only=False).copy()
    new_x = table.column("centre_x").to_numpy(zero_copy_only=False).copy()
    cy, cx = new_y - origin[0], new_x - origin[1]
    stars = ((np.asarray(table.column("class").to_pylist(), dtype=object) == "star")
             & np.isfinite(cy) & np.isfinite(cx))
    if not stars.any():
        return table
    finite, _, smoothed = smoothed_detection(brightness)
    noise = smoothed_noise(np.where(finite, smoothed, np.nan))
    height, width = smoothed.shape
    rows = np.flatnonzero(stars)
    yi = np.clip(np.round(cy[rows]).astype(np.int64), 0, height - 1)
    xi = np.clip(np.round(cx[rows]).astype(np.int64), 0, width - 1)
    steps = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    around = np.stack([smoothed[np.clip(yi + a, 0, height - 1), np.clip(xi + b, 0, width - 1)]
                       for a, b in steps], axis=1)
    best = np.array(steps)[around.argmax(axis=1)]
    py = np.clip(yi + best[:, 0], 0, height - 1)
    px = np.clip(xi + best[:, 1], 0, width - 1)
    ny, nx = refine_peaks(np.clip(smoothed, 0.0, None), py, px)
    move = ((smoothed[py, px] >= min_snr * noise)
            & (np.hypot(ny - cy[rows], nx - cx[rows]) <= 1.0))
    new_y[rows[move]] = ny[move] + origin[0]
    new_x[rows[move]] = nx[move] + origin[1]
    index = table.schema.get_field_index
    table = table.set_column(index("centre_y"), "centre_y", pa.array(new_y, pa.float64()))
    return table.set_column(index("centre_x"), "centre_x", pa.array(new_x, pa.float64()))
