"""Write a simulated field of any size to a folder, tile by tile: :func:`simulate`."""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..storage import local_file_written_whole, put_json
from .conditions import with_conditions
from .fits_sections import FitsSectionWriter
from .noise import NOISE_BLOCK
from .render import DEFAULT_MASK_SIGMA, FieldPlan, parse_size, validate_shape
from .tiles import check_workers, render_tiles
from .truth import masks_table, truth_table

MANIFEST = "simulation.json"


def _check_out_dir(out_dir, overwrite):
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"output folder {out} is not empty; use --overwrite to replace "
                             "a previous simulation there")
        manifest = out / MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = {}
            manifest.unlink()
            for name in old.get("files", {}).values():
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _image_cards(plan, model, kind):
    preset = plan.preset
    cards = [(k, v, "") for k, v in plan.wcs.to_header().items()]
    cards += [
        ("FILTER", model.name, "band name"),
        ("INSTFILT", model.filter, "survey filter"),
        ("BUNIT", preset.bunit, "pixel unit"),
        ("MAGZERO", model.zeropoint, "AB mag = MAGZERO - 2.5 log10(flux)"),
        ("GAIN", round(model.gain, 6), "electrons per BUNIT (effective)"),
        ("SKYSIG", float(np.float32(model.sigma)), "per-pixel noise, BUNIT"),
        ("SKYLEVEL", float(np.float32(model.sky)), "subtracted sky per pixel, BUNIT"),
        ("RDNOISE", float(np.float32(model.read_noise)), "read noise, BUNIT"),
        ("NOISEKER", preset.bands[plan.bands.index(model.name)].noise_kernel,
         "sky noise correlated by [a,1,a] x [a,1,a]"),
        ("SATURATE", float(np.float32(model.saturation)), "saturation level, BUNIT"),
        ("PSFFWHM", round(model.fwhm_px * preset.pixel_scale, 4), "PSF FWHM, arcsec"),
        ("PIXSCALE", preset.pixel_scale, "arcsec per pixel"),
        ("IMAGETYP", kind, "sky-subtracted coadd-like simulation"),
    ]
    return cards + _provenance_cards(plan)


def _provenance_cards(plan):
    return [
        ("ORIGIN", "astrodask simulate", "GalSim simulated field"),
        ("PRESET", plan.preset.name, "survey preset"),
        ("SIMSEED", plan.seed, "random seed"),
        ("DEEP", plan.deep, "ultra-deep field"),
        ("SATBLEED", plan.saturate, "saturation and bleed trails drawn"),
        ("COSMICRY", plan.cosmic_rays, "cosmic-ray tracks per Mpx per band"),
    ]


def _map_cards(plan, what):
    cards = [(k, v, "") for k, v in plan.wcs.to_header().items()]
    return cards + [("IMAGETYP", what, "truth map")] + _provenance_cards(plan)


def _write_parquet(table, path):
    import pyarrow.parquet as pq

    with local_file_written_whole(path) as tmp:
        pq.write_table(table, tmp, row_group_size=65536)


def _tiles(shape, tile_size):
    ny, nx = shape
    for y0 in range(0, ny, tile_size):
        for x0 in range(0, nx, tile_size):
            yield (y0, x0, min(y0 + tile_size, ny), min(x0 + tile_size, nx))


def simulate(out_dir, size=(4096, 4096), preset="decam", seed=0, density=None, star_density=None,
             deep=False, noiseless=False, cosmic_rays=0.0, saturate=False,
             mask_sigma=DEFAULT_MASK_SIGMA,
             mask_fraction=None, center=None, tile_size=1024, workers=1, overwrite=False,
             progress=None, conditions=None, large_galaxies=0.0):
    """Simulate a field and write it to ``out_dir``, tile by tile.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; created if missing. A non-empty folder needs
        ``overwrite=True``.
    size : str or tuple
        ``"WIDTHxHEIGHT"`` or ``(ny, nx)``.
    preset, seed, density, star_density, deep, cosmic_rays, saturate, mask_sigma, mask_fraction, center
        As :func:`astrodask.simulation.simulate_field`.
    noiseless : bool
        Also write ``noiseless_<band>.fits``.
    tile_size : int
        Side of the drawing tiles (a multiple of 256); memory grows with it,
        the output does not depend on it.
    workers : int
        Processes drawing tiles in parallel (the output does not depend on it).
    overwrite : bool
        Replace a previous simulation in ``out_dir``.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)``.
    conditions : Conditions or dict, optional
        Seeing, PSF, pixel scale, depth... of the field, as
        :func:`astrodask.simulation.simulate_field`; recorded in the manifest.
    large_galaxies : float
        Large, bright galaxies (most of them spirals) added per arcmin^2, as
        :func:`astrodask.simulation.simulate_field`.

    Returns
    -------
    dict
        The manifest written to ``simulation.json``: files, counts, settings
        and timing.

    Notes
    -----
    Files: ``<band>.fits`` (float32, TAN WCS, FILTER, BUNIT, GAIN, MAGZERO),
    ``labels.fits`` (int32 exclusive truth labels, 0 = none),
    ``morphology.fits`` (uint8 codes of ``astrodask.classes.MORPHOLOGY_CLASSES``),
    ``truth.parquet``, ``masks.parquet`` and ``simulation.json`` (written
    last). Each file is written under a temporary name and renamed when whole.
    """
    start = time.perf_counter()
    shape = validate_shape(parse_size(size) if isinstance(size, str) else size)
    if int(tile_size) != tile_size or tile_size < NOISE_BLOCK or tile_size % NOISE_BLOCK:
        raise InputError(f"tile size must be a positive multiple of {NOISE_BLOCK}, got {tile_size}")
    workers = check_workers(workers)
    preset, conditions, star_density, cosmic_rays, saturate = with_conditions(
        preset, conditions, star_density, cosmic_rays, saturate)
    plan = FieldPlan(shape, preset=preset, seed=seed, density=density, star_density=star_density,
                     deep=deep, mask_sigma=mask_sigma, mask_fraction=mask_fraction, center=center,
                     saturate=saturate, cosmic_rays=cosmic_rays, large_galaxies=large_galaxies)
    out = _check_out_dir(out_dir, overwrite)
    files, writers = _open_writers(out, plan, noiseless)
    try:
        truth = _draw(plan, writers, list(_tiles(shape, int(tile_size))), workers, noiseless,
                      progress)
        for w in writers.values():
            w.close()
        _write_truth(out, files, plan, *truth)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    manifest = _manifest(plan, density, star_density, conditions, files)
    put_json(out / MANIFEST, manifest)
    return dict(manifest, out_dir=str(out), seconds=time.perf_counter() - start)


def _open_writers(out, plan, noiseless):
    """File names of the outputs (the manifest's ``files``) and the FITS writers."""
    shape = plan.shape
    files = {f"image_{m.name}": f"{m.name}.fits" for m in plan.models}
    files.update(labels="labels.fits", morphology="morphology.fits",
                 truth="truth.parquet", masks="masks.parquet")
    writers = {f"image_{m.name}": FitsSectionWriter(out / files[f"image_{m.name}"], shape, ">f4",
                                                   _image_cards(plan, m, "simulated"))
               for m in plan.models}
    if noiseless:
        for m in plan.models:
            key = f"noiseless_{m.name}"
            files[key] = f"noiseless_{m.name}.fits"
            writers[key] = FitsSectionWriter(out / files[key], shape, ">f4",
                                             _image_cards(plan, m, "noiseless"))
    writers["labels"] = FitsSectionWriter(out / files["labels"], shape, ">i4",
                                          _map_cards(plan, "exclusive truth labels (object id)"))
    writers["morphology"] = FitsSectionWriter(
        out / files["morphology"], shape, "u1",
        _map_cards(plan, "morphology codes (astrodask.classes)"))
    return files, writers


def _draw(plan, writers, tiles, workers, noiseless, progress):
    """Render ``tiles`` into the writers; the truth of the objects the tiles own.

    Returns
    -------
    mask_parts : list of pyarrow.Table
        Packed masks, one table per tile (~1/32 of one band's pixels at most).
    truths : dict
        Object id -> its truth, without its mask.
    pairs : set
        ``(id_a, id_b)`` of objects whose masks overlap.
    """
    mask_parts = []
    lut = plan.morphology_lookup()
    truths, pairs = {}, set()
    for k, (region, result, noisy) in enumerate(render_tiles(plan, tiles, workers)):
        for b, m in enumerate(plan.models):
            writers[f"image_{m.name}"].write(region, noisy[b])
            if noiseless:
                writers[f"noiseless_{m.name}"].write(region, result.noiseless[b])
        writers["labels"].write(region, result.label)
        writers["morphology"].write(region, lut[result.label])
        mask_parts.append(masks_table(sorted(result.owned.items())))
        for oid, t in result.owned.items():
            truths[oid] = dataclasses.replace(t, mask=None)
        pairs |= result.pairs
        del result, noisy
        if progress is not None:
            progress(k + 1, len(tiles))
    return mask_parts, truths, pairs


def _write_truth(out, files, plan, mask_parts, truths, pairs):
    """Write ``masks.parquet`` and ``truth.parquet`` from what :func:`_draw` returned."""
    import pyarrow as pa

    # in id order, so the file does not depend on the tiling
    masks = pa.concat_tables(mask_parts).sort_by("id")
    _write_parquet(masks, out / files["masks"])
    _write_parquet(truth_table(plan, truths, pairs), out / files["truth"])


def _manifest(plan, density, star_density, conditions, files):
    """What ``simulation.json`` records: settings, counts, band properties and files."""
    n_star = int(plan.population.is_star.sum())
    return {
        "preset": plan.preset.name, "seed": plan.seed, "shape": list(plan.shape),
        "bands": list(plan.bands), "deep": plan.deep,
        "density": density, "star_density": star_density, "cosmic_rays": plan.cosmic_rays,
        "saturate": plan.saturate, "large_galaxies": plan.large_galaxies,
        "mask_sigma": plan.mask_sigma, "mask_fraction": plan.mask_fraction,
        "center": list(plan.center), "pixel_scale": plan.preset.pixel_scale,
        "bunit": plan.preset.bunit,
        "zeropoints": {m.name: m.zeropoint for m in plan.models},
        "sigma": {m.name: m.sigma for m in plan.models},
        "n_objects": len(plan.population), "n_stars": n_star,
        "n_galaxies": len(plan.population) - n_star,
        "psf_fwhm_px": {m.name: m.fwhm_px for m in plan.models},
        "conditions": None if conditions is None else conditions.to_dict(),
        "files": files,
    }
