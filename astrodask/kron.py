"""Kron ("AUTO") photometry: each object's flux in an elliptical aperture scaled to its light.

The isophotal flux (``flux_<band>``, the sum over the object's exclusive
segment) misses the light of its wings below the segment's edge. The total
flux survey scientists compare with SExtractor's ``FLUX_AUTO`` is measured
here as SExtractor measures it, with SEP (``sep.kron_radius``,
``sep.sum_ellipse``):

1. the ellipse of the object's second moments (``a_image``, ``b_image``,
   ``theta_image``) centred on its position;
2. the Kron radius ``r_K = Σ r I / Σ I`` over that ellipse scaled by
   :data:`KRON_WINDOW` (6), on the detection image (the sum of the bands),
   ``r`` in units of the ellipse (SExtractor's ``KRON_RADIUS``);
3. each band's flux in the ellipse scaled by ``max(2.5 r_K, 3.5)``
   (SExtractor's ``PHOT_AUTOPARAMS 2.5, 3.5``); where ``r_K`` cannot be
   measured (no positive light) the scale is 3.5;
4. where the aperture holds another object's pixels, less a local
   background: the mean of the free pixels in the annulus between 1.2 and
   2 times the aperture (:data:`LOCAL_ANNULUS`; SExtractor's
   ``BACKPHOTO_TYPE LOCAL`` in spirit). Without it such apertures gather
   their neighbours' wings: measured / true 1.37 at S/N 10-30 on a crowded
   field, 1.00 with it; an aperture clear of neighbours is right without
   it (1.00) and too faint with it (0.85: the annulus lies on the wings of
   neighbours that do not reach the aperture; :data:`ANNULUS_FOR`,
   BENCHMARKS.md "Kron photometry"). The merge takes the annulus from the
   Mask R-CNN card (``kron_annulus``): none for ``maskrcnn_hst``, whose
   resolved galaxies' wings it would take off.
5. the half-light radius (SExtractor's ``FLUX_RADIUS`` at 0.5): the circle
   about the centre holding half the light, less that background, of the
   circle of the aperture's semi-major axis, on the detection image, from a
   growth curve of :data:`GROWTH_STEPS` circles; other objects' and
   flagged pixels left out.

Pixels of other objects (the segmentation map) and flagged pixels in an
aperture take the value of the pixel mirrored through the object's centre
where that one is free, else 0 (SExtractor's ``MASK_TYPE CORRECT``): SEP's
own correction, which scales the sum by the aperture's area over its free
area, made the fluxes of objects with a neighbour in their aperture 5-12%
too bright on the ``decam`` validation mosaics, and those near flagged
pixels 6% (BENCHMARKS.md, "Masked pixels in the Kron aperture"). The
annulus takes only pixels outside every segment and flag. An aperture that
reaches past the mosaic, over flagged pixels or over another object's
pixels sets a bit of ``auto_flags`` (:data:`AUTO_FLAGS`).
Errors come from the weight maps, else from each band's pixel σ, times the
sky noise's correlation factor for a region much larger than the
correlation length.

Objects are measured in cells of :data:`CELL` px, one read of the mosaic per
cell covering every aperture of its objects: bounded memory whatever the
mosaic's size. Pixel coordinates are 0-based.
"""

import numpy as np

__all__ = ["kron_photometry", "AUTO_FLAGS", "ANNULUS_FOR", "KRON_FACTOR", "KRON_MIN",
           "KRON_WINDOW", "LOCAL_ANNULUS"]

#: SExtractor's ``PHOT_AUTOPARAMS``: the aperture is the ellipse scaled by
#: ``max(KRON_FACTOR * r_K, KRON_MIN)``.
KRON_FACTOR = 2.5
KRON_MIN = 3.5
#: The ellipse scale over which ``r_K`` is measured (SExtractor's 6).
KRON_WINDOW = 6.0
#: The local background: the mean of the free pixels (not flagged, no other object's) in
#: the elliptical annulus between these multiples of the aperture, taken off the sum.
#: Chosen on the four ``decam`` validation mosaics (``benchmarks/photometry_quality.py
#: --validation``): summed |median(measured / true) - 1| over fields and S/N bins 0.265,
#: against 0.809 without it (0.291 for 1.5-2.5, 0.277 for 2-3, 0.369 for 1-1.5).
LOCAL_ANNULUS = (1.2, 2.0)
#: Which apertures the local background comes off (``kron_photometry``'s ``annulus_for``):
#: only those that hold another object's pixels. Elsewhere the annulus lies on the wings
#: of neighbours that do not reach the aperture: on the four ``decam`` validation
#: mosaics, summed bias 0.186 and mean scatter 0.121 this way, 0.314 and 0.132 with the
#: annulus for every aperture (the crowded test field's clear apertures at S/N 10-30:
#: 1.004 without it, 0.854 with it).
ANNULUS_FOR = "neighbours"
ANNULUS_CHOICES = ("neighbours", "all")
#: Objects are grouped by their position in cells of this many pixels (a window's core:
#: on an object store each cell costs one round of requests per array).
CELL = 512
#: Least semi-axis (px) of an ellipse: a one-pixel object's moments are ~0.
MIN_AXIS = 0.5
#: An annulus's (else an aperture's) semi-major axis is capped here (px): beyond, the
#: aperture shrinks to fit and is flagged truncated.
MAX_RADIUS = 1024
#: Circles of the growth curve that gives ``flux_radius``, out to the Kron aperture's
#: semi-major axis.
GROWTH_STEPS = 40
#: ``auto_flags`` bits.
AUTO_FLAGS = {"truncated": 1, "masked": 2, "no_kron_radius": 4, "no_local_background": 8,
              "neighbours": 16}
#: The label flagged pixels take in the segmentation map SEP sees (no catalog ID reaches it).
FLAGGED_LABEL = np.iinfo(np.int32).max


def _ellipses(a_image, b_image, theta_image):
    """SEP's ``a, b, theta`` (radians) from the catalog's, finite and at least ``MIN_AXIS``."""
    a = np.where(np.isfinite(a_image), a_image, 1.0)
    b = np.where(np.isfinite(b_image), b_image, a)
    a = np.maximum(a, MIN_AXIS)
    b = np.clip(b, MIN_AXIS, a)
    theta = np.radians(np.where(np.isfinite(theta_image), theta_image, 0.0))
    return a.astype(np.float64), b.astype(np.float64), theta


def _reach(a, outer):
    """Half-size (px) of the box holding an object's largest possible aperture and annulus
    (``outer``: the annulus's outer scale, 1 without one)."""
    largest = max(KRON_WINDOW, KRON_FACTOR * KRON_WINDOW * outer, KRON_MIN * outer)
    return np.minimum(np.ceil(largest * a) + 2, MAX_RADIUS).astype(np.int64)


def kron_photometry(image, mask, labels, ids, x, y, a_image, b_image, theta_image, *,
                    noise=None, weight=None, correlation=None, annulus=LOCAL_ANNULUS,
                    annulus_for=ANNULUS_FOR, masked_pixels="mirror"):
    """Kron radius and AUTO fluxes of objects of a mosaic.

    Parameters
    ----------
    image : array_like, shape (band, height, width)
        The mosaic's bands (a Zarr array; read in cells).
    mask : array_like of uint8, same shape
        Flags; any non-zero bit leaves the pixel out.
    labels : array_like of int, shape (height, width)
        The exclusive segmentation map (catalog IDs, 0 = sky).
    ids : ndarray of int
        Each object's ID in ``labels``.
    x, y : ndarray of float
        Centres (0-based px).
    a_image, b_image, theta_image : ndarray of float
        Second-moment semi-axes (px) and angle (degrees counter-clockwise from +x).
    noise : sequence of float, optional
        Per band pixel σ (used where ``weight`` is None).
    weight : array_like, optional
        Inverse-variance maps, shape of ``image``.
    correlation : sequence, optional
        Per band, the sky noise's correlation coefficients at
        :data:`astrodask.noise_correlation.LAGS` (or None).
    annulus : (float, float) or None
        Inner and outer scale of the local-background annulus, in units of
        the aperture (:data:`LOCAL_ANNULUS`); None: no local background.
    annulus_for : {"neighbours", "all"}
        Which apertures the local background comes off: those that hold
        another object's pixels (:data:`ANNULUS_FOR`), or every one.
    masked_pixels : {"mirror", "ignore"}
        What an aperture's excluded pixels (another object's, flagged) hold:
        the value of the pixel mirrored through the object's centre where
        that one is free, else nothing (SExtractor's ``MASK_TYPE
        CORRECT``), or nothing at all.

    Returns
    -------
    dict of ndarray
        ``kron_radius`` (in units of the ellipse; NaN where not measured),
        ``flux_auto`` and ``flux_auto_err`` of shape (n, band), ``auto_flags``, and
        ``flux_radius``: the half-light radius (px) on the sum of the bands, of
        the light within the circle of the aperture's semi-major axis, less the
        local background (NaN where that light is not positive).
    """
    import sep

    if masked_pixels not in ("mirror", "ignore"):
        raise ValueError(f"masked_pixels must be 'mirror' or 'ignore', not {masked_pixels!r}")
    if annulus_for not in ANNULUS_CHOICES:
        raise ValueError(f"annulus_for must be one of {ANNULUS_CHOICES}, not {annulus_for!r}")
    n, n_bands = len(ids), image.shape[0]
    height, width = labels.shape
    kron = np.full(n, np.nan)
    flux = np.full((n, n_bands), np.nan)
    error = np.full((n, n_bands), np.nan)
    flags = np.zeros(n, dtype=np.int32)
    half_light = np.full(n, np.nan)
    if n == 0:
        return {"kron_radius": kron, "flux_auto": flux, "flux_auto_err": error,
                "auto_flags": flags, "flux_radius": half_light}
    a, b, theta = _ellipses(np.asarray(a_image, float), np.asarray(b_image, float),
                            np.asarray(theta_image, float))
    outer = 1.0 if annulus is None else float(annulus[1])
    reach = _reach(a, outer)
    x, y = np.asarray(x, float), np.asarray(y, float)
    ids = np.asarray(ids, dtype=np.int32)
    factors = [_correlation_factor(c) for c in (correlation or [None] * n_bands)]
    placed = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    for group in _groups(x[placed], y[placed], reach[placed]):
        members = placed[group]
        y0 = max(int(np.floor((y[members] - reach[members]).min())), 0)
        x0 = max(int(np.floor((x[members] - reach[members]).min())), 0)
        y1 = min(int(np.ceil((y[members] + reach[members]).max())) + 1, height)
        x1 = min(int(np.ceil((x[members] + reach[members]).max())) + 1, width)
        if y1 <= y0 or x1 <= x0:
            continue
        bands = np.asarray(image[:, y0:y1, x0:x1], dtype=np.float64)
        bad = ((np.asarray(mask[:, y0:y1, x0:x1]) != 0).any(axis=0)
               | ~np.isfinite(bands).all(axis=0))
        bands = np.where(bad, 0.0, bands)
        if weight is not None:
            w = np.asarray(weight[:, y0:y1, x0:x1], dtype=np.float64)
            variance = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 0.0)
        elif noise is not None:
            variance = np.broadcast_to(np.square(np.asarray(noise, float))[:, None, None],
                                       bands.shape)
        else:
            variance = None
        objects = np.ascontiguousarray(np.asarray(labels[y0:y1, x0:x1], dtype=np.int32))
        # flagged pixels are another object's to SEP: left out of every sum, never rescaled
        segmap = np.where(bad, FLAGGED_LABEL, objects).astype(np.int32)
        cx, cy = x[members] - x0, y[members] - y0
        shape = (a[members], b[members], theta[members])
        own = dict(seg_id=ids[members], segmap=segmap)
        detection = np.ascontiguousarray(bands.sum(axis=0))
        r_k, k_flags = sep.kron_radius(detection, cx, cy, *shape, KRON_WINDOW, **own)
        measured = np.isfinite(r_k) & (r_k > 0)
        kron[members] = np.where(measured, r_k, np.nan)
        scale = np.where(measured, np.maximum(KRON_FACTOR * r_k, KRON_MIN), KRON_MIN)
        # the aperture and its annulus may not reach past what the cell read around them
        room = (reach[members] - 1) / (shape[0] * outer)
        flagged = (np.where(measured, 0, AUTO_FLAGS["no_kron_radius"])
                   | np.where(scale > room, AUTO_FLAGS["truncated"], 0)
                   | np.where(k_flags & sep.APER_TRUNC, AUTO_FLAGS["truncated"], 0))
        scale = np.minimum(scale, room)
        ellipse = (cx, cy, *shape, scale)
        ones = np.ones(detection.shape)
        area, _, f = sep.sum_ellipse(ones, *ellipse, subpix=5, **own)
        flagged |= np.where(f & sep.APER_TRUNC, AUTO_FLAGS["truncated"], 0)
        sums = np.empty((len(members), n_bands))
        variances = np.zeros((len(members), n_bands))
        for band in range(n_bands):
            err = {} if variance is None else {"var": np.ascontiguousarray(variance[band])}
            total, total_err, _ = sep.sum_ellipse(np.ascontiguousarray(bands[band]), *ellipse,
                                                  subpix=5, **err, **own)
            sums[:, band], variances[:, band] = total, np.square(total_err)
        if masked_pixels == "mirror":
            for k in np.flatnonzero(f & sep.APER_HASMASKED):
                sums[k], variances[k], area[k] = _mirrored_sums(
                    bands, variance, segmap, ids[members[k]], cx[k], cy[k], shape[0][k],
                    shape[1][k], shape[2][k], scale[k])
        _, _, shared = sep.sum_ellipse(ones, *ellipse, subpix=1, seg_id=ids[members],
                                       segmap=objects)
        neighbours = (shared & sep.APER_HASMASKED) != 0
        flagged |= np.where(neighbours, AUTO_FLAGS["neighbours"], 0)
        level = np.zeros(len(members))  # the detection image's local background
        wanted = neighbours if annulus_for == "neighbours" else np.ones(len(members), bool)
        if annulus is not None and wanted.any():
            k = np.flatnonzero(wanted)  # the annuli of these apertures only
            background, background_var, lost = _local_background(
                bands, variance, segmap, cx[k], cy[k], tuple(v[k] for v in shape), scale[k],
                annulus)
            taken = k[~lost]
            sums[taken] -= background[~lost] * area[taken, None]
            variances[taken] += background_var[~lost] * np.square(area[taken])[:, None]
            flagged[k[lost]] |= AUTO_FLAGS["no_local_background"]
            level[taken] = background[~lost].sum(axis=1)
        half_light[members] = _half_light_radius(detection, cx, cy, scale * shape[0], level, own)
        flux[members] = sums
        if variance is not None:
            error[members] = np.sqrt(variances * np.asarray(factors)[None, :])
        held, _, _ = sep.sum_ellipse(bad.astype(np.float64), *ellipse, subpix=1)
        flagged |= np.where(held > 0, AUTO_FLAGS["masked"], 0)
        flags[members] = flagged
    return {"kron_radius": kron, "flux_auto": flux, "flux_auto_err": error, "auto_flags": flags,
            "flux_radius": half_light}


def _excluded(segmap, own):
    """Pixels of ``segmap`` that are not the sky's nor object ``own``'s."""
    return (segmap != 0) & (segmap != own)


def _mirrored_sums(bands, variance, segmap, own, cx, cy, a, b, theta, scale):
    """Per band sum and variance of one object's aperture, its excluded pixels replaced
    by their mirror images through ``(cx, cy)`` where those are free (else 0), and the
    area that holds a value (what a local background is taken off)."""
    import sep

    half = int(np.ceil(scale * a)) + 1
    ya, xa = max(int(np.floor(cy)) - half, 0), max(int(np.floor(cx)) - half, 0)
    yb = min(int(np.floor(cy)) + half + 2, segmap.shape[0])
    xb = min(int(np.floor(cx)) + half + 2, segmap.shape[1])
    jj, ii = np.nonzero(_excluded(segmap[ya:yb, xa:xb], own))
    mj = np.rint(2 * cy - (jj + ya)).astype(np.int64)
    mi = np.rint(2 * cx - (ii + xa)).astype(np.int64)
    inside = (mj >= 0) & (mj < segmap.shape[0]) & (mi >= 0) & (mi < segmap.shape[1])
    free = np.zeros(len(jj), dtype=bool)
    free[inside] = ~_excluded(segmap[mj[inside], mi[inside]], own)

    def mirrored(plane):
        """The box of ``plane`` with its excluded pixels filled from their mirror images."""
        cut = np.array(plane[ya:yb, xa:xb])
        cut[jj, ii] = 0.0
        cut[jj[free], ii[free]] = plane[mj[free], mi[free]]
        return cut

    n_bands = bands.shape[0]
    sums, variances = np.empty(n_bands), np.zeros(n_bands)
    ellipse = tuple(np.array([v]) for v in (cx - xa, cy - ya, a, b, theta, scale))
    held = np.ones((yb - ya, xb - xa))
    held[jj[~free], ii[~free]] = 0.0
    area = sep.sum_ellipse(held, *ellipse, subpix=5)[0][0]
    for band in range(n_bands):
        err = {} if variance is None else {"var": mirrored(variance[band])}
        total, total_err, _ = sep.sum_ellipse(mirrored(bands[band]), *ellipse, subpix=5, **err)
        sums[band], variances[band] = total[0], total_err[0] ** 2
    return sums, variances, area


def _half_light_radius(detection, cx, cy, rmax, level, own):
    """Radius (px) of the circle about each centre that holds half the light of the circle
    of radius ``rmax``, less ``level`` per pixel (SExtractor's ``FLUX_RADIUS`` at 0.5);
    excluded pixels left out, NaN where that light is not positive.

    The growth curve is sampled at :data:`GROWTH_STEPS` circles and interpolated
    linearly in the first step that reaches half the light; each object's circles
    stop there (its later, larger circles cannot change the answer).
    """
    import sep

    ids, segmap = own["seg_id"], own["segmap"]
    ones = np.ones(detection.shape)

    def light(step, k):
        """The light of objects ``k`` within their circle of the growth curve's ``step``."""
        r = rmax[k] * step / GROWTH_STEPS
        enclosed, _, _ = sep.sum_circle(detection, cx[k], cy[k], r, subpix=5, seg_id=ids[k],
                                        segmap=segmap)
        # the circles' areas only where a background comes off
        sub = np.flatnonzero(level[k] != 0)
        if len(sub):
            area, _, _ = sep.sum_circle(ones, cx[k][sub], cy[k][sub], r[sub], subpix=5,
                                        seg_id=ids[k][sub], segmap=segmap)
            enclosed[sub] -= level[k][sub] * area
        return enclosed

    everyone = np.arange(len(cx))
    half = 0.5 * light(GROWTH_STEPS, everyone)
    radius = np.full(len(cx), np.nan)
    below = np.zeros(len(cx))  # the light of the previous step (none at step 0)
    active = np.flatnonzero(half > 0)
    for step in range(1, GROWTH_STEPS + 1):
        if not len(active):
            break
        above = light(step, active)
        reached = above >= half[active]
        done = active[reached]
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.clip((half[done] - below[done]) / (above[reached] - below[done]), 0.0, 1.0)
        radius[done] = rmax[done] * (step - 1 + part) / GROWTH_STEPS
        below[active] = above
        active = active[~reached]
    return radius


def _local_background(bands, variance, segmap, cx, cy, shape, scale, annulus):
    """Mean of the annulus's pixels outside every segment and flag, its variance, and
    whether none was free, per object and band."""
    import sep

    free = (segmap == 0).astype(np.float64)
    ring = (cx, cy, *shape, scale * annulus[0], scale * annulus[1])
    free_area, _, _ = sep.sum_ellipann(free, *ring, subpix=5)
    lost = ~(free_area > 0)
    area = np.where(lost, 1.0, free_area)[:, None]
    n_bands = bands.shape[0]
    mean = np.zeros((len(cx), n_bands))
    mean_var = np.zeros((len(cx), n_bands))
    for band in range(n_bands):
        total, _, _ = sep.sum_ellipann(np.ascontiguousarray(bands[band] * free), *ring, subpix=5)
        mean[:, band] = total
        if variance is not None:
            spread, _, _ = sep.sum_ellipann(np.ascontiguousarray(variance[band] * free), *ring,
                                            subpix=5)
            mean_var[:, band] = spread
    return mean / area, mean_var / np.square(area), lost


def _groups(x, y, reach):
    """Object indices by cell of their position; an object whose reach exceeds a cell alone."""
    large = reach > CELL
    groups = [np.array([k]) for k in np.flatnonzero(large)]
    small = np.flatnonzero(~large)
    if len(small):
        cell = (np.floor(y[small] / CELL).astype(np.int64) * (1 << 32)
                + np.floor(x[small] / CELL).astype(np.int64))
        order = np.argsort(cell, kind="stable")
        _, starts = np.unique(cell[order], return_index=True)
        groups += np.split(small[order], starts[1:])
    return groups


def _correlation_factor(rho):
    """Variance factor of a sum over a region much larger than the noise's correlation."""
    if rho is None:
        return 1.0
    return max(1.0 + 2.0 * float(np.sum(rho)), 0.0)
