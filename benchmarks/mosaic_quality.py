"""Whole-mosaic catalog quality: ingest -> run -> merge against truth, beside SEP.

Simulates ``decam`` fields with seeds never used in training (the Mask R-CNN
pool used 0-1919, validation 500000+, test 1000000+; these start at 2000000),
runs the pipeline on each exactly as the CLI does (``ingest``, ``run`` with
its defaults, ``merge`` with its defaults), and scores the catalog against the
simulator's truth: one-to-one match within 2 px, completeness per S/N bin,
purity, star/galaxy accuracy, duplicates, each also per region (interior
windows, within 16 px of a seam between window cores, edge windows, within
5 px of flagged pixels). SEP runs on the same pixels. The standard field is
also ingested with halo 64 and with the tile origin shifted: the catalogs
must agree with the halo-32 one. Bright sources (true S/N ≥ 100): how many
have no catalog object within 5 px, and, for large isolated galaxies
(half-light radius > 1.5", no overlapping neighbour, no flagged pixel in
the box), the catalog flux over the noiseless flux in the true mask, and
the noiseless flux in the object's segment over the same (what the segment
holds of the galaxy, without the noise of the catalog flux). The missed
S/N ≥ 10 sources are counted by their distance to the nearest catalog
object and by cause (``missed_causes``: placed off, inside a neighbour's
segment, not detected). Galaxy shapes of both catalogs against the truth
(``shape_agreement``): per S/N bin, the median angle between the catalog's
``theta_image`` and the true position angle of galaxies with axis ratio
q < 0.5, and the correlation of ``b_image / a_image`` with q.

Fields (``--preset decam``): ``standard`` (the preset's density), ``crowded``
(120 galaxies per arcmin²), ``masked`` (bad columns, a NaN patch, a
zero-weight stripe, a missing block half a window wide, saturated stars),
``large`` (the standard field's density with 0.5 large, bright galaxies per
arcmin² added, most of them spirals with knots along their arms: the
large-galaxy fluxes on many more than the other fields' few) and ``flagged``
(the standard density with thin flagged features all over: bad columns,
satellite trails, CCD-gap stripes of zero weight, cosmic-ray masks; the
region near flagged pixels holds a few hundred sources, not the masked
field's few dozen).
``--preset hst``: ``standard`` and ``deep``; where the catalog has a
morphology (the U-Net ran), the morphology of matched true sources with
S/N ≥ 20 is printed as a confusion matrix against the simulator's classes.
With several fields, the regions are also printed pooled over them, with each
region's completeness difference to the interior and its standard error
(per field, regions of a few hundred sources differ by a few points by chance).
``--sky N`` adds to every band an unsubtracted sky of N times its noise σ,
tilted so that no constant removes it, before ingest; ``--background MESH``
ingests with that sky-background mesh (``astrodask ingest --background``),
and SEP, which subtracts its own background map, then sees the pixels as
given rather than the store's.

Usage::

    python benchmarks/mosaic_quality.py [--preset decam] [--size 2048]
        [--fields standard,crowded,masked] [--out bench-output/mosaic_quality]
        [--no-grid-checks] [--models maskrcnn_decam,morpheus_decam] [--match-radius 2]
        [--unet-mode fast|faithful] [--unet-stride 8] [--sky 100] [--background 128]
"""

import argparse
import json
from pathlib import Path
import shutil
import sys
import time

import numpy as np

SEED = 2_000_000
FIELDS = {
    "decam": {
        "standard": dict(seed=SEED),
        "crowded": dict(seed=SEED + 1, density=120.0),
        "masked": dict(seed=SEED + 2, saturate=True),
        # large, bright galaxies added (0.5 per arcmin², most of them spirals with knots)
        "large": dict(seed=SEED + 3, large_galaxies=0.5),
        # thin flagged features all over (bad columns, satellite trails, CCD-gap stripes,
        # cosmic-ray masks): a few hundred sources lie within 5 px of a flagged pixel
        "flagged": dict(seed=SEED + 4),
    },
    # HST-like fields (H, J, V, Z at 0.06"/px); deep: the preset's deep density and faint end
    "hst": {
        "standard": dict(seed=SEED + 100),
        "deep": dict(seed=SEED + 101, deep=True),
    },
}
SHIFT = (100, 60)  # (dy, dx) of the shifted tile origin
#: ``--sky``'s tilt: 5% across x and 2% along y squared (a sky no constant removes)
SKY_GRADIENT = (0.05, 0.02)


def masked_regions(size):
    """The ``masked`` field's flags: bad columns, a NaN patch, a missing block (NaN)
    and a zero-weight stripe; returns (NaN mask, zero-weight mask)."""
    h = size
    nan = np.zeros((h, h), bool)
    nan[:, [h // 7, h // 7 + 1, (5 * h) // 9]] = True                     # bad columns
    nan[(3 * h) // 4:(3 * h) // 4 + 120, h // 3:h // 3 + 120] = True      # NaN patch
    nan[h // 10:h // 10 + 256, (2 * h) // 3:(2 * h) // 3 + 256] = True    # missing block
    zero = np.zeros((h, h), bool)
    zero[(9 * h) // 20:(9 * h) // 20 + 30, :] = True                      # zero-weight stripe
    return nan, zero


def thin_flags(size, seed=SEED + 4):
    """The ``flagged`` field's flags: many thin features, as a coadd's mask holds.

    NaN: 20 bad columns (a third of them two wide), 6 satellite trails 7 px
    wide at random angles, 100 cosmic-ray masks of radius 2-4 px; zero weight:
    8 CCD-gap stripes 8-20 px high (on a 2048² field the pixels within 5 px
    of a flag are ~15% of the field). Returns (NaN mask, zero-weight mask).
    """
    from scipy import ndimage
    from skimage.draw import disk, line
    from skimage.morphology import disk as disk_footprint

    rng = np.random.default_rng(seed)
    h = size
    nan = np.zeros((h, h), bool)
    for k, x in enumerate(rng.choice(np.arange(8, h - 9), 20, replace=False)):
        nan[:, x:x + (2 if k % 3 == 0 else 1)] = True
    trails = np.zeros((h, h), bool)
    for _ in range(6):
        y0, y1 = rng.uniform(0, h, 2)
        rr, cc = line(int(y0), 0, int(y1), h - 1)
        trails[rr, cc] = True
    nan |= ndimage.binary_dilation(trails, structure=disk_footprint(3))
    for _ in range(100):
        rr, cc = disk(tuple(rng.uniform(0, h, 2)), rng.uniform(2, 4), shape=(h, h))
        nan[rr, cc] = True
    zero = np.zeros((h, h), bool)
    for y, height in zip(rng.choice(np.arange(0, h - 20), 8, replace=False),
                         rng.integers(8, 21, 8)):
        zero[y:y + height, :] = True
    return nan, zero


FLAGS = {"masked": masked_regions, "flagged": thin_flags}


def damage(folder, bands, size, flags):
    """Set the ``flags(size)`` NaN pixels to NaN in each band's FITS file and write
    weight maps (the simulated sky's inverse variance, 0 where zero-weight);
    returns the weight map paths."""
    from astropy.io import fits

    nan, zero = flags(size)
    weights = []
    for band, sigma in zip(bands, simulated_sigmas(folder, bands)):
        path = folder / f"{band}.fits"
        with fits.open(path, mode="update") as hdul:
            hdul[0].data[nan] = np.nan
            header = hdul[0].header.copy()
        # inverse variance of the simulated sky noise
        weight = np.full((size, size), 1.0 / sigma ** 2, dtype=np.float32)
        weight[zero] = 0.0
        wpath = folder / f"weight_{band}.fits"
        fits.PrimaryHDU(weight, header).writeto(wpath, overwrite=True)
        weights.append(wpath)
    return weights


def add_sky(images, sigmas, level, gradient=SKY_GRADIENT):
    """Add an unsubtracted sky to each FITS file of ``images``: ``level`` times its band's
    noise σ (``sigmas``, one per file), tilted by ``gradient`` = (fraction across x,
    fraction along y squared) so that no constant removes it. NaN pixels stay NaN.
    Where the header states ``SATURATE`` the sum is clipped there, as a detector
    saturates with the sky in its counts."""
    from astropy.io import fits

    for path, sigma in zip(images, sigmas):
        with fits.open(path, mode="update") as hdul:
            height, width = hdul[0].data.shape
            yy, xx = np.mgrid[0:height, 0:width]
            tilt = 1.0 + gradient[0] * xx / width + gradient[1] * (yy / height) ** 2
            data = hdul[0].data + (level * sigma * tilt).astype(hdul[0].data.dtype)
            if "SATURATE" in hdul[0].header:
                data = np.minimum(data, np.float32(hdul[0].header["SATURATE"]))
            hdul[0].data = data.astype(hdul[0].data.dtype)


def simulated_sigmas(folder, bands):
    """The noise σ per band that the simulator recorded for the field in ``folder``."""
    sigmas = json.loads((folder / "simulation.json").read_text())["sigma"]
    return [sigmas[band] for band in bands]


def fits_bands(images):
    """The bands of these FITS files as one (band, y, x) array."""
    from astropy.io import fits

    return np.stack([fits.getdata(path).astype(np.float64) for path in images])


def shifted_copy(folder, bands, out, shift):
    """The field cropped by ``shift`` = (dy, dx) pixels, WCS kept consistent."""
    from astropy.io import fits

    out.mkdir(parents=True, exist_ok=True)
    dy, dx = shift
    paths = []
    for band in bands:
        with fits.open(folder / f"{band}.fits") as hdul:
            header = hdul[0].header.copy()
            header["CRPIX1"] -= dx
            header["CRPIX2"] -= dy
            fits.PrimaryHDU(hdul[0].data[dy:, dx:], header).writeto(out / f"{band}.fits")
        paths.append(out / f"{band}.fits")
    return paths


def pipeline(images, work, halo=32, weights=None, models=None, rescale=None, config=None,
             background=None):
    """ingest -> run -> merge with the defaults (or these ``models`` and run ``config``, and
    ingest's sky ``background`` mesh); returns (mosaic, catalog dict, seconds)."""
    import astrodask

    seconds = {}
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mosaic = astrodask.ingest(images, work / "mosaic.zarr", halo=halo, weights=weights,
                              overwrite=True, rescale=rescale, background=background)
    seconds["ingest"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = astrodask.run(mosaic, work / "results", restart=True, models=models, config=config)
    seconds["run"] = time.perf_counter() - start
    start = time.perf_counter()
    astrodask.merge(summary.results, mosaic=mosaic, options=astrodask.MergeOptions(pictures=False))
    seconds["merge"] = time.perf_counter() - start
    return mosaic, catalog_columns(work / "results"), seconds


def merged_again(work):
    """Merge ``pipeline``'s finished run in ``work`` again (the code's current merge); returns
    (mosaic, catalog dict, seconds)."""
    import astrodask

    mosaic = astrodask.open_mosaic(work / "mosaic.zarr")
    start = time.perf_counter()
    astrodask.merge(work / "results", mosaic=mosaic,
                    options=astrodask.MergeOptions(pictures=False))
    return mosaic, catalog_columns(work / "results"), {"merge": time.perf_counter() - start}


def catalog_columns(results):
    """The columns of a run's catalog that the benchmarks score, as arrays."""
    import astrodask

    table = astrodask.read_catalog(results / "catalog.parquet")
    return {name: table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names
            if name in ("id", "x", "y", "source_class", "morphology", "a_image", "b_image",
                        "theta_image", "auto_flags")
            or name.startswith("flux_")}


def sep_on(mosaic, preset, image=None):
    """SEP on the store's pixels (or on ``image``, of the store's shape), told the true PSF
    (on the store's grid, which may be rescaled)."""
    from astrodask.baselines.sep_baseline import sep_catalog
    from astrodask.train.maskrcnn_eval import psf_half_light_radius

    image = mosaic.array("image")[:] if image is None else image
    flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
    return sep_catalog(image, psf_half_light_radius(preset) * mosaic.rescale_factor, mask=flagged)


def missed_offsets(catalog, truth, radius, snr_min=10.0, edges=(3.0, 5.0)):
    """How far the missed true sources (S/N >= ``snr_min``) lie from the nearest catalog object.

    Counts per bin of that distance: a miss with an object 2-3 px away is an
    offset centroid (or a blend's), one with nothing within 5 px is not detected.
    """
    from scipy.spatial import cKDTree

    from astrodask.catalog_scores import match_positions

    tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    to_truth, _ = match_positions(catalog["x"], catalog["y"], tx, ty, radius)
    matched = np.zeros(tx.size, bool)
    matched[to_truth[to_truth >= 0]] = True
    missed = ~matched & (np.asarray(truth["snr"], float) >= snr_min)
    if not len(catalog["x"]):
        return {f">={radius:g}": int(missed.sum())}
    distance, _ = cKDTree(np.column_stack([catalog["x"], catalog["y"]])).query(
        np.column_stack([tx[missed], ty[missed]]))
    bounds = (radius, *(e for e in edges if e > radius), np.inf)
    return {f"[{lo:g},{hi:g})": int(((distance >= lo) & (distance < hi)).sum())
            for lo, hi in zip(bounds[:-1], bounds[1:])}


def missed_causes(catalog, truth, segmap, radius, snr_min=10.0, offset_max=6.0):
    """Why each missed true source (S/N >= ``snr_min``) was missed, from the catalog's segmap.

    Counts, each miss in the first that applies:

    - ``offset``: an unmatched catalog object lies within ``offset_max`` px
      (found, but its position is off: an offset centroid or a blend's);
    - ``in_matched_segment``: its pixel lies in the segment of an object
      matched to another true source (swallowed by a neighbour: a blend or
      a faint companion on a bright galaxy's flank);
    - ``in_unmatched_segment``: in the segment of an unmatched object
      farther than ``offset_max`` px;
    - ``not_detected``: on no segment (``segmap`` 0 there).

    ``segmap`` holds catalog ``id`` per pixel (0: sky), as the merge's
    ``segmap.fits``; positions are 0-based pixels.
    """
    from astrodask.catalog_scores import match_positions

    tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    cx, cy = np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)
    to_truth, from_truth = match_positions(cx, cy, tx, ty, radius)
    causes = dict.fromkeys(("offset", "in_matched_segment", "in_unmatched_segment",
                            "not_detected"), 0)
    matched_ids = set(np.asarray(catalog["id"])[to_truth >= 0].tolist())
    unmatched = to_truth < 0
    height, width = segmap.shape
    for j in np.flatnonzero((from_truth < 0) & (np.asarray(truth["snr"], float) >= snr_min)):
        if (unmatched & (np.hypot(cx - tx[j], cy - ty[j]) < offset_max)).any():
            causes["offset"] += 1
            continue
        owner = segmap[min(max(int(round(ty[j])), 0), height - 1),
                       min(max(int(round(tx[j])), 0), width - 1)]
        causes["not_detected" if owner == 0 else "in_matched_segment" if owner in matched_ids
               else "in_unmatched_segment"] += 1
    return causes


def flux_in_labels(image, label_file, ids):
    """Sum of ``image`` over the pixels labelled with each of ``ids`` in a FITS label map.

    With the noiseless image: the simulator's labels give each true source's
    flux in its true mask, the merge's ``segmap.fits`` each catalog object's
    flux in its segment.
    """
    from astropy.io import fits
    from scipy import ndimage

    return ndimage.sum_labels(image, fits.getdata(label_file), index=np.asarray(ids))


def score_field(name, kwargs, size, out, grid_checks, models=None, preset="decam", radius=2.0,
                config=None, sky=None, background=None):
    import pyarrow.parquet as pq
    from astropy.io import fits

    import astrodask
    from astrodask.catalog_scores import (bright_sources, catalog_agreement, morphology_confusion,
                                          score_catalog, shape_agreement)
    from astrodask.simulation.presets import get_preset

    work = out / name
    if work.exists():
        shutil.rmtree(work)
    sim = astrodask.simulate(work / "field", size=(size, size), preset=preset, noiseless=True,
                             **kwargs)
    bands = sim["bands"]
    images = [work / "field" / f"{b}.fits" for b in bands]
    weights = damage(work / "field", bands, size, FLAGS[name]) if name in FLAGS else None
    if sky:
        add_sky(images, simulated_sigmas(work / "field", bands), sky)
    truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
    mosaic, catalog, seconds = pipeline(images, work / "h32", weights=weights, models=models,
                                        config=config, background=background)
    flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
    # SEP subtracts its own background map: it sees the pixels as given
    sep = sep_on(mosaic, get_preset(preset),
                 image=None if background is None else fits_bands(images))
    result = {"field": name, "size": size, "settings": kwargs, "seconds": seconds,
              "sky": sky, "background": background,
              "n_true": len(truth["x"]),
              "radius": radius,
              "astrodask": score_catalog(catalog, truth, mosaic.tile_grid, flagged, radius=radius),
              "sep": score_catalog(sep, truth, mosaic.tile_grid, flagged, radius=radius),
              "shapes": {"astrodask": shape_agreement(catalog, truth, radius=radius),
                         "sep": shape_agreement(sep, truth, radius=radius)},
              "missed_by_distance": missed_offsets(catalog, truth, radius),
              "missed_by_cause": missed_causes(
                  catalog, truth, fits.getdata(work / "h32" / "results" / "segmap.fits"), radius)}
    band = bands[len(bands) // 2]
    noiseless = fits.getdata(work / "field" / f"noiseless_{band}.fits").astype(np.float64)
    result["bright"] = bright_sources(
        catalog, truth, flux_in_labels(noiseless, work / "field" / "labels.fits", truth["id"]),
        band=band, flagged=flagged,
        segment_flux=flux_in_labels(noiseless, work / "h32" / "results" / "segmap.fits",
                                    catalog["id"]))
    result["bright"]["band"] = band
    if "morphology" in catalog:
        result["morphology"] = morphology_confusion(catalog, truth, radius=radius)
    if grid_checks:
        _, other, _ = pipeline(images, work / "h64", halo=64, models=models,
                               background=background)
        result["halo_32_vs_64"] = catalog_agreement(catalog, other, radius=1.0)
        dy, dx = SHIFT
        shifted_images = shifted_copy(work / "field", bands, work / "shifted-field", SHIFT)
        _, moved, _ = pipeline(shifted_images, work / "shifted", models=models,
                               background=background)
        moved = {"x": moved["x"] + dx, "y": moved["y"] + dy}
        # compare away from the crop edge, where the two fields see the same pixels
        margin = 40

        def away(c):
            keep = (c["x"] >= dx + margin) & (c["y"] >= dy + margin)
            return {"x": c["x"][keep], "y": c["y"][keep]}

        result["origin_shift"] = catalog_agreement(away(catalog), away(moved), radius=1.0)
    return result


def fmt(value):
    return "  nan" if value != value else f"{value:5.3f}"


def binned_pair(ours, sep, key):
    """One line of a binned score, astrodask / SEP, from ``score_catalog``'s ``key``."""
    return "  ".join(f"[{lo:g},{hi:g}) {fmt(c)}/{fmt(cs)} (n={n})"
                     for (lo, hi, c, n), (_, _, cs, _) in zip(ours[key], sep[key]))


def print_field(r):
    a, s = r["astrodask"], r["sep"]
    sky = "" if not r.get("sky") else f"; sky {r['sky']:g}σ, background {r['background']}"
    print(f"\n## {r['field']} ({r['size']}², {r['n_true']} true sources, match within "
          f"{r['radius']:g} px{sky}; "
          f"run {r['seconds']['run']:.0f} s, merge {r['seconds']['merge']:.0f} s)")
    print(f"{'S/N >= 10':24s} {'astrodask':>9s} {'SEP':>9s}")
    for key in ("completeness", "purity", "star_accuracy", "galaxy_accuracy"):
        print(f"{key:24s} {fmt(a[key]):>9s} {fmt(s[key]):>9s}")
    print(f"{'duplicates':24s} {a['duplicates']:9d} {s['duplicates']:9d}")
    print("missed S/N >= 10 sources by distance to the nearest catalog object (px): "
          + ", ".join(f"{k} {v}" for k, v in r["missed_by_distance"].items()))
    print("missed S/N >= 10 sources by cause: "
          + ", ".join(f"{k} {v}" for k, v in r["missed_by_cause"].items()))
    print(f"{'catalog objects':24s} {a['n_catalog']:9d} {s['n_catalog']:9d}")
    print("completeness by S/N:   " + binned_pair(a, s, "completeness_by_snr"))
    print("median offset from the true position (px) by S/N: "
          + binned_pair(a, s, "offset_by_snr"))
    print("completeness (S/N >= 10) by distance to the nearest true neighbour of S/N >= 5 (px): "
          + binned_pair(a, s, "completeness_by_separation"))
    print(f"{'region':14s} {'n':>5s} {'compl':>6s} {'purity':>6s} {'dup':>4s} | "
          f"{'SEP compl':>9s} {'purity':>6s}")
    for region, v in a["regions"].items():
        sv = s["regions"][region]
        print(f"{region:14s} {v['n_truth']:5d} {fmt(v['completeness']):>6s} "
              f"{fmt(v['purity']):>6s} {v['duplicates']:4d} | {fmt(sv['completeness']):>9s} "
              f"{fmt(sv['purity']):>6s}")
    if "morphology" in r:
        m = r["morphology"]
        print("morphology, matched true sources with S/N >= 20 (rows truth, columns catalog):")
        print(f"{'':14s} " + " ".join(f"{c:>12s}" for c in m["classes"]) + "   recall")
        for name, row in zip(m["classes"], m["matrix"]):
            print(f"{name:14s} " + " ".join(f"{v:12d}" for v in row)
                  + f"   {fmt(m['recall'][name])}")
    if "shapes" in r:
        print("galaxy shapes (matched): median |theta - true PA| of those with q < 0.5, "
              "corr(b/a, true q); astrodask / SEP")
        for ours, theirs in zip(r["shapes"]["astrodask"], r["shapes"]["sep"]):
            top = "" if ours["snr_max"] is None else f"{ours['snr_max']:g}"
            print(f"  S/N [{ours['snr_min']:g},{top}): {ours['median_angle_error']:5.1f} / "
                  f"{theirs['median_angle_error']:5.1f} deg (n {ours['n_elongated']} / "
                  f"{theirs['n_elongated']}), corr {fmt(ours['axis_ratio_correlation'])} / "
                  f"{fmt(theirs['axis_ratio_correlation'])}")
    b = r["bright"]
    ratios = np.asarray(b["large_flux_ratios"])
    print(f"S/N >= 100: {b['lost']} of {b['n_bright']} with no catalog object within 5 px "
          f"({b['lost_extended']} with half-light radius > 1\"); large isolated galaxies "
          f"(> 1.5\"): {b['large_found']} of {b['n_large']} found, flux_{b['band']} / noiseless "
          f"flux in the true mask within 3%: {b['large_within_3pct']}"
          + (f" (ratios {', '.join(f'{v:.3f}' for v in ratios)})" if len(ratios) else ""))
    if len(ratios):
        held = b["large_segment_ratios"]
        print(f"  noiseless flux in the object's segment / in the true mask within 3%: "
              f"{b['large_segment_within_3pct']} (ratios {', '.join(f'{v:.3f}' for v in held)})")
    mpx = r["size"] ** 2 / 1e6
    print("seconds per Mpx: " + ", ".join(f"{k} {v / mpx:.2f}" for k, v in r["seconds"].items()))
    if "halo_32_vs_64" in r:
        h = r["halo_32_vs_64"]
        o = r["origin_shift"]
        print(f"halo 32 vs 64 matched within 1 px: {h[0]:.4f} / {h[1]:.4f}; "
              f"origin shifted by {SHIFT}: {o[0]:.4f} / {o[1]:.4f}")


def print_pooled(results):
    """Regions pooled over the fields: completeness against the interior's, with its error."""
    from astrodask.catalog_scores import pooled_regions

    reference = "interior"
    print(f"\n## regions pooled over the {len(results)} fields (S/N >= 10)")
    print(f"{'region':14s} {'n':>5s} {'compl':>6s} {'purity':>6s} {'- ' + reference:>16s} | "
          f"{'SEP compl':>9s} {'- ' + reference:>16s}")
    ours = pooled_regions([r["astrodask"] for r in results], reference)
    sep = pooled_regions([r["sep"] for r in results], reference)

    def versus(name, v):
        if name == reference or v["difference"] != v["difference"]:
            return f"{'':>16s}"
        return f"{v['difference']:+8.3f} ± {v['difference_error']:.3f}"

    for name, v in ours.items():
        s = sep[name]
        print(f"{name:14s} {v['n_truth']:5d} {fmt(v['completeness']):>6s} {fmt(v['purity']):>6s} "
              f"{versus(name, v)} | {fmt(s['completeness']):>9s} {versus(name, s)}")


def add_sky_options(parser):
    """``--sky`` and ``--background``, shared with ``photometry_quality.py`` and
    ``real_sdss.py``."""
    parser.add_argument("--sky", type=float, default=None,
                        help="add an unsubtracted sky of this many noise σ to every band "
                             "(tilted 5%% across x, 2%% along y squared) before ingest")
    parser.add_argument("--background", type=int, default=None,
                        help="ingest with this background mesh (astrodask ingest "
                             "--background)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--preset", default="decam", choices=sorted(FIELDS))
    parser.add_argument("--fields", default=None,
                        help="comma-separated fields (default: all of the preset's: "
                             + "; ".join(f"{p}: {', '.join(f)}" for p, f in FIELDS.items()) + ")")
    parser.add_argument("--out", default="bench-output/mosaic_quality")
    parser.add_argument("--no-grid-checks", action="store_true",
                        help="skip the halo-64 and shifted-origin runs of the standard field")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to run (default: every shipped one for "
                             "the bands, as the CLI)")
    parser.add_argument("--match-radius", type=float, default=2.0,
                        help="one-to-one match radius, px (default 2: 0.52\" on decam, "
                             "0.12\" on hst)")
    parser.add_argument("--unet-mode", choices=("fast", "faithful"), default=None,
                        help="the U-Net's mode (default: the run's, fast)")
    parser.add_argument("--unet-stride", type=int, default=None,
                        help="window stride of the faithful mode")
    add_sky_options(parser)
    args = parser.parse_args(argv)
    unet = {k: v for k, v in (("mode", args.unet_mode), ("stride", args.unet_stride))
            if v is not None}
    config = {"unet": unet} if unet else None
    models = None if args.models is None else args.models.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    fields = FIELDS[args.preset]
    for name in (args.fields.split(",") if args.fields else fields):
        if name not in fields:
            parser.error(f"no field {name!r} for {args.preset}; choose from {', '.join(fields)}")
        r = score_field(name, fields[name], args.size, out / args.preset,
                        grid_checks=(name == "standard" and not args.no_grid_checks),
                        models=models, preset=args.preset, radius=args.match_radius,
                        config=config, sky=args.sky, background=args.background)
        print_field(r)
        sys.stdout.flush()
        results.append(r)
    if len(results) > 1:
        print_pooled(results)
    (out / args.preset / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
