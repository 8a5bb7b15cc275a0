"""Which models a run uses, and which mosaic band feeds each model band.

``--models`` entries are resolved here into :class:`ModelSpec` objects: small,
picklable descriptions that travel to the workers, where the
:class:`~astrodask.engine.plugin.ModelPlugin` loads each model once.
"""

from dataclasses import dataclass
import re

from ..errors import InputError
from ..models.card import WEIGHTS_DIR, read_model_card, resolve_model_path

#: Model kinds the engine can run; the card's ``architecture`` tells the kind.
KINDS = ("unet", "maskrcnn")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a run.

    Attributes
    ----------
    kind : str
        ``unet`` or ``maskrcnn``.
    name : str
        The card's name (used in output paths and provenance).
    path : str
        The ``.keras`` file.
    card : dict
        Its model card.
    band_indices : tuple of int
        For each model band, the index of the mosaic band that feeds it.
    stats : tuple, optional
        Mosaic band statistics ``(mean, std)`` for input standardisation
        (Mask R-CNN eq. 1), in model band order.
    settings : dict, optional
        Mask R-CNN detection settings the run uses: the card's, with the run's
        overrides (:func:`detection_settings`).
    star_galaxy : dict, optional
        Where the card's PSF-aware star/galaxy model classifies: the mosaic's
        PSF reference (:func:`astrodask.star_galaxy.psf_reference`).
    fold_fragments : float, optional
        Mask R-CNN in a run with a U-Net: fold the knots of irregular
        galaxies into their galaxy below this area fraction
        (:mod:`astrodask.fragments`); ``None``: not folded.
    centres : dict, optional
        The card's centre network (its ``centres`` section) where the run
        uses it (:mod:`astrodask.centre_segments`); ``None``: not used.
    deblend : dict, optional
        Without a centre network: the settings that split instances over
        several peaks (:func:`astrodask.instance_deblend.split_instances`:
        ``min_snr``, ``min_contrast``, ``min_separation``); ``None``: none
        split.
    """

    kind: str
    name: str
    path: str
    card: dict
    band_indices: tuple
    stats: tuple = None
    settings: dict = None
    star_galaxy: dict = None
    fold_fragments: float = None
    centres: dict = None
    deblend: dict = None


def detection_settings(card, overrides=None):
    """The detection settings a Mask R-CNN runs with: its card's, then ``overrides``.

    Parameters
    ----------
    card : dict
        The model card (its ``config`` holds the settings it was evaluated with).
    overrides : dict, optional
        ``detection_*`` settings given for this run.

    Returns
    -------
    dict
    """
    from ..models.maskrcnn import MaskRCNNConfig
    from ..models.maskrcnn.config import DETECTION_SETTINGS

    config = card.get("config") or {}
    defaults = MaskRCNNConfig()
    settings = {k: config.get(k, getattr(defaults, k)) for k in DETECTION_SETTINGS}
    settings.update(overrides or {})
    return settings


def model_kind(card):
    """``unet`` or ``maskrcnn`` from a card's ``architecture`` field."""
    arch = re.sub(r"[^a-z0-9]", "", str(card.get("architecture", "")).lower())
    if "maskrcnn" in arch:
        return "maskrcnn"
    if "unet" in arch or "morpheus" in arch:
        return "unet"
    raise InputError(f"model {card.get('name')!r} has architecture "
                     f"{card.get('architecture')!r}, which the engine cannot run")


def band_indices(card, mosaic_bands, band_map=None):
    """Map each of the model's bands to a mosaic band index.

    Names match case-insensitively; ``band_map`` (model band → mosaic band)
    overrides the match. Raises a clear :class:`InputError` when a model band
    has no source.
    """
    band_map = {str(k).lower(): str(v).lower() for k, v in (band_map or {}).items()}
    lookup = {band.lower(): i for i, band in enumerate(mosaic_bands)}
    indices = []
    for band in card["bands"]:
        source = band_map.get(band.lower(), band.lower())
        if source not in lookup:
            raise InputError(
                f"model {card['name']} expects bands {','.join(card['bands'])}; the mosaic has "
                f"{','.join(mosaic_bands)}: pass --band-map MODEL=MOSAIC,... "
                f"(e.g. {card['bands'][0]}={mosaic_bands[0]})")
        indices.append(lookup[source])
    return tuple(indices)


def _shipped_cards():
    for path in sorted(WEIGHTS_DIR.glob("*.keras")):
        try:
            yield path, read_model_card(path)
        except InputError:
            continue


def usable_kinds(mosaic_bands, band_map=None):
    """The kinds (``unet``, ``maskrcnn``) of shipped model that take ``mosaic_bands``."""
    usable = []
    for kind in KINDS:
        try:
            _shipped_for_bands(kind, mosaic_bands, band_map)
        except InputError:
            continue
        usable.append(kind)
    return usable


def resolve_models(names, mosaic_bands, band_map=None):
    """Turn ``--models`` entries into :class:`ModelSpec` objects.

    ``unet`` and ``maskrcnn`` pick the shipped model of that kind whose bands
    match the mosaic's (or ``band_map``); other entries are shipped model
    names or ``.keras`` paths. ``names=None``: every kind of shipped model
    that takes the mosaic's bands (:func:`usable_kinds`).
    """
    check_band_map_targets(band_map, mosaic_bands)
    if names is None:
        names = usable_kinds(mosaic_bands, band_map)
        if not names:
            raise InputError(f"no shipped model takes bands {','.join(mosaic_bands)}; "
                             "name the bands with --band-map or give --models")
    specs = []
    for entry in names:
        entry = str(entry).strip()
        if entry in KINDS:
            path, card = _shipped_for_bands(entry, mosaic_bands, band_map)
        else:
            path = resolve_model_path(entry)
            card = read_model_card(path)
        specs.append(ModelSpec(kind=model_kind(card), name=card["name"], path=str(path),
                               card=card,
                               band_indices=band_indices(card, mosaic_bands, band_map)))
    kinds = [s.kind for s in specs]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise InputError(f"more than one {repeated[0]} model given; use one per kind")
    return specs


def check_band_map_targets(band_map, mosaic_bands):
    """Raise :class:`InputError` if ``band_map`` sends a model band to a band the mosaic lacks."""
    known = {band.lower() for band in mosaic_bands}
    wrong = [f"{k}={v}" for k, v in (band_map or {}).items() if str(v).lower() not in known]
    if wrong:
        raise InputError(f"band map {','.join(wrong)} names a band the mosaic does not have "
                         f"(its bands: {','.join(mosaic_bands)})")


def _shipped_for_bands(kind, mosaic_bands, band_map):
    # A card marked "default": true wins over others of its kind that take the
    # same bands (a model trained here beside the published one it started from).
    candidates = sorted(((p, c) for p, c in _shipped_cards() if _kind_or_none(c) == kind),
                        key=lambda pc: not pc[1].get("default", False))
    for path, card in candidates:
        try:
            band_indices(card, mosaic_bands, band_map)
        except InputError:
            continue
        return path, card
    offered = "; ".join(f"{c['name']} ({','.join(c['bands'])})" for _, c in candidates)
    mapped = (" with band map " + ",".join(f"{k}={v}" for k, v in band_map.items())
              if band_map else "")
    raise InputError(f"no shipped {kind} model takes bands {','.join(mosaic_bands)}{mapped}"
                     f" (shipped: {offered or 'none'}); give a model name with --band-map, "
                     "or a .keras path")


def _kind_or_none(card):
    try:
        return model_kind(card)
    except InputError:
        return None
