"""Parts of large, resolved galaxies folded into their galaxy.

On a nearby galaxy tens of arcseconds across, the detector marks the HII
regions, the arm segments and sometimes a second core as sources of their
own, each confident; the merge then cuts the galaxy into as many watershed
basins (the SDSS field of NGC 6976: 5, 11 and 7 catalog objects on its three
spirals, SExtractor 1 each). The simulated fields the detector learned from
hold few galaxies that large (none on the validation and test mosaics:
the largest covers 892 arcsec²), so the rule is about size on the sky: a
confident galaxy piece covering at least ``large_host_area`` arcsec² is a
*host*, and every smaller galaxy piece of the same window centred within
``large_host_reach`` of the host's radius ``sqrt(area / pi)`` from the
host's centre is one of its *parts*: it is not a source of its own and is
folded into the piece it touches (:func:`astrodask.merging.pieces.fold_faint_pieces`),
as a weak piece is; a part that touches nothing that stays is left out.
Stars are never parts. Each window decides for the pieces it owns (their
anchor in its core), so a part near a window's edge counts a host cut by
that edge with the area the window sees of it. The rule is on when the
options or the card
(``catalog_large_host_area``) give the area (BENCHMARKS.md, "Parts of large
galaxies folded into them").
"""

import numpy as np

from ..errors import InputError
from .weak import piece_centres


def host_parts(table, min_score, min_area_px, reach):
    """Which of one window's pieces are parts of a large host.

    Parameters
    ----------
    table : pyarrow.Table
        One window's pieces (:data:`astrodask.instances.SCHEMA`).
    min_score : float or None
        The catalog cut: hosts are scored at or above it (None: every piece may
        be one).
    min_area_px : float
        The least area (pixels) of a host's mask.
    reach : float
        A part's centre lies within this many host radii (``sqrt(area / pi)``)
        of the host's centre.

    Returns
    -------
    ndarray of bool, one per row of ``table``
    """
    parts = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows < 2:
        return parts
    score = table.column("score").to_numpy()
    area = table.column("area").to_numpy().astype(np.float64)
    galaxy = np.asarray(table.column("class").to_pylist(), dtype=object) == "galaxy"
    hosts = np.flatnonzero(galaxy & (area >= min_area_px)
                           & ((score >= min_score) if min_score is not None else True))
    if len(hosts) == 0:
        return parts
    y, x = piece_centres(table)
    radius = np.sqrt(area[hosts] / np.pi)
    distance = np.hypot(y[:, None] - y[None, hosts], x[:, None] - x[None, hosts])
    smaller = area[:, None] < area[None, hosts]
    near = smaller & (distance <= reach * radius[None, :])
    return galaxy & near.any(axis=1)


def host_rule(settings, pixel_scale):
    """The rule as ``parts(table) -> bool array`` for one window's pieces, or None when off.

    ``settings`` maps the merge's resolved options by their
    :class:`~astrodask.MergeOptions` names (``min_score``, ``large_host_area``,
    ``large_host_reach``); ``pixel_scale`` is the mosaic's (arcsec per pixel;
    without one the rule is off).
    """
    area, reach = settings.get("large_host_area"), settings.get("large_host_reach")
    if area is None or not pixel_scale:
        return None
    min_area_px = float(area) / float(pixel_scale) ** 2
    min_score = settings.get("min_score")
    return lambda table: host_parts(table, min_score, min_area_px, float(reach))


#: The reach of a host's parts (host radii) where neither the options nor the card give one.
DEFAULT_REACH = 1.5


def large_host_rule(card, options):
    """``(large_host_area, large_host_reach)`` of a run: the options', else the card's.

    ``card`` is the run's Mask R-CNN card (None: U-Net-only run, rule off).
    The area is in arcsec² (None: off); the reach in host radii.
    """
    card = card or {}
    area = options.large_host_area
    area = card.get("catalog_large_host_area") if area is None else area
    reach = options.large_host_reach
    reach = card.get("catalog_large_host_reach", DEFAULT_REACH) if reach is None else reach
    if area is not None and not float(area) > 0:
        raise InputError(f"the large-host area must be > 0 arcsec², got {area}")
    if not float(reach) > 0:
        raise InputError(f"the large-host reach must be > 0 host radii, got {reach}")
    return (None if area is None else float(area)), float(reach)
