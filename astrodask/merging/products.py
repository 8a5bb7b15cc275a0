"""What every merge writes: options, catalog columns, provenance, FITS maps, pictures.

Shared by the merge on Dask (:mod:`astrodask.merging.run`) and the
single-process reference (:mod:`astrodask.merging.single`), so both give the
same bytes.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..classes import MORPHOLOGY_CLASSES, OBJECT_CLASSES, OBJECT_CODE, SOURCE_CLASSES
from ..errors import InputError, StoreError
from .hosts import large_host_rule
from .stitch import MATCH_IOU

#: Catalog flag bits.
FLAGS = {"blended": 1, "truncated": 2, "tile_edge": 4, "masked": 8, "morpheus_undetected": 16,
         "saturated": 32, "residual": 64}


@dataclass
class MergeOptions:
    """Settings of the merge stage.

    Attributes
    ----------
    match_iou : float
        Pieces of neighbouring windows are the same object at this IoU within
        the windows' overlap.
    morpheus_threshold, morpheus_background_level : float, optional
        Algorithm 1 on the mean background probability (U-Net-only runs):
        background ≤ threshold seeds a source, ≥ level seeds the background.
        (Morpheus applied 0 and 1 to rank votes; mean probabilities are
        rarely exactly 0 or 1.) Default: the U-Net card's ``segmentation``
        (chosen on validation mosaics), else 0.1 and 0.9.
    morpheus_min_distance, morpheus_max_peaks : int
        Algorithm 2 deblending seeds (U-Net-only runs).
    morpheus_min_area, morpheus_min_snr : float
        U-Net-only runs: smallest segment kept, and its minimum S/N.
    min_score : float, optional
        Mask R-CNN runs: objects whose detection score is below this are left
        out of the catalog. Default: the model card's ``catalog_min_score``
        (chosen for purity on validation mosaics), else none.
    weak_min_score, weak_min_snr : float, optional
        Mask R-CNN runs: a detection scored under ``min_score`` but at least
        ``weak_min_score`` stays in the catalog when its S/N over all bands,
        measured within its mask, is at least ``weak_min_snr`` (its own
        pixels vouch for it; :mod:`astrodask.merging.weak`). Default: the
        card's ``catalog_weak_min_score`` and ``catalog_weak_min_snr``, else
        off (``maskrcnn_decam``'s card turns it on, ``maskrcnn_hst``'s does
        not; BENCHMARKS.md).
    weak_min_contrast : float, optional
        Such a detection that touches objects at or above the cut stays only
        when its S/N is at least this fraction of theirs (a knot of a large
        bright galaxy is not a source of its own). Default: the card's
        ``catalog_weak_min_contrast``, else no such condition.
    weak_min_separation : float, optional
        Such a detection stays only when its centre lies at least this many
        pixels from every object at or above the cut. Default: the card's
        ``catalog_weak_min_separation``, else no such condition.
    weak_core_fraction : float, optional
        Such a detection stays only when its centre lies at least this
        fraction of the radius ``sqrt(area / pi)`` from the centre of every
        object at or above the cut (a large galaxy's core proposed beside
        the galaxy). Default: the card's ``catalog_weak_core_fraction``, else
        no such condition.
    weak_max_host_area : float, optional
        Such a detection stays only when no object at or above the cut that it
        touches covers more than this many arcsec² (the knots and arms of a
        large, resolved galaxy pass the S/N test). Default: the card's
        ``catalog_weak_max_host_area``, else no such condition.
    large_host_area : float, optional
        A galaxy at or above the cut covering at least this many arcsec² is a
        large, resolved galaxy: every smaller galaxy detection centred within
        ``large_host_reach`` of its radius ``sqrt(area / pi)`` from its centre
        (its HII regions, arm segments, a second core) is folded into it
        (:mod:`astrodask.merging.hosts`). Default: the card's
        ``catalog_large_host_area``, else off.
    large_host_reach : float, optional
        In host radii. Default: the card's ``catalog_large_host_reach``, else 1.5.
    irregular_centroid_snr : float, optional
        Mask R-CNN runs with a centre network: a galaxy (never a star) the
        U-Net calls irregular and whose S/N (all bands) is at least this takes its
        segment's flux-weighted centroid as its position, not its centre
        peak, which a bright knot pulls off the galaxy's centre. Default:
        the card's ``centres.irregular_centroid_snr`` (chosen on validation
        mosaics), else never.
    peak_position_snr : float, optional
        Objects placed at their segment's centroid (no centre network) that
        the U-Net does not call irregular and whose S/N (all bands) is at
        least this sit at their peak instead (the light-weighted centroid of
        the 5x5 pixels around the anchor) where it lies more than
        :data:`PEAK_SHIFT` px from the centroid: a neighbour's segment or a
        cut mask pulls a bright galaxy's centroid off its centre. Default:
        the Mask R-CNN card's ``peak_position_snr`` (chosen on validation
        mosaics), else never.
    detection_threshold : float
        ``morpheus_detected`` is true where the object's minimum background
        probability is at most this (as the Morpheus value-added catalog flags
        sources the network saw).
    pictures : bool
        Write the PNG quick-looks.
    irregular_centroid_sigma : float, optional
        Galaxies the U-Net calls irregular that sit at a centroid take the
        centroid weighted by the detection image smoothed by a Gaussian of
        this many pixels (the clipped noise of the unsmoothed image pulls a
        faint source's centroid toward its segment's middle). Default: the
        Mask R-CNN card's ``irregular_centroid_sigma``, else 0 (off).
    residual_pass : bool, optional
        Mask R-CNN runs: after the merge, run the models again on the
        residual of the bright objects and add what they find inside those
        objects' segments (:func:`astrodask.residual_pass`). Default: on when
        the Mask R-CNN card chooses it (``residual_pass``; the shipped
        ``maskrcnn_hst``), else off.
    residual_min_snr, residual_separation : float, optional
        Its settings (``min_snr``, ``separation``, ... of
        :class:`astrodask.ResidualOptions`). Default: the card's, else
        :class:`~astrodask.ResidualOptions`' defaults.
    residual_min_score, residual_core_fraction : float, optional
        Likewise (the score cut's default follows ``residual_flips``).
    residual_flips : bool, optional
        Whether the second run fuses the Mask R-CNN's 8 flipped passes
        (``flips`` of :class:`~astrodask.ResidualOptions`; off: 2.5x faster,
        a little less complete). Default: the card's, else on.
    kron_annulus : sequence of float, optional
        ``(inner, outer)``: the Kron fluxes' local background is the mean of the
        free pixels between these multiples of the aperture; ``()`` for none.
        Default: the Mask R-CNN card's ``kron_annulus``, else
        :data:`astrodask.kron.LOCAL_ANNULUS` (chosen per preset on its
        validation mosaics: crowded ground-based fields need one, `hst` fields
        do not).
    kron_annulus_for : {"neighbours", "all"}, optional
        The apertures that local background comes off: those that hold
        another object's pixels, or every one. Default: the Mask R-CNN card's
        ``kron_annulus_for``, else :data:`astrodask.kron.ANNULUS_FOR`.
    morphology_calibration : dict or bool, optional
        Where the run has a U-Net: the catalog's ``morphology`` is the class
        of this calibration (:meth:`MorphologyCalibration.to_dict()
        <astrodask.morphology.calibration.MorphologyCalibration.to_dict>`),
        from the eq. 16 probabilities and the S/N, instead of the dominant
        eq. 16 class, which gets faint objects' classes wrong in one
        direction (too many irregulars with ``morpheus_decam``, spheroids
        with ``morpheus_hst``). Default (None or True): the U-Net card's
        ``morphology_calibration`` (fitted on simulated mosaics; both shipped
        U-Nets trained here have one), else off; False: off. The ``p_*``
        columns are the eq. 16 values either way.
    """

    match_iou: float = MATCH_IOU
    morpheus_threshold: float = None
    morpheus_background_level: float = None
    morpheus_min_distance: int = 5
    morpheus_max_peaks: int = 20
    morpheus_min_area: int = 5
    morpheus_min_snr: float = 5.0
    min_score: float = None
    weak_min_score: float = None
    weak_min_snr: float = None
    weak_min_contrast: float = None
    weak_min_separation: float = None
    weak_core_fraction: float = None
    weak_max_host_area: float = None
    large_host_area: float = None
    large_host_reach: float = None
    irregular_centroid_snr: float = None
    peak_position_snr: float = None
    detection_threshold: float = 0.5
    pictures: bool = True
    irregular_centroid_sigma: float = None
    residual_pass: bool = None
    residual_min_snr: float = None
    residual_separation: float = None
    residual_min_score: float = None
    residual_core_fraction: float = None
    residual_flips: bool = None
    kron_annulus: tuple = None
    kron_annulus_for: str = None
    morphology_calibration: object = None


#: Algorithm 1 levels of a U-Net whose card does not choose them.
DEFAULT_SEGMENTATION = {"threshold": 0.1, "background_level": 0.9}


def segmentation_levels(record, options):
    """Algorithm 1 levels of a U-Net-only run: the options', else its card's, else the defaults.

    Returns
    -------
    (float, float)
        ``(threshold, background_level)``: background probability at or below
        which a pixel seeds a source, and at or above which it seeds the sky.
    """
    card = _run_card(record, "unet") or {}
    chosen = dict(DEFAULT_SEGMENTATION, **{k: v for k, v in card.get("segmentation", {}).items()
                                           if k in DEFAULT_SEGMENTATION})
    threshold = (options.morpheus_threshold if options.morpheus_threshold is not None
                 else chosen["threshold"])
    level = (options.morpheus_background_level if options.morpheus_background_level is not None
             else chosen["background_level"])
    if not 0 <= threshold < level <= 1:
        raise InputError(f"the Morpheus threshold must lie below the background level in [0, 1]; "
                         f"got {threshold} and {level}")
    return float(threshold), float(level)


def resolved_options(record, options):
    """``options`` with every setting a card may choose filled in for this run.

    Raises
    ------
    InputError
        A setting out of its range (:class:`~astrodask.ResidualPassError` for
        the residual pass's, checked even when the pass is off).
    """
    from dataclasses import replace

    for what, value, valid, bounds in (
            ("the match IoU", options.match_iou, 0 < options.match_iou <= 1, "lie in (0, 1]"),
            ("the detection threshold", options.detection_threshold,
             0 <= options.detection_threshold <= 1, "lie in [0, 1]"),
            ("the segments' minimum S/N", options.morpheus_min_snr,
             options.morpheus_min_snr >= 0, "be >= 0")):
        if not valid:
            raise InputError(f"{what} must {bounds}, got {value}")
    threshold, level = segmentation_levels(record, options)
    (weak_min_score, weak_min_snr, weak_min_contrast, weak_min_separation, weak_core_fraction,
     weak_max_host_area) = weak_detection_rule(record, options)
    large_host_area, large_host_reach = large_host_rule(_run_card(record, "maskrcnn"), options)
    return replace(options, min_score=catalog_min_score(record, options),
                   weak_min_score=weak_min_score, weak_min_snr=weak_min_snr,
                   weak_min_contrast=weak_min_contrast, weak_min_separation=weak_min_separation,
                   weak_core_fraction=weak_core_fraction, weak_max_host_area=weak_max_host_area,
                   large_host_area=large_host_area, large_host_reach=large_host_reach,
                   irregular_centroid_snr=irregular_centroid_snr(record, options),
                   peak_position_snr=peak_position_snr(record, options),
                   irregular_centroid_sigma=irregular_centroid_sigma(record, options),
                   morpheus_threshold=threshold, morpheus_background_level=level,
                   kron_annulus=kron_annulus(record, options),
                   kron_annulus_for=kron_annulus_for(record, options),
                   morphology_calibration=morphology_calibration(record, options),
                   **residual_settings(record, options))


def morphology_calibration(record, options):
    """The morphology calibration a run's catalog applies: the option's, else the U-Net
    card's; ``False`` where none applies (no U-Net, no calibration, or turned off).

    Raises
    ------
    InputError
        ``True`` asked for where the U-Net's card has no calibration, or a
        calibration that is not one.
    """
    from ..morphology.calibration import MorphologyCalibration

    chosen = options.morphology_calibration
    if chosen is False:
        return False
    card = _run_card(record, "unet")
    if chosen is None or chosen is True:
        value = (card or {}).get("morphology_calibration")
        if value is None:
            if chosen is True:
                raise InputError("no morphology calibration: the run has no U-Net, or its "
                                 "card has no morphology_calibration")
            return False
        chosen = value
    if card is None:
        return False
    try:
        return MorphologyCalibration.from_dict(chosen).to_dict()
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"not a morphology calibration: {error}") from None


#: The residual pass's settings, by MergeOptions field and ResidualOptions field.
RESIDUAL_SETTINGS = {"residual_min_snr": "min_snr", "residual_separation": "separation",
                     "residual_min_score": "min_score",
                     "residual_core_fraction": "core_fraction", "residual_flips": "flips"}


def residual_settings(record, options):
    """Whether a run's merge ends with the residual pass, and its settings.

    The option, else the Mask R-CNN card's ``residual_pass`` (its presence
    turns the pass on; its keys are :class:`astrodask.ResidualOptions`
    fields), else off; each setting the option's, else the card's, else
    :class:`~astrodask.ResidualOptions`' default. U-Net-only runs: off.

    Returns
    -------
    dict
        ``residual_pass`` and the ``residual_*`` fields of :class:`MergeOptions`.
    """
    from ..residual_detection import ResidualOptions

    card = _run_card(record, "maskrcnn")
    chosen = (card or {}).get("residual_pass")
    on = options.residual_pass if options.residual_pass is not None else chosen is not None
    defaults = ResidualOptions()
    settings = {"residual_pass": bool(on)}
    for field_name, name in RESIDUAL_SETTINGS.items():
        value = getattr(options, field_name)
        if value is None:
            value = (chosen or {}).get(name, getattr(defaults, name))
        # flips is a switch (ResidualOptions checks it); min_score may stay None
        settings[field_name] = (value if name == "flips" or value is None else float(value))
    ResidualOptions(**{name: settings[f] for f, name in RESIDUAL_SETTINGS.items()}).validate()
    return settings


def _run_card(record, kind):
    """The card of a run's model of ``kind`` (``unet``, ``maskrcnn``), or None."""
    return next((m["card"] for m in record["models"] if m["kind"] == kind), None)


def catalog_min_score(record, options):
    """The score cut of a run's catalog: the option, else its Mask R-CNN card's, else none.

    U-Net-only runs (Morpheus segments) have no detection score: no cut.
    """
    if options.min_score is not None:
        if not 0 <= options.min_score <= 1:
            raise InputError(f"min score must lie in [0, 1], got {options.min_score}")
        return float(options.min_score)
    card = _run_card(record, "maskrcnn")
    value = card.get("catalog_min_score") if card else None
    return float(value) if value is not None else None


def weak_detection_rule(record, options):
    """``(weak_min_score, weak_min_snr, weak_min_contrast, weak_min_separation,
    weak_core_fraction, weak_max_host_area)`` of a run: the options', else its Mask R-CNN
    card's.

    None (off) for U-Net-only runs and cards without the rule.
    """
    card = _run_card(record, "maskrcnn") or {}
    values = []
    for name in ("weak_min_score", "weak_min_snr", "weak_min_contrast", "weak_min_separation",
                 "weak_core_fraction", "weak_max_host_area"):
        value = getattr(options, name)
        value = card.get(f"catalog_{name}") if value is None else value
        values.append(None if value is None else float(value))
    score, snr, contrast, separation, core, host_area = values
    if score is not None and not 0 <= score <= 1:
        raise InputError(f"the weak-detection score must lie in [0, 1], got {score}")
    if snr is not None and snr < 0:
        raise InputError(f"the weak-detection S/N must be >= 0, got {snr}")
    if contrast is not None and contrast < 0:
        raise InputError(f"the weak-detection contrast must be >= 0, got {contrast}")
    if separation is not None and separation < 0:
        raise InputError(f"the weak-detection separation must be >= 0, got {separation}")
    if core is not None and core < 0:
        raise InputError(f"the weak-detection core fraction must be >= 0, got {core}")
    if host_area is not None and not host_area > 0:
        raise InputError(f"the weak-detection host area must be > 0 arcsec², got {host_area}")
    return score, snr, contrast, separation, core, host_area


def irregular_centroid_snr(record, options):
    """S/N from which irregular galaxies sit at their centroid: the option, else the card's.

    None (never) for runs without a Mask R-CNN whose centre network's card
    section sets ``irregular_centroid_snr``.
    """
    if options.irregular_centroid_snr is not None:
        if options.irregular_centroid_snr < 0:
            raise InputError("the irregular-centroid S/N must be >= 0, "
                             f"got {options.irregular_centroid_snr}")
        return float(options.irregular_centroid_snr)
    card = _run_card(record, "maskrcnn")
    value = ((card or {}).get("centres") or {}).get("irregular_centroid_snr")
    return float(value) if value is not None else None


def irregular_centroid_sigma(record, options):
    """σ (px) of the smoothing behind irregular galaxies' centroids: the option, else the card's.

    0 (off) for cards without ``irregular_centroid_sigma`` and U-Net-only runs.
    """
    value = options.irregular_centroid_sigma
    if value is None:
        value = ((_run_card(record, "maskrcnn") or {}).get("irregular_centroid_sigma") or 0.0)
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise InputError(f"the irregular-centroid sigma must be >= 0, got {value}")
    return value


def kron_annulus(record, options):
    """The Kron fluxes' local-background annulus: the option, else the card's, else
    :data:`astrodask.kron.LOCAL_ANNULUS`.

    Returns
    -------
    list of float
        ``[inner, outer]``, or ``[]`` for no local background.

    Raises
    ------
    InputError
        Not two numbers with ``0 < inner < outer``.
    """
    from ..kron import LOCAL_ANNULUS

    value = options.kron_annulus
    if value is None:
        value = (_run_card(record, "maskrcnn") or {}).get("kron_annulus", LOCAL_ANNULUS)
    value = [] if value is None else list(value)
    if value and not (len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
                      and 0 < value[0] < value[1] and np.isfinite(value[1])):
        raise InputError(f"the Kron annulus must be two numbers 0 < inner < outer, got {value}")
    return [float(v) for v in value]


def kron_annulus_for(record, options):
    """The apertures the Kron fluxes' local background comes off: the option, else the
    card's, else :data:`astrodask.kron.ANNULUS_FOR`.

    Raises
    ------
    InputError
        Not one of :data:`astrodask.kron.ANNULUS_CHOICES`.
    """
    from ..kron import ANNULUS_CHOICES, ANNULUS_FOR

    value = options.kron_annulus_for
    if value is None:
        value = (_run_card(record, "maskrcnn") or {}).get("kron_annulus_for", ANNULUS_FOR)
    if value not in ANNULUS_CHOICES:
        raise InputError(f"the Kron annulus is for {' or '.join(ANNULUS_CHOICES)} apertures, "
                         f"got {value!r}")
    return value


def peak_position_snr(record, options):
    """S/N from which centroid-placed objects may sit at their peak: the option, else the card's.

    None (never) where neither sets it.
    """
    value = options.peak_position_snr
    if value is None:
        value = (_run_card(record, "maskrcnn") or {}).get("peak_position_snr")
    if value is not None and value < 0:
        raise InputError(f"the peak-position S/N must be >= 0, got {value}")
    return float(value) if value is not None else None


#: Isophotal S/N (all bands) from which an object's morphology is counted apart in the
#: summary: below it the catalog's class is right for about half of the galaxies, above
#: it for 75-95% (BENCHMARKS.md, "Morphology calibrated for the S/N").
BRIGHT_MORPHOLOGY_SNR = 20.0


@dataclass
class MergeSummary:
    """What the merge produced.

    Attributes
    ----------
    results : str
        The results folder.
    n_objects : int
        Rows of the catalog.
    by_class, by_morphology : dict
        Objects per class (``star``, ``galaxy``) and per dominant morphology.
    files : dict
        Product name -> path (``catalog``, ``segmap_fits``, ...).
    seconds : dict
        Wall time per phase.
    residual : ResidualSummary, optional
        What the residual pass added, when it ran (``n_objects`` counts them).
    by_morphology_bright : dict
        Objects per dominant morphology among those of S/N at least
        ``bright_snr`` (:func:`catalog_counts`), where the morphology is worth
        counting.
    bright_snr : float
        That S/N, :data:`BRIGHT_MORPHOLOGY_SNR`.
    """

    results: str
    n_objects: int
    by_class: dict
    by_morphology: dict
    files: dict
    seconds: dict = field(default_factory=dict)
    residual: object = None
    by_morphology_bright: dict = field(default_factory=dict)
    bright_snr: float = BRIGHT_MORPHOLOGY_SNR

    def text(self):
        """A short text summary (``summary.txt``; what ``astrodask merge`` prints).

        Returns
        -------
        str
            Lines ending in a newline.
        """
        return summary_text(self)


def open_unet(results):
    """The run's ``unet.zarr`` group (its class list must end with background)."""
    import zarr

    group = zarr.open_group(results.unet_store, mode="r")
    classes = list(group.attrs["astrodask"]["classes"])
    if classes[-1] != "background":
        raise StoreError(f"U-Net classes {classes} do not end with background")
    return group


def paint(boxes, masks, values, ys, xs):
    """Paint masks into a chunk of the label map, later ones on top.

    Parameters
    ----------
    boxes : sequence of (y0, x0, y1, x1)
        Half-open mosaic boxes of the masks.
    masks : sequence of ndarray of bool
    values : sequence of int
        Label of each mask.
    ys, xs : slice
        Mosaic slices of the chunk.

    Returns
    -------
    ndarray of int32
    """
    labels = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=np.int32)
    for (y0, x0, y1, x1), mask, value in zip(boxes, masks, values):
        sy0, sx0 = max(y0, ys.start), max(x0, xs.start)
        sy1, sx1 = min(y1, ys.stop), min(x1, xs.stop)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        part = mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        labels[sy0 - ys.start:sy1 - ys.start, sx0 - xs.start:sx1 - xs.start][part] = value
    return labels


def catalog_table(mosaic, objects, accumulator, unet, options, labels, first_id=1):
    """Catalog columns of objects ``first_id, first_id + 1, ...``.

    Parameters
    ----------
    mosaic : Mosaic
    objects : Objects
        Masks are not used (they may be ``None``); ``parent_id`` and
        ``family_size`` must be set.
    accumulator : Accumulator
        Sums of these objects, object ``first_id + k`` at index ``k + 1``.
    unet : zarr.Group or None
    options : MergeOptions
    labels : array_like of int, shape (height, width)
        The finished segmentation map (catalog IDs), for the Kron apertures.
    first_id : int

    Returns
    -------
    pyarrow.Table
    """
    import pyarrow as pa

    from ..kron import kron_photometry
    from ..measure import (ab_magnitude, ab_magnitude_error, measurement_noise, sky_coordinates,
                           total_snr)
    from ..morphology.catalog import dominant_class

    noise, correlation = measurement_noise(mosaic)
    measured = accumulator.columns(mosaic.bands, noise=noise, correlation=correlation)
    n = len(objects)
    morphology = None
    if unet is not None:
        morphology = list(dominant_class(measured["class_probabilities"][:, :-1],
                                         SOURCE_CLASSES))
    x, y = catalog_positions(objects, measured,
                             _centroid_placed(measured, mosaic.bands, objects.class_id,
                                              morphology, options.irregular_centroid_snr),
                             _peak_placed(measured, mosaic.bands, morphology,
                                          options.peak_position_snr),
                             _irregular(morphology) if options.irregular_centroid_sigma
                             else None)
    ra, dec = sky_coordinates(mosaic.wcs, x, y)
    grid = mosaic.tile_grid
    truncated = ((objects.y0 == 0) | (objects.x0 == 0) | (objects.y1 == grid.height)
                 | (objects.x1 == grid.width))
    tile_edge = objects.cut | (objects.n_pieces > 1)
    blended = objects.family_size > 1
    masked = measured["masked_pixels"] > 0
    saturated = measured["saturated_pixels"] > 0
    columns = {
        "id": np.arange(first_id, first_id + n, dtype=np.int64),
        "parent_id": objects.parent_id.astype(np.int64),
        "family_size": objects.family_size.astype(np.int32),
        "x": x, "y": y, "ra": ra, "dec": dec,
        "x_centroid": measured["x"], "y_centroid": measured["y"],
        "bbox_y0": objects.y0, "bbox_x0": objects.x0,
        "bbox_y1": objects.y1, "bbox_x1": objects.x1,
        "area": measured["area"],
        "a_image": measured["a_image"], "b_image": measured["b_image"],
        "theta_image": measured["theta_image"],
        "anchor_y": objects.anchor_y, "anchor_x": objects.anchor_x,
    }
    zeropoints = mosaic.attrs.get("zeropoints", {})
    for band in mosaic.bands:
        columns[f"flux_{band}"] = measured[f"flux_{band}"]
        columns[f"flux_err_{band}"] = measured[f"flux_err_{band}"]
        columns[f"mag_{band}"] = ab_magnitude(measured[f"flux_{band}"], zeropoints.get(band))
        columns[f"mag_err_{band}"] = ab_magnitude_error(
            measured[f"flux_{band}"], measured[f"flux_err_{band}"], zeropoints.get(band))
    auto = kron_photometry(mosaic.array("image"), mosaic.array("mask"), labels, columns["id"],
                           x, y, measured["a_image"], measured["b_image"],
                           measured["theta_image"], noise=noise, correlation=correlation,
                           weight=mosaic.array("weight") if mosaic.has_weight else None,
                           annulus=tuple(options.kron_annulus) if options.kron_annulus else None,
                           annulus_for=options.kron_annulus_for)
    columns["kron_radius"] = auto["kron_radius"]
    columns["flux_radius"] = auto["flux_radius"]
    for b, band in enumerate(mosaic.bands):
        columns[f"flux_auto_{band}"] = auto["flux_auto"][:, b]
        columns[f"flux_auto_err_{band}"] = auto["flux_auto_err"][:, b]
        columns[f"mag_auto_{band}"] = ab_magnitude(auto["flux_auto"][:, b], zeropoints.get(band))
        columns[f"mag_auto_err_{band}"] = ab_magnitude_error(
            auto["flux_auto"][:, b], auto["flux_auto_err"][:, b], zeropoints.get(band))
    columns["auto_flags"] = auto["auto_flags"]
    columns["class_id"] = objects.class_id
    columns["source_class"] = pa.array([OBJECT_CLASSES[c] if c > 0 else None for c in objects.class_id],
                                type=pa.string())
    columns["class_score"] = np.where(objects.class_id > 0, objects.score, np.nan)
    morpheus_undetected = np.zeros(n, dtype=bool)
    if unet is not None:
        probabilities = measured["class_probabilities"]
        for k, name in enumerate(MORPHOLOGY_CLASSES):
            columns[f"p_{name}"] = probabilities[:, k]
        if options.morphology_calibration:
            morphology = calibrated_morphology(options.morphology_calibration, probabilities,
                                               total_snr(columns, mosaic.bands))
        columns["morphology"] = pa.array(morphology, type=pa.string())
        columns["min_background"] = measured["min_background"]
        columns["morpheus_detected"] = measured["min_background"] <= options.detection_threshold
        morpheus_undetected = ~columns["morpheus_detected"]
    columns.update(blended=blended, truncated=truncated, tile_edge=tile_edge, masked=masked,
                   saturated=saturated, n_pieces=objects.n_pieces)
    bits = (blended * FLAGS["blended"] | truncated * FLAGS["truncated"]
            | tile_edge * FLAGS["tile_edge"] | masked * FLAGS["masked"]
            | morpheus_undetected * FLAGS["morpheus_undetected"]
            | saturated * FLAGS["saturated"])
    columns["quality_flags"] = np.asarray(bits, dtype=np.int32)
    return with_units(pa.table(columns), column_units(mosaic))


def calibrated_morphology(calibration, probabilities, snr):
    """Each object's class from a morphology calibration (a dict from
    :meth:`~astrodask.morphology.calibration.MorphologyCalibration.to_dict`); a list of
    str, None where unmeasured."""
    from ..morphology.calibration import MorphologyCalibration

    return list(MorphologyCalibration.from_dict(calibration).classify(probabilities, snr))


#: Least distance (px) between an object's peak and its segment's centroid at
#: which the peak becomes its position (``MergeOptions.peak_position_snr``):
#: closer, the centroid is the more precise (on the `hst` validation mosaics
#: the bright galaxies' centroids lie a median 0.14 px from the truth, their
#: 5x5 peaks 0.32 px).
PEAK_SHIFT = 1.0


def catalog_positions(objects, measured, centroid_placed=None, peak_placed=None,
                      smooth_placed=None):
    """Each object's catalog position ``(x, y)``: its centre where the detector gave one.

    The centre network's centre (``objects.centre_x``, ``centre_y``) where
    finite and ``centroid_placed`` (bool per object, optional) is false,
    else the flux-weighted centroid of the object's exclusive segment
    (``measured``; weighted by the smoothed detection image,
    ``measured["x_smooth"]``, where ``smooth_placed`` is true and it was
    measured), or its peak (``measured["x_peak"]``) where
    ``peak_placed`` (bool per object, optional) is true and the peak lies
    more than :data:`PEAK_SHIFT` px from the centroid; 0-based mosaic pixels.
    """
    x, y = measured["x"], measured["y"]
    if smooth_placed is not None and "x_smooth" in measured:
        sx, sy = measured["x_smooth"], measured["y_smooth"]
        smoothed = smooth_placed & np.isfinite(sx) & np.isfinite(sy)
        x, y = np.where(smoothed, sx, x), np.where(smoothed, sy, y)
    if peak_placed is not None:
        px, py = measured["x_peak"], measured["y_peak"]
        with np.errstate(invalid="ignore"):
            moved = peak_placed & (np.hypot(px - x, py - y) > PEAK_SHIFT)
        x, y = np.where(moved, px, x), np.where(moved, py, y)
    if objects.centre_x is None:
        return x, y
    centred = np.isfinite(objects.centre_x) & np.isfinite(objects.centre_y)
    if centroid_placed is not None:
        centred &= ~(centroid_placed & np.isfinite(x) & np.isfinite(y))
    return np.where(centred, objects.centre_x, x), np.where(centred, objects.centre_y, y)


def _centroid_placed(measured, bands, class_ids, morphology, min_snr):
    """Objects placed at their centroid: irregular galaxies with S/N (all bands) >= ``min_snr``.

    Stars never (the U-Net may call a saturated star with its bleed trail
    irregular; its centroid follows the trail). None where the morphology
    or the threshold is unknown (no U-Net, no threshold).
    """
    from ..measure import total_snr

    if morphology is None or min_snr is None:
        return None
    snr = total_snr(measured, bands)
    return (_irregular(morphology) & (np.asarray(class_ids) != OBJECT_CODE["star"])
            & (snr >= min_snr))


def _irregular(morphology):
    """Objects the U-Net calls irregular (None without the U-Net)."""
    if morphology is None:
        return None
    return np.array([m == "irregular" for m in morphology], dtype=bool)


def _peak_placed(measured, bands, morphology, min_snr):
    """Objects that may sit at their peak: not irregular to the U-Net, S/N (all bands) >= ``min_snr``.

    An irregular galaxy's peak is often a knot. None where the morphology or
    the threshold is unknown.
    """
    from ..measure import total_snr

    if morphology is None or min_snr is None:
        return None
    known = np.array([m is not None and m != "irregular" for m in morphology], dtype=bool)
    return known & (total_snr(measured, bands) >= min_snr)


#: Units of the catalog columns that have one (astropy unit strings); fluxes
#: take their band's BUNIT (:func:`column_units`).
UNITS = {"x": "pix", "y": "pix", "x_centroid": "pix", "y_centroid": "pix",
         "ra": "deg", "dec": "deg", "area": "pix2",
         "a_image": "pix", "b_image": "pix", "theta_image": "deg", "flux_radius": "pix",
         **{f"bbox_{c}": "pix" for c in ("y0", "x0", "y1", "x1")},
         "anchor_y": "pix", "anchor_x": "pix"}


def column_units(mosaic):
    """Column name -> unit of a mosaic's catalog: :data:`UNITS`, BUNIT fluxes, AB magnitudes."""
    units = dict(UNITS)
    bunit = mosaic.attrs.get("bunit") or {}
    for band in mosaic.bands:
        if bunit.get(band):
            for name in ("flux", "flux_err", "flux_auto", "flux_auto_err"):
                units[f"{name}_{band}"] = bunit[band]
        units[f"mag_{band}"] = units[f"mag_auto_{band}"] = "mag(AB)"
        units[f"mag_err_{band}"] = units[f"mag_auto_err_{band}"] = "mag"
    return units


def with_units(table, units):
    """``table`` with each column's unit in its Parquet field metadata (``b"unit"``)."""
    import pyarrow as pa

    fields = [f.with_metadata({b"unit": units[f.name].encode()}) if f.name in units else f
              for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def provenance(mosaic, record, options):
    """The catalog's provenance (schema metadata): inputs, models, options, versions."""
    import dask
    import zarr

    return {
        "astrodask_version": __version__,
        "versions": {"dask": dask.__version__, "zarr": zarr.__version__},
        "mosaic": record["mosaic"],
        "mosaic_inputs": mosaic.attrs["inputs"],
        "bands": list(mosaic.bands),
        "tile_grid": mosaic.tile_grid.to_dict(),
        "models": [{"kind": m["kind"], "name": m["name"], "card": m["card"]}
                   for m in record["models"]],
        "run_config": record["config"],
        "merge_options": options.__dict__,
        "quality_flags": FLAGS,
        "bunit": {b: (mosaic.attrs.get("bunit") or {}).get(b) for b in mosaic.bands},
        "zeropoints": {b: (mosaic.attrs.get("zeropoints") or {}).get(b) for b in mosaic.bands},
        "zeropoint_sources": {b: (mosaic.attrs.get("zeropoint_sources") or {}).get(b)
                              for b in mosaic.bands},
        "magnitude_system": "AB",
        "pixel_convention": "0-based pixel coordinates, pixel centres on integers; "
                            "ra/dec in degrees (ICRS)",
    }


def _strips(array, grid, index=None):
    """Row strips (one window core high) of a 2-D Zarr array, or of ``array[index]``."""
    for iy in range(grid.shape[0]):
        ys, _ = grid.core_slices(iy, 0)
        yield array[ys] if index is None else array[index, ys]


def write_segmap_fits(mosaic, segmap_path, path):
    """Stream the segmentation map of ``segmap_path`` (Zarr) into FITS, row strip by row strip."""
    import zarr

    from ..outputs.fits import StreamingFits, image_header

    labels = zarr.open_group(segmap_path, mode="r")["labels"]
    grid = mosaic.tile_grid
    header = image_header((grid.height, grid.width), "int32", mosaic.header if mosaic.wcs else None,
                          cards=[("BUNIT", "", "object id of catalog.parquet; 0 = none")])
    with StreamingFits(path) as out:
        out.image(header, _strips(labels, grid))
    return path


def write_morphology_fits(mosaic, unet, path):
    """One FITS image extension per U-Net class, streamed."""
    from ..outputs.fits import StreamingFits, image_header

    grid = mosaic.tile_grid
    classes = unet.attrs["astrodask"]["classes"]
    sky = mosaic.header if mosaic.wcs else None
    with StreamingFits(path) as out:
        out.empty_primary(cards=[("ORIGIN", "astrodask", "U-Net class probabilities"),
                                 ("NCLASS", len(classes), "one image extension per class")])
        for k, name in enumerate(classes):
            header = image_header((grid.height, grid.width), "float32", sky, extension=True,
                                  name=name.upper())
            out.image(header, _strips(unet["mean"], grid, index=k))
    return path


def write_pictures(mosaic, segmap_path, classes, unet, results, client=None):
    """PNG quick-looks.

    ``classes(ids)`` gives the class codes of the objects ``ids`` (sorted
    unique IDs): only the objects the downsampled picture shows are looked
    up, not the whole catalog. With ``client``, the downsampled pixels are
    read as tasks on its cluster, a row of chunks each.
    """
    from ..morphology.colour import colour_image
    from ..outputs.images import overview_rgb, preview_step, save_png

    grid = mosaic.tile_grid
    step = preview_step(grid.height, grid.width)
    image = np.nan_to_num(_downsampled(mosaic.path, "image", step, client),
                          nan=0.0).sum(axis=0)
    labels = _downsampled(segmap_path, "labels", step, client)
    shown = np.unique(labels[labels > 0])
    # the picture's objects numbered 1..n (outlines only need them distinct)
    compact = np.where(labels > 0, np.searchsorted(shown, labels) + 1, 0)
    class_of = np.concatenate([[0], np.asarray(classes(shown), dtype=np.int64)])
    files = {"overview_png": save_png(results.file("overview.png"),
                                      overview_rgb(image, compact, class_of))}
    if unet is not None:
        mean = np.nan_to_num(_downsampled(results.unet_store, "mean", step, client), nan=0.0)
        rgb = np.round(colour_image(mean, classes=unet.attrs["astrodask"]["classes"],
                                    sources=labels > 0) * 255)
        files["colour_png"] = save_png(results.file("morpheus_colour.png"), rgb.astype(np.uint8))
    return files


def _downsampled(store, name, step, client=None):
    """``array[..., ::step, ::step]`` of the Zarr array ``name`` of the group at ``store``
    (y and x its last two axes); with ``client``, read as one task per row of chunks on its
    cluster (the same values)."""
    if client is None:
        return _downsampled_rows(store, name, 0, None, step)
    import zarr

    from ..engine.cluster import task_map
    from ..errors import StoreError

    array = zarr.open_group(store, mode="r")[name]
    height, rows = array.shape[-2], array.chunks[-2]
    return np.concatenate(task_map(client, _downsampled_rows,
                                   [(store, name, y0, min(y0 + rows, height), step)
                                    for y0 in range(0, height, rows)],
                                   StoreError, "reading the pixels of the pictures"), axis=-2)


def _downsampled_rows(store, name, y0, y1, step):
    """Rows ``y0 <= y < y1`` of :func:`_downsampled` (those on its lattice; a task)."""
    import zarr

    array = zarr.open_group(store, mode="r")[name]
    return array[..., y0 + (-y0) % step:y1:step, ::step]


def counts(values):
    """Occurrences of each value (``None`` counted as unclassified), sorted by value."""
    counts = {}
    for value in values:
        key = value if value is not None else "unclassified"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def catalog_counts(table):
    """A catalog table's (or part's) objects per class, per morphology, and per
    morphology of those whose S/N over all bands (:func:`astrodask.measure.total_snr`
    of the isophotal fluxes) is at least :data:`BRIGHT_MORPHOLOGY_SNR` (the morphology
    counts empty without a ``morphology`` column)."""
    from ..measure import total_snr

    out = {"by_class": counts(table.column("source_class").to_pylist()),
           "by_morphology": {}, "by_morphology_bright": {}}
    if "morphology" in table.column_names:
        morphology = table.column("morphology").to_pylist()
        bands = [name[len("flux_err_"):] for name in table.column_names
                 if name.startswith("flux_err_")]
        fluxes = {name: table.column(name).to_numpy(zero_copy_only=False)
                  for band in bands for name in (f"flux_{band}", f"flux_err_{band}")}
        bright = total_snr(fluxes, bands) >= BRIGHT_MORPHOLOGY_SNR
        out["by_morphology"] = counts(morphology)
        out["by_morphology_bright"] = counts(m for m, b in zip(morphology, bright) if b)
    return out


def summary_text(summary):
    """A short text summary of a merge."""
    lines = [f"astrodask {__version__}: {summary.n_objects} objects in {summary.results}"]
    if summary.by_class:
        lines.append("by class: " + ", ".join(f"{k} {v}" for k, v in summary.by_class.items()))
    if summary.by_morphology:
        lines.append("by morphology: " + ", ".join(f"{k} {v}"
                                                    for k, v in summary.by_morphology.items()))
        lines.append(f"by morphology at S/N >= {summary.bright_snr:g}: " + (", ".join(
            f"{k} {v}" for k, v in summary.by_morphology_bright.items()) or "none"))
    lines.append("files: " + ", ".join(f"{k}={Path(v).name}" for k, v in summary.files.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.seconds.items()))
    text = "\n".join(lines) + "\n"
    return text + (summary.residual.text() if summary.residual is not None else "")
