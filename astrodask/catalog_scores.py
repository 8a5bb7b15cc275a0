"""A whole-mosaic catalog scored against truth, region by region.

The product of astrodask is the catalog of a whole mosaic, so its quality is
measured there: one-to-one positional matching of catalog objects to true
sources, completeness per S/N bin, purity, star/galaxy accuracy, duplicates,
each also split by where a source lies in the tile grid (interior windows,
near a seam between window cores, edge windows that reach past the mosaic,
near flagged pixels). Positions are 0-based pixels, ``x`` along columns.
"""

import numpy as np

#: S/N bins of the completeness table (detection-image sigma of the truth).
SNR_EDGES = (5.0, 7.0, 10.0, 20.0, 50.0, np.inf)
#: Bins (px) of the distance to the nearest true neighbour, for completeness of blends.
SEPARATION_EDGES = (0.0, 2.0, 3.0, 4.0, 6.0, 10.0, np.inf)


def match_positions(x_a, y_a, x_b, y_b, radius):
    """One-to-one matching of two point sets within ``radius`` pixels.

    Pairs are taken in order of increasing distance (ties by index), so the
    result does not depend on the order of the inputs beyond ties.

    Parameters
    ----------
    x_a, y_a, x_b, y_b : array_like
        Positions of the two sets.
    radius : float
        Largest distance of a match.

    Returns
    -------
    match_a : ndarray of int, shape (len(a),)
        Index into ``b`` of each ``a``'s match, -1 where none.
    match_b : ndarray of int, shape (len(b),)
        The same from ``b`` to ``a``.
    """
    from scipy.spatial import cKDTree

    a = np.column_stack([np.asarray(x_a, float), np.asarray(y_a, float)]).reshape(-1, 2)
    b = np.column_stack([np.asarray(x_b, float), np.asarray(y_b, float)]).reshape(-1, 2)
    match_a = np.full(len(a), -1, dtype=np.int64)
    match_b = np.full(len(b), -1, dtype=np.int64)
    if not len(a) or not len(b):
        return match_a, match_b
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="ndarray")
    order = np.lexsort((pairs["j"], pairs["i"], pairs["v"]))
    for i, j in zip(pairs["i"][order], pairs["j"][order]):
        if match_a[i] < 0 and match_b[j] < 0:
            match_a[i], match_b[j] = j, i
    return match_a, match_b


def region_masks(x, y, grid, flagged=None, seam_width=16, flag_distance=5):
    """Where each position lies in the tile grid.

    Parameters
    ----------
    x, y : array_like
        0-based mosaic pixel positions.
    grid : TileGrid
    flagged : ndarray of bool, shape (height, width), optional
        Pixels without data in any band (padding excluded).
    seam_width : int
        ``seam``: within this many pixels of an edge between two window cores.
    flag_distance : float
        ``near_flagged``: within this many pixels of a flagged pixel.

    Returns
    -------
    dict of str to ndarray of bool
        ``interior`` (the owning window lies wholly inside the mosaic),
        ``edge_window`` (it reaches past the mosaic edge), ``seam`` and
        ``near_flagged``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    iy = np.clip(np.floor(y).astype(int) // grid.core, 0, grid.shape[0] - 1)
    ix = np.clip(np.floor(x).astype(int) // grid.core, 0, grid.shape[1] - 1)
    y0 = iy * grid.core - grid.halo
    x0 = ix * grid.core - grid.halo
    edge = (y0 < 0) | (x0 < 0) | (y0 + grid.tile > grid.height) | (x0 + grid.tile > grid.width)
    dy = np.abs(y + 0.5 - np.round((y + 0.5) / grid.core) * grid.core)
    dx = np.abs(x + 0.5 - np.round((x + 0.5) / grid.core) * grid.core)
    inner_y = (np.round((y + 0.5) / grid.core) > 0) & \
        (np.round((y + 0.5) / grid.core) * grid.core < grid.height)
    inner_x = (np.round((x + 0.5) / grid.core) > 0) & \
        (np.round((x + 0.5) / grid.core) * grid.core < grid.width)
    seam = ((dy <= seam_width) & inner_y) | ((dx <= seam_width) & inner_x)
    near = np.zeros(len(x), dtype=bool)
    if flagged is not None and np.any(flagged):
        from scipy import ndimage

        distance = ndimage.distance_transform_edt(~flagged)
        yi = np.clip(np.round(y).astype(int), 0, grid.height - 1)
        xi = np.clip(np.round(x).astype(int), 0, grid.width - 1)
        near = distance[yi, xi] <= flag_distance
    return {"interior": ~edge, "edge_window": edge, "seam": seam, "near_flagged": near}


def _ratio(numerator, denominator):
    return float(numerator) / float(denominator) if denominator else float("nan")


def nearest_neighbour_distance(x, y, neighbours=None):
    """Distance (px) from each point to the nearest other point among ``neighbours``.

    Parameters
    ----------
    x, y : array_like
        Positions.
    neighbours : array_like of bool, optional
        Which points count as neighbours (default: all).

    Returns
    -------
    ndarray of float
        ``inf`` where no other neighbour exists.
    """
    from scipy.spatial import cKDTree

    points = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    index = (np.arange(len(points)) if neighbours is None
             else np.flatnonzero(np.asarray(neighbours, dtype=bool)))
    if not len(index):
        return np.full(len(points), np.inf)
    k = min(2, len(index))
    found, nearest = cKDTree(points[index]).query(points, k=k)
    found, nearest = found.reshape(-1, k), index[nearest.reshape(-1, k)]
    # a point that is itself a neighbour finds itself first
    itself = nearest[:, 0] == np.arange(len(points))
    second = found[:, 1] if k == 2 else np.full(len(points), np.inf)
    return np.where(itself, second, found[:, 0])


def score_catalog(catalog, truth, grid, flagged=None, radius=2.0, snr_min=10.0,
                  snr_edges=SNR_EDGES, separation_edges=SEPARATION_EDGES,
                  neighbour_snr_min=5.0):
    """Completeness, purity, classes and duplicates of a catalog against truth.

    Parameters
    ----------
    catalog : dict-like
        Columns ``x``, ``y`` and optionally ``source_class`` (``star``/``galaxy``),
        as in the merged catalog.
    truth : dict-like
        Columns ``x``, ``y``, ``snr`` and ``class`` of the true sources.
    grid : TileGrid
        The tile grid the catalog was made on (for the regions).
    flagged : ndarray of bool, optional
        Pixels without data; true sources centred on them are not counted.
    radius : float
        Match radius in pixels (one-to-one).
    snr_min : float
        Completeness, purity and classes are reported for true S/N above this.
    snr_edges : sequence of float
        Bins of true S/N for ``completeness_by_snr``.
    separation_edges : sequence of float
        Bins (px) of the distance from each true source to its nearest true
        neighbour of S/N >= ``neighbour_snr_min``, for
        ``completeness_by_separation`` (sources with S/N >= ``snr_min``):
        how completeness falls for blended pairs.
    neighbour_snr_min : float
        The least true S/N of a source that counts as a neighbour there.

    Returns
    -------
    dict
        ``completeness``, ``purity``, ``star_accuracy``, ``galaxy_accuracy``,
        ``duplicates``, ``n_catalog``, ``n_truth``, ``completeness_by_snr``
        and ``completeness_by_separation`` (each a list of ``(low, high,
        completeness, n)``), ``offset_by_snr`` (per bin of true S/N, the
        median distance in px from each matched true source to its catalog
        object: ``(low, high, median, n matched)``), and ``regions``: the same
        completeness/purity/duplicates per region of :func:`region_masks`.
    """
    cx, cy = np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)
    tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    snr = np.asarray(truth["snr"], float)
    tclass = np.asarray(truth["class"]).astype(str)
    cclass = (np.asarray(catalog["source_class"], dtype=object) if "source_class" in catalog
              else np.full(len(cx), None, dtype=object))
    inside = (tx >= 0) & (ty >= 0) & (tx < grid.width) & (ty < grid.height)
    if flagged is not None:
        yi = np.clip(np.round(ty).astype(int), 0, grid.height - 1)
        xi = np.clip(np.round(tx).astype(int), 0, grid.width - 1)
        inside &= ~flagged[yi, xi]
    to_truth, to_cat = match_positions(cx, cy, tx, ty, radius)
    matched = to_cat >= 0
    # a duplicate: an unmatched catalog object within the radius of a matched true source
    _, near = match_positions(tx[matched], ty[matched], cx[to_truth < 0], cy[to_truth < 0],
                              radius)
    duplicate = np.zeros(len(cx), dtype=bool)
    duplicate[np.flatnonzero(to_truth < 0)[near >= 0]] = True

    bright = inside & (snr >= snr_min)
    truth_regions = region_masks(tx, ty, grid, flagged)
    cat_regions = region_masks(cx, cy, grid, flagged)

    def summary(t_sel, c_sel):
        return {"completeness": _ratio((matched & t_sel).sum(), t_sel.sum()),
                "n_truth": int(t_sel.sum()),
                "purity": _ratio((to_truth[c_sel] >= 0).sum(), c_sel.sum()),
                "n_catalog": int(c_sel.sum()),
                "duplicates": int((duplicate & c_sel).sum())}

    result = summary(bright, np.ones(len(cx), dtype=bool))
    for kind in ("star", "galaxy"):
        sel = bright & matched & (tclass == kind)
        right = np.array([cclass[to_cat[i]] == kind for i in np.flatnonzero(sel)], dtype=bool)
        result[f"{kind}_accuracy"] = _ratio(right.sum(), sel.sum())
        result[f"n_{kind}"] = int(sel.sum())

    def binned(values, edges, selection):
        bins = [selection & (values >= lo) & (values < hi)
                for lo, hi in zip(edges[:-1], edges[1:])]
        return [(float(lo), float(hi), _ratio((matched & b).sum(), b.sum()), int(b.sum()))
                for lo, hi, b in zip(edges[:-1], edges[1:], bins)]

    result["completeness_by_snr"] = binned(snr, snr_edges, inside)
    offset = np.full(len(tx), np.nan)
    offset[matched] = np.hypot(cx[to_cat[matched]] - tx[matched],
                               cy[to_cat[matched]] - ty[matched])
    result["offset_by_snr"] = [
        (float(lo), float(hi), float(np.median(offset[b])) if b.any() else float("nan"),
         int(b.sum()))
        for lo, hi in zip(snr_edges[:-1], snr_edges[1:])
        for b in [inside & matched & (snr >= lo) & (snr < hi)]]
    separation = nearest_neighbour_distance(tx, ty, snr >= neighbour_snr_min)
    result["completeness_by_separation"] = binned(separation, separation_edges, bright)
    result["regions"] = {name: summary(bright & truth_regions[name], cat_regions[name])
                         for name in truth_regions}
    return result


def pooled_regions(scores, reference="interior"):
    """Completeness and purity per region, pooled over several fields' :func:`score_catalog`.

    Per-field regions hold a few hundred sources, so a completeness differs
    between two regions by a few points by chance alone; pooling the fields
    counts every source once.

    Parameters
    ----------
    scores : list of dict
        :func:`score_catalog` results.
    reference : str
        Region the others are compared with.

    Returns
    -------
    dict
        Per region: ``completeness``, ``n_truth``, ``purity``, ``n_catalog``,
        and ``difference`` (completeness minus the reference's) with its
        binomial standard error ``difference_error``.
    """
    pooled = {}
    for name in scores[0]["regions"] if scores else ():
        parts = [s["regions"][name] for s in scores]
        n = sum(p["n_truth"] for p in parts)
        m = sum(p["n_catalog"] for p in parts)
        found = sum(p["completeness"] * p["n_truth"] for p in parts if p["n_truth"])
        real = sum(p["purity"] * p["n_catalog"] for p in parts if p["n_catalog"])
        pooled[name] = {"completeness": _ratio(round(found), n), "n_truth": n,
                        "purity": _ratio(round(real), m), "n_catalog": m}
    ref = pooled.get(reference)
    for region in pooled.values():
        c, n = region["completeness"], region["n_truth"]
        if ref is None or not n or not ref["n_truth"]:
            region["difference"] = region["difference_error"] = float("nan")
            continue
        region["difference"] = c - ref["completeness"]
        region["difference_error"] = float(np.sqrt(
            c * (1 - c) / n + ref["completeness"] * (1 - ref["completeness"]) / ref["n_truth"]))
    return pooled


def catalog_agreement(a, b, radius=1.0):
    """Fractions of two catalogs' objects with a one-to-one counterpart within ``radius``.

    Returns
    -------
    (float, float)
        Matched fraction of ``a`` and of ``b``.
    """
    to_b, to_a = match_positions(a["x"], a["y"], b["x"], b["y"], radius)
    return _ratio((to_b >= 0).sum(), len(to_b)), _ratio((to_a >= 0).sum(), len(to_a))


def morphology_confusion(catalog, truth, radius=2.0, snr_min=20.0, classes=None):
    """Per-object morphology of a catalog against the truth's classes.

    Each true source with S/N ≥ ``snr_min`` that has a catalog counterpart
    (one-to-one within ``radius`` px) adds one count to row "its true class",
    column "the catalog's ``morphology``" (the dominant flux-weighted U-Net
    class, Morpheus eq. 16).

    Parameters
    ----------
    catalog : dict-like
        Columns ``x``, ``y`` and ``morphology`` (None where unmeasured).
    truth : dict-like
        Columns ``x``, ``y``, ``snr`` and ``morphology``.
    classes : sequence of str, optional
        Rows and columns, in order (default
        :data:`astrodask.classes.SOURCE_CLASSES`).

    Returns
    -------
    dict
        ``classes``; ``matrix`` (list of rows, truth × catalog; objects
        whose catalog morphology is missing are not counted); ``recall``
        (per true class, nan where no object); ``n`` per true class.
    """
    from .classes import SOURCE_CLASSES

    classes = list(classes or SOURCE_CLASSES)
    to_truth, to_cat = match_positions(catalog["x"], catalog["y"], truth["x"], truth["y"], radius)
    predicted = np.asarray(catalog["morphology"], dtype=object)
    true_class = np.asarray(truth["morphology"]).astype(str)
    snr = np.asarray(truth["snr"], float)
    index = {name: k for k, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t in np.flatnonzero((to_cat >= 0) & (snr >= snr_min)):
        row, column = index.get(true_class[t]), index.get(predicted[to_cat[t]])
        if row is not None and column is not None:
            matrix[row, column] += 1
    totals = matrix.sum(axis=1)
    return {"classes": classes, "matrix": matrix.tolist(),
            "recall": {name: _ratio(matrix[k, k], totals[k]) for k, name in enumerate(classes)},
            "n": {name: int(totals[k]) for k, name in enumerate(classes)}}


def shape_agreement(catalog, truth, radius=2.0, snr_edges=(10.0, 30.0, 100.0), max_q=0.5):
    """Second-moment shapes of a catalog against the true galaxies' axes, per S/N bin.

    True galaxies with a catalog counterpart (one-to-one within ``radius``
    px) are binned by S/N (``snr_edges``, the last bin open). Per bin: the
    median angle between the catalog's ``theta_image`` and the true
    position angle over galaxies with axis ratio ``q < max_q`` (an axis:
    angles 180 degrees apart agree), the share of those within 15 degrees,
    and the correlation of the catalog's ``b_image / a_image`` with the true
    ``q`` over all matched galaxies of the bin.

    Parameters
    ----------
    catalog : dict-like
        Columns ``x``, ``y``, ``a_image``, ``b_image``, ``theta_image`` (deg,
        counter-clockwise from +x).
    truth : dict-like
        Columns ``x``, ``y``, ``class``, ``snr``, ``q``, ``position_angle``
        (deg, counter-clockwise from +x).

    Returns
    -------
    list of dict
        One per bin: ``snr_min``, ``snr_max`` (None for the last), ``n_elongated``,
        ``median_angle_error``, ``within_15_deg``, ``n``, ``axis_ratio_correlation``
        (NaN where a bin has too few objects).
    """
    to_cat, _ = match_positions(truth["x"], truth["y"], catalog["x"], catalog["y"], radius)
    snr, q = np.asarray(truth["snr"], float), np.asarray(truth["q"], float)
    has = to_cat >= 0
    galaxy = (np.asarray(truth["class"]).astype(str) == "galaxy") & has
    a, b, theta = (np.asarray(catalog[k], float) for k in ("a_image", "b_image", "theta_image"))
    # each true source's counterpart's values (NaN without one)
    ratio, turn = np.full(len(q), np.nan), np.full(len(q), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio[has] = b[to_cat[has]] / a[to_cat[has]]
    turn[has] = np.abs((theta[to_cat[has]] - np.asarray(truth["position_angle"], float)[has]
                        + 90.0) % 180.0 - 90.0)
    out = []
    for lo, hi in zip(snr_edges, list(snr_edges[1:]) + [None]):
        in_bin = galaxy & (snr >= lo) & (snr < (np.inf if hi is None else hi))
        elongated = in_bin & (q < max_q) & np.isfinite(turn)
        pairs = in_bin & np.isfinite(ratio)
        correlation = (float(np.corrcoef(ratio[pairs], q[pairs])[0, 1])
                       if pairs.sum() >= 3 else float("nan"))
        out.append({"snr_min": lo, "snr_max": hi, "n_elongated": int(elongated.sum()),
                    "median_angle_error": (float(np.median(turn[elongated])) if elongated.any()
                                           else float("nan")),
                    "within_15_deg": _ratio((turn[elongated] < 15.0).sum(), elongated.sum()),
                    "n": int(pairs.sum()), "axis_ratio_correlation": correlation})
    return out


def bright_sources(catalog, truth, mask_flux=None, band="r", snr_min=100.0, radius=5.0,
                   extended_hlr=1.0, large_hlr=1.5, flagged=None, segment_flux=None):
    """Bright true sources the catalog lost, and the fluxes of its large isolated galaxies.

    A bright source (true S/N >= ``snr_min``, centred on the mosaic and, with
    ``flagged``, not on a flagged pixel) is *lost* when no catalog object
    lies within ``radius`` pixels of it: a position a few pixels off (the
    knots of a large irregular galaxy) is not a loss. A *large
    isolated galaxy* is a bright true galaxy with half-light radius above
    ``large_hlr`` arcsec whose mask overlaps no other (truth column
    ``n_neighbours`` 0) and whose box holds no flagged pixel; its flux ratio
    is the catalog flux of the nearest object within ``radius`` over the
    noiseless flux in its true mask; with ``segment_flux``, also the
    noiseless flux in that object's segment over the same: the catalog's
    ratio minus its noise, i.e. how much of the galaxy the segment holds.

    Parameters
    ----------
    catalog : dict-like
        Columns ``x``, ``y`` and, for the fluxes, ``flux_<band>``.
    truth : dict-like
        The simulator's truth (``x``, ``y``, ``snr``, ``hlr``, ``class``,
        ``n_neighbours``, ``bbox_*``).
    mask_flux : ndarray, optional
        Noiseless flux of each true source in its true mask, in ``band``
        (same order as ``truth``); without it no flux ratios.
    band : str
        The band of ``mask_flux``.
    snr_min, radius, extended_hlr, large_hlr : float
        As above; ``extended_hlr`` (arcsec) splits the lost sources.
    flagged : ndarray of bool, optional
        Pixels without data.
    segment_flux : ndarray, optional
        Noiseless flux in ``band`` within each catalog object's segment
        (same order as ``catalog``).

    Returns
    -------
    dict
        ``n_bright``, ``lost``, ``lost_extended`` (of the lost, half-light
        radius above ``extended_hlr``), ``n_large``, ``large_found`` and
        ``large_flux_ratios`` (one per large isolated galaxy found, in
        truth order), ``large_within_3pct``; with ``segment_flux``,
        ``large_segment_ratios`` and ``large_segment_within_3pct``.
    """
    from scipy.spatial import cKDTree

    tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    snr, hlr = np.asarray(truth["snr"], float), np.asarray(truth["hlr"], float)
    cx, cy = np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)
    if len(cx):
        distance, nearest = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([tx, ty]))
    else:
        distance, nearest = np.full(len(tx), np.inf), np.zeros(len(tx), dtype=int)
    found = distance <= radius
    # sources centred off the mosaic or on flagged pixels cannot be catalogued
    bright = (snr >= snr_min) & (tx >= -0.5) & (ty >= -0.5)
    if flagged is not None:
        height, width = flagged.shape
        bright &= (tx < width - 0.5) & (ty < height - 0.5)
        inside = np.flatnonzero(bright)
        bright[inside] = ~flagged[np.round(ty[inside]).astype(int), np.round(tx[inside]).astype(int)]
    large = (bright & (hlr > large_hlr) & (np.asarray(truth["class"]).astype(str) == "galaxy")
             & (np.asarray(truth["n_neighbours"]) == 0))
    if flagged is not None:
        for k in np.flatnonzero(large):
            box = (slice(max(int(truth["bbox_y0"][k]), 0), max(int(truth["bbox_y1"][k]), 0)),
                   slice(max(int(truth["bbox_x0"][k]), 0), max(int(truth["bbox_x1"][k]), 0)))
            large[k] = not flagged[box].any()
    result = {"n_bright": int(bright.sum()), "lost": int((bright & ~found).sum()),
              "lost_extended": int((bright & ~found & (hlr > extended_hlr)).sum()),
              "n_large": int(large.sum()), "large_found": int((large & found).sum())}
    if mask_flux is not None:
        flux = np.asarray(catalog[f"flux_{band}"], float)
        chosen = np.flatnonzero(large & found)
        ratios = flux[nearest[chosen]] / np.asarray(mask_flux, float)[chosen]
        result["large_flux_ratios"] = [float(v) for v in ratios]
        result["large_within_3pct"] = int((np.abs(ratios - 1.0) <= 0.03).sum())
        if segment_flux is not None:
            held = (np.asarray(segment_flux, float)[nearest[chosen]]
                    / np.asarray(mask_flux, float)[chosen])
            result["large_segment_ratios"] = [float(v) for v in held]
            result["large_segment_within_3pct"] = int((np.abs(held - 1.0) <= 0.03).sum())
    return result
