"""Fitting the PSF-aware star/galaxy model of a Mask R-CNN on simulated fields.

Each field is drawn with observing conditions at random
(:func:`astrodask.simulation.conditions.draw_conditions`: seeing, PSF family,
pixel scale, depth, noise), ingested (which measures its PSF), and run
through the engine with the network's own classes. Every instance a window
owns is matched to the simulator's truth, and its features
(:func:`astrodask.star_galaxy.instance_features`) are kept with the true
class. :func:`fit_from_samples` then fits
:class:`astrodask.star_galaxy.StarGalaxyModel`.
"""

from dataclasses import replace
import shutil
from pathlib import Path

import numpy as np


def star_galaxy_samples(model, seeds, workdir, *, size=1024, preset="decam", star_density=8.0,
                        match_radius=2.0, client=None, log=print):
    """Features and true classes of matched Mask R-CNN instances on randomised fields.

    Parameters
    ----------
    model : str
        Shipped Mask R-CNN name or ``.keras`` path.
    seeds : iterable of int
        One simulated field per seed (the conditions are drawn from it too).
    workdir : str or Path
        Scratch folder (each field's files are removed once sampled).
    size : int
        Field side, px.
    preset : str
    star_density : float
        Stars per arcmin² (enough stars to learn from).
    match_radius : float
        One-to-one match radius to the truth, px.
    client : distributed.Client, optional
        Cluster for the engine runs (default: a local one per field).
    log : callable

    Returns
    -------
    dict of ndarray
        ``network_star`` (whether the network called it a star, for comparison),
        ``relative_concentration``, ``snr``, ``fwhm_px``, ``is_star``,
        ``true_snr`` and ``seed``, one entry per matched instance.
    """
    import pyarrow.parquet as pq

    from ..catalog_scores import match_positions
    from ..classes import OBJECT_CODE
    from ..engine.results import Results
    from ..engine.run import run
    from ..ingestion import ingest
    from ..merging.pieces import read_window_pieces
    from ..simulation.conditions import draw_conditions
    from ..simulation.files import simulate
    from ..sky import band_levels, detection_image, saturated_pixels
    from ..star_galaxy import instance_features, psf_reference

    workdir = Path(workdir)
    columns = {k: [] for k in ("network_star", "relative_concentration", "snr", "saturated",
                               "fwhm_px", "is_star", "true_snr", "seed")}
    for seed in seeds:
        conditions = replace(draw_conditions(seed), star_density=star_density)
        field = workdir / f"field-{seed}"
        sim = simulate(field / "sim", size=(size, size), preset=preset, seed=seed,
                       conditions=conditions, overwrite=True)
        mosaic = ingest([field / "sim" / f"{b}.fits" for b in sim["bands"]],
                        field / "mosaic.zarr", overwrite=True)
        reference = psf_reference(mosaic.psf, mosaic.bands)
        if reference is None:
            log(f"seed {seed}: no PSF measured in every band; skipped")
            shutil.rmtree(field)
            continue
        run(mosaic, field / "results", models=[model], maskrcnn={"psf_classes": "off"},
            restart=True, client=client)
        results = Results(field / "results")
        mean, std = band_levels(mosaic)
        levels = [mosaic.saturation[b] for b in mosaic.bands]
        found = {k: [] for k in ("x", "y", "network_star", "relative_concentration", "snr",
                                 "saturated")}
        for iy, ix in mosaic.tile_grid.indices():
            table = read_window_pieces(results, iy, ix)
            if not table.num_rows:
                continue
            tile = mosaic.read_tile(iy, ix)
            # every instance of the window, as the engine sees them; the core's are sampled
            features = instance_features(table, detection_image(tile.data, tile.mask != 0,
                                                                mean, std),
                                         tile.origin, reference, noise=np.sqrt(len(mean)),
                                         saturated=saturated_pixels(tile.data, levels))
            rows = features.pop("rows")
            owned = table.column("in_core").to_numpy(zero_copy_only=False)[rows]
            features["network_star"] = (table.column("class_id").to_numpy()[rows]
                                        == OBJECT_CODE["star"])
            for k in found:
                found[k].append(features[k][owned])
        found = {k: np.concatenate(v) if v else np.zeros(0) for k, v in found.items()}
        truth = pq.read_table(field / "sim" / "truth.parquet").to_pydict()
        _, match = match_positions(truth["x"], truth["y"], found["x"], found["y"], match_radius)
        keep = np.flatnonzero(match >= 0)
        true_class = np.asarray(truth["class"])[match[keep]]
        for k in ("network_star", "relative_concentration", "snr", "saturated"):
            columns[k].append(found[k][keep])
        columns["fwhm_px"].append(np.full(keep.size, reference["fwhm_px"]))
        columns["is_star"].append(true_class == "star")
        columns["true_snr"].append(np.asarray(truth["snr"])[match[keep]])
        columns["seed"].append(np.full(keep.size, seed))
        log(f"seed {seed}: FWHM {reference['fwhm_px']:.2f} px, {keep.size} matched instances "
            f"({int((true_class == 'star').sum())} stars)")
        shutil.rmtree(field)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}


def fit_from_samples(samples, min_snr=5.0, l2=1e-2):
    """Fit the star/galaxy model on :func:`star_galaxy_samples` (true S/N >= ``min_snr``).

    Saturated instances are left out: the engine calls them stars whatever
    their concentration (:func:`astrodask.star_galaxy.reclassify_instances`).
    The model's features include each field's PSF FWHM (``fwhm_px``), and it
    records the range of FWHMs it was fitted on.

    Returns
    -------
    StarGalaxyModel
    """
    from ..star_galaxy import FEATURES, design_matrix, fit_star_galaxy

    keep = (np.asarray(samples["true_snr"]) >= min_snr) & ~np.asarray(samples["saturated"], bool)
    fwhm = np.asarray(samples["fwhm_px"], dtype=np.float64)[keep]
    features = design_matrix(samples["relative_concentration"][keep], samples["snr"][keep], fwhm)
    return fit_star_galaxy(features, samples["is_star"][keep], l2=l2, names=FEATURES,
                           fwhm_range_px=(fwhm.min(), fwhm.max()))
