"""Star/galaxy separation that knows the PSF.

A source is a star when it looks like the PSF. The Mask R-CNN learned what a
star looks like in the pixels it was trained on; under another seeing or
pixel scale its idea of "small" no longer matches the PSF. This module adds
what the network lacks: how concentrated each source is *relative to the
mosaic's own PSF*, measured at ingest from its stars.

The concentration of a source is the ratio of its flux in two circular
apertures, ``F(r1) / F(r2)`` with ``r1 = max(FWHM / 2, 1 px)`` and
``r2 = 3 r1``; a point source has the PSF's ratio whatever the seeing, and a
galaxy a smaller one. A logistic model (:class:`StarGalaxyModel`) of the
concentration relative to the PSF, the aperture S/N and the PSF's FWHM in
pixels (how far a galaxy of a given size stands out from the PSF depends on
it), fitted on simulated fields whose seeing, PSF family, pixel scale and
depth are drawn at random, gives the star probability; it lives in the Mask
R-CNN's model card (``star_galaxy``). Adding the network's own score to it
made it worse on fields it had not seen (the network's errors depend on the
field), so the engine uses it instead of the network's class where the
network is out of its depth: by default (``auto``) where the mosaic's FWHM
lies outside the range the network was trained on (:func:`use_psf_classes`).

Positions are 0-based pixels, ``x`` along columns.
"""

from dataclasses import asdict, dataclass

import numpy as np

from .psf import aperture_radii, concentration

#: Each feature a model may use, from the deficit ``1 - relative concentration``,
#: ``log10`` of the S/N and ``log10`` of the PSF FWHM (px).
FEATURE_TERMS = {
    "concentration_deficit": lambda deficit, log_snr, log_fwhm: deficit,
    "log10_snr": lambda deficit, log_snr, log_fwhm: log_snr,
    "deficit_x_log10_snr": lambda deficit, log_snr, log_fwhm: deficit * log_snr,
    "log10_fwhm_px": lambda deficit, log_snr, log_fwhm: log_fwhm,
    "deficit_x_log10_fwhm_px": lambda deficit, log_snr, log_fwhm: deficit * log_fwhm,
}

#: Names of the features of the models this version fits, in the order of :func:`design_matrix`.
FEATURES = tuple(FEATURE_TERMS)

#: The features of cards fitted before the PSF's FWHM was one (still read).
FEATURES_WITHOUT_FWHM = FEATURES[:3]


def design_matrix(relative_concentration, snr, fwhm_px=None, features=FEATURES,
                  fwhm_range_px=None):
    """The model's features, one row per source.

    Parameters
    ----------
    relative_concentration : array_like
        Concentration divided by the PSF's (about 1 for a star).
    snr : array_like
        S/N in the outer aperture.
    fwhm_px : float or array_like, optional
        The PSF FWHM (px) of each source's mosaic; needed by the FWHM features.
    features : sequence of str
        Names from :data:`FEATURE_TERMS`.
    fwhm_range_px : (float, float), optional
        The FWHM is clipped to this range first: the model is not extrapolated
        beyond the FWHMs it was fitted on.
    """
    deficit = 1.0 - np.asarray(relative_concentration, dtype=np.float64)
    log_snr = np.log10(np.clip(np.asarray(snr, dtype=np.float64), 1.0, None))
    if fwhm_px is None:
        if any("fwhm" in name for name in features):
            raise ValueError("these star/galaxy features need the PSF FWHM")
        log_fwhm = np.full(deficit.shape, np.nan)
    else:
        fwhm = np.broadcast_to(np.asarray(fwhm_px, dtype=np.float64), deficit.shape)
        if fwhm_range_px is not None:
            fwhm = np.clip(fwhm, *fwhm_range_px)
        log_fwhm = np.log10(fwhm)
    return np.column_stack([FEATURE_TERMS[name](deficit, log_snr, log_fwhm)
                            for name in features])


@dataclass(frozen=True)
class StarGalaxyModel:
    """Logistic star probability from the concentration relative to the PSF and the S/N.

    Attributes
    ----------
    mean, scale : tuple of float
        Standardisation of each feature.
    coefficients : tuple of float
        One per feature.
    intercept : float
    features : tuple of str
        :data:`FEATURES`, or :data:`FEATURES_WITHOUT_FWHM` for a card
        fitted before the FWHM was one.
    fwhm_range_px : tuple of float, optional
        The PSF FWHMs (px) the model was fitted on; a mosaic's FWHM is
        clipped to them.
    """

    mean: tuple
    scale: tuple
    coefficients: tuple
    intercept: float
    features: tuple = FEATURES
    fwhm_range_px: tuple = None

    def __post_init__(self):
        if not len(self.mean) == len(self.scale) == len(self.coefficients) == len(self.features):
            raise ValueError("star_galaxy model: mean, scale and coefficients need one value "
                             "per feature")

    def to_dict(self):
        """JSON-ready values (the card's ``star_galaxy`` section)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        features = tuple(d.get("features", FEATURES_WITHOUT_FWHM))
        if features not in (FEATURES, FEATURES_WITHOUT_FWHM):
            raise ValueError("star_galaxy model has other features than this version's")
        fwhm_range = d.get("fwhm_range_px")
        return cls(mean=tuple(d["mean"]), scale=tuple(d["scale"]),
                   coefficients=tuple(d["coefficients"]), intercept=float(d["intercept"]),
                   features=features,
                   fwhm_range_px=None if fwhm_range is None else tuple(fwhm_range))

    def star_probability(self, relative_concentration, snr, saturated=None, fwhm_px=None):
        """Star probability of each source; NaN where the concentration is not measured.

        ``fwhm_px``: the mosaic's PSF FWHM (px), needed by a model with the
        FWHM among its features.

        ``saturated`` (bool per source, optional): a saturated source is a
        star (probability 1) whatever its concentration. A clipped core makes
        a star look extended, and galaxies seldom saturate (on the 14 fit fields
        304 of 308 saturated instances were stars); the fit leaves them out.
        """
        features = design_matrix(relative_concentration, snr, fwhm_px, self.features,
                                 self.fwhm_range_px)
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = z @ np.asarray(self.coefficients) + self.intercept
        p = np.where(np.isfinite(features).all(axis=1), 1.0 / (1.0 + np.exp(-logit)), np.nan)
        return p if saturated is None else np.where(saturated, 1.0, p)


def fit_star_galaxy(features, is_star, l2=1e-2, names=FEATURES, fwhm_range_px=None):
    """Fit a :class:`StarGalaxyModel` (class-balanced logistic regression, L2 penalty).

    Parameters
    ----------
    features : ndarray, shape (n, len(names))
        :func:`design_matrix` of matched sources; rows with a non-finite
        value are left out.
    is_star : array_like of bool
        Truth.
    l2 : float
        Penalty on the standardised coefficients.
    names : tuple of str
        The features' names (:data:`FEATURES` or :data:`FEATURES_WITHOUT_FWHM`).
    fwhm_range_px : (float, float), optional
        The FWHMs the samples span (recorded in the model).

    Returns
    -------
    StarGalaxyModel
    """
    from scipy.optimize import minimize

    features = np.asarray(features, dtype=np.float64)
    if features.shape[1] != len(names):
        raise ValueError(f"{features.shape[1]} feature columns for {len(names)} names")
    y = np.asarray(is_star, dtype=np.float64)
    keep = np.isfinite(features).all(axis=1)
    features, y = features[keep], y[keep]
    if not 0 < y.sum() < len(y):
        raise ValueError("fitting needs both stars and galaxies")
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.column_stack([(features - mean) / scale, np.ones(len(y))])
    weight = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))

    def loss(b):
        logit = z @ b
        value = np.sum(weight * (np.logaddexp(0.0, logit) - y * logit)) / len(y)
        p = 1.0 / (1.0 + np.exp(-logit))
        grad = z.T @ (weight * (p - y)) / len(y)
        value += l2 * b[:-1] @ b[:-1]
        grad[:-1] += 2 * l2 * b[:-1]
        return value, grad

    b = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return StarGalaxyModel(mean=tuple(map(float, mean)), scale=tuple(map(float, scale)),
                           coefficients=tuple(map(float, b[:-1])), intercept=float(b[-1]),
                           features=tuple(names),
                           fwhm_range_px=(None if fwhm_range_px is None
                                          else tuple(map(float, fwhm_range_px))))


def use_psf_classes(mode, card, fwhm_px, missing=None):
    """Whether the PSF-aware model classifies, and why (for run.json).

    Parameters
    ----------
    mode : {"auto", "on", "off"}
        ``auto``: only where the mosaic's FWHM lies outside the card's
        ``trained_psf_fwhm_px`` (there the network's idea of "small" no
        longer matches the PSF; inside it the network is the better judge).
    card : dict
        The Mask R-CNN's card.
    fwhm_px : float or None
        The mosaic's median FWHM (px), None when not measured.
    missing : str, optional
        Why it was not (:func:`missing_psf`), for the reason returned.

    Returns
    -------
    (bool, str)
    """
    if not card.get("star_galaxy"):
        return False, "the card has no star_galaxy model"
    if mode == "off":
        return False, "psf_classes is off"
    if fwhm_px is None:
        return False, ("the store has no measured PSF concentration in every band ("
                       + (missing or "a PSF given with --psf-fwhm has none, nor do stores "
                          "ingested by earlier versions") + ")")
    trained = card.get("trained_psf_fwhm_px")
    if mode == "auto" and trained and trained[0] <= fwhm_px <= trained[1]:
        return False, (f"the PSF FWHM {fwhm_px:.2f} px lies within the {trained[0]:g}-"
                       f"{trained[1]:g} px the network was trained on")
    if mode == "auto" and not trained:
        return True, "the card gives no FWHM range the network was trained on"
    if mode == "auto":
        return True, f"the PSF FWHM {fwhm_px:.2f} px lies outside the network's training"
    return True, "psf_classes is on"


def missing_psf(psf, bands):
    """Why :func:`psf_reference` finds no PSF concentration: one phrase, the bands named.

    Parameters
    ----------
    psf : dict of str to BandPSF, or None
    bands : sequence of str

    Returns
    -------
    str or None
        ``None`` when every band has one.
    """
    if not psf:
        return "the store holds no PSF: ingested by an earlier version"
    reasons = {}  # the bands of each reason, in band order
    for band in bands:
        p = psf.get(band)
        if p is None:
            reason = "no PSF"
        elif p.source == "given":
            reason = "given with --psf-fwhm, without a concentration"
        elif p.fwhm_px is None or p.concentration is None:
            reason = f"not measured at ingest: {p.reason or 'no reason kept'}"
        else:
            continue
        reasons.setdefault(reason, []).append(band)
    return "; ".join(f"{', '.join(b)}: {r}" for r, b in reasons.items()) or None


def psf_reference(psf, bands):
    """The PSF FWHM (px) and concentration the classifier compares sources with.

    Parameters
    ----------
    psf : dict of str to BandPSF, or None
        The mosaic's PSF (:attr:`astrodask.Mosaic.psf`).
    bands : sequence of str
        The bands summed in the detection image.

    Returns
    -------
    dict or None
        ``{"fwhm_px", "concentration"}`` (medians over the bands), or
        ``None`` when a band lacks either: the network's classes are kept.
    """
    if not psf:
        return None
    values = [psf.get(b) for b in bands]
    if any(v is None or v.fwhm_px is None or v.concentration is None for v in values):
        return None
    return {"fwhm_px": float(np.median([v.fwhm_px for v in values])),
            "concentration": float(np.median([v.concentration for v in values]))}


def instance_features(table, detection, origin, reference, noise, saturated=None):
    """Centre, concentration relative to the PSF and S/N of Mask R-CNN instances.

    Parameters
    ----------
    table : pyarrow.Table
        Rows of :data:`astrodask.instances.SCHEMA` for one window.
    detection : ndarray, shape (T, T)
        The window's detection image (``-inf`` on flagged pixels).
    origin : tuple of int
        Mosaic position of the window's pixel (0, 0).
    reference : dict
        :func:`psf_reference` of the mosaic.
    noise : float
        Per-pixel noise of ``detection``.
    saturated : ndarray of bool, shape (T, T), optional
        :func:`astrodask.sky.saturated_pixels` of the window.

    Returns
    -------
    dict of ndarray
        ``rows`` (indices of the instances with a star/galaxy class), and for
        each of them ``x``, ``y`` (mosaic pixels, 0-based; the flux-weighted
        centre of the mask), ``relative_concentration``, ``snr`` and
        ``saturated`` (a saturated pixel in the mask). The
        pixels of the window's other instances (outside this one's mask) are
        left out of both apertures, so a neighbour does not make a star look
        extended.
    """
    from .instances import decode_mask

    class_ids = table.column("class_id").to_numpy()
    rows = np.flatnonzero(class_ids > 0)
    flagged = ~np.isfinite(detection)
    light = np.where(flagged, 0.0, np.clip(detection, 0.0, None))
    boxes = np.column_stack([table.column(c).to_numpy() - o for c, o in
                             (("y0", origin[0]), ("x0", origin[1]),
                              ("y1", origin[0]), ("x1", origin[1]))]).astype(int)
    packed = table.column("mask").to_pylist()
    masks = [decode_mask(packed[i], int(y1 - y0), int(x1 - x0))
             for i, (y0, x0, y1, x1) in enumerate(boxes)]
    # how many instances cover each pixel: the light of neighbours is kept out of the apertures
    cover = np.zeros(detection.shape, np.int16)
    for (y0, x0, y1, x1), mask in zip(boxes, masks):
        cover[y0:y1, x0:x1] += mask
    xs, ys = np.empty(rows.size), np.empty(rows.size)
    ratio, snr = np.full(rows.size, np.nan), np.zeros(rows.size)
    clipped = np.zeros(rows.size, bool)
    reach = int(np.ceil(aperture_radii(reference["fwhm_px"])[1])) + 2
    for k, i in enumerate(rows):
        y0, x0, y1, x1 = boxes[i]
        yy, xx = np.nonzero(masks[i])
        if saturated is not None:
            clipped[k] = bool(saturated[y0:y1, x0:x1][yy, xx].any())
        w = light[y0:y1, x0:x1][yy, xx]
        if w.sum() > 0:
            ys[k], xs[k] = (yy * w).sum() / w.sum() + y0, (xx * w).sum() / w.sum() + x0
        else:
            ys[k], xs[k] = yy.mean() + y0, xx.mean() + x0
        cy0, cx0 = max(int(ys[k]) - reach, 0), max(int(xs[k]) - reach, 0)
        cy1 = min(int(ys[k]) + reach + 1, detection.shape[0])
        cx1 = min(int(xs[k]) + reach + 1, detection.shape[1])
        own = np.zeros((cy1 - cy0, cx1 - cx0), bool)
        oy0, ox0 = max(y0, cy0), max(x0, cx0)
        oy1, ox1 = min(y1, cy1), min(x1, cx1)
        if oy1 > oy0 and ox1 > ox0:
            own[oy0 - cy0:oy1 - cy0, ox0 - cx0:ox1 - cx0] = \
                masks[i][oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
        neighbours = (cover[cy0:cy1, cx0:cx1] - own) > 0
        r, _, n = concentration(detection[cy0:cy1, cx0:cx1], [xs[k] - cx0], [ys[k] - cy0],
                                reference["fwhm_px"], noise=noise,
                                mask=flagged[cy0:cy1, cx0:cx1] | (neighbours & ~own))
        ratio[k], snr[k] = r[0], n[0]
    return {"rows": rows, "x": xs + origin[1], "y": ys + origin[0],
            "relative_concentration": ratio / reference["concentration"], "snr": snr,
            "saturated": clipped}


def reclassify_instances(table, detection, origin, reference, model, noise, saturated=None):
    """One window's Mask R-CNN instances with their star/galaxy class from ``model``.

    Parameters
    ----------
    table, detection, origin, reference, noise, saturated
        As for :func:`instance_features`.
    model : StarGalaxyModel

    Returns
    -------
    pyarrow.Table
        The same rows; ``class_id`` and ``class`` follow the star probability
        (star at >= 0.5) where the concentration could be measured, the
        network's class elsewhere; an instance with a saturated pixel is a
        star (:meth:`StarGalaxyModel.star_probability`). The detection
        ``score`` is kept.
    """
    import pyarrow as pa

    from .classes import OBJECT_CLASSES, OBJECT_CODE

    found = instance_features(table, detection, origin, reference, noise, saturated)
    if not found["rows"].size:
        return table
    p_star = model.star_probability(found["relative_concentration"], found["snr"],
                                    found["saturated"], fwhm_px=reference["fwhm_px"])
    new_ids = table.column("class_id").to_numpy().copy()
    # without a measurable concentration the network's class stands
    new_ids[found["rows"]] = np.where(
        np.isfinite(p_star), np.where(p_star >= 0.5, OBJECT_CODE["star"], OBJECT_CODE["galaxy"]),
        new_ids[found["rows"]])
    index = table.schema.get_field_index
    table = table.set_column(index("class_id"), "class_id",
                             pa.array(new_ids, type=table.schema.field("class_id").type))
    names = [OBJECT_CLASSES[c] if c > 0 else None for c in new_ids]
    return table.set_column(index("class"), "class", pa.array(names, type=pa.string()))
