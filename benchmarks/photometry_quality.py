"""Whole-mosaic photometry against truth: isophotal and Kron (AUTO) fluxes, beside SEP's.

Simulates the fields of ``mosaic_quality.py`` (same seeds, same truth), runs
ingest -> run -> merge with the defaults, matches the catalog to the true
sources one to one within ``--match-radius`` px, and compares each matched
source's flux with its true total flux (the part of the simulator's model flux
inside the image) in one
band: per bin of true S/N, the median of measured / true and its robust
scatter (1.4826 x the median absolute deviation), for the catalog's
isophotal flux (``flux_<band>``: the sum over the segment), its Kron flux
(``flux_auto_<band>``) and SEP's Kron flux on SEP's own detections,
segmentation and ellipses on the same pixels (the same aperture rule,
:func:`astrodask.kron.kron_photometry`). Stars and galaxies are also
reported apart (true class), and the Kron flux of the sources of S/N >= 10
per region of the tile grid (interior and edge windows, seams, near flagged
pixels). The half-light radius (``flux_radius``, and SEP's measured alike) is
compared with what it should be: for stars the half-light radius of the
PSF summed over the bands with the star's fluxes, for galaxies the true one
and the PSF's in quadrature (exact for Gaussians only: a common yardstick,
not a truth).

``--merge-only`` reuses the simulations and runs an earlier call left in
``--out`` and merges them again: a change of the merge measured in minutes.

``--validation`` runs the validation mosaics of ``catalog_threshold.py``
instead (seeds 3,000,000+), where settings are chosen; ``--annuli`` measures
the catalog's Kron fluxes again with other local-background annuli, and a
summary sums each variant's |median - 1| over the fields and S/N bins.
``--sky`` and ``--background`` are ``mosaic_quality.py``'s: an unsubtracted
sky added before ingest, and ingest's background mesh.

Usage::

    python benchmarks/photometry_quality.py [--preset decam] [--size 2048]
        [--fields standard] [--validation] [--annuli none,1.5:2.5] [--match-radius 2]
        [--out bench-output/photometry_quality] [--merge-only] [--sky 100] [--background 128]
"""

import argparse
import json
from pathlib import Path
import shutil

import numpy as np

from mosaic_quality import (FIELDS, FLAGS, add_sky, add_sky_options, damage, fits_bands,
                            merged_again, pipeline, simulated_sigmas)

SNR_BINS = ((10, 30), (30, 100), (100, 1000), (1000, np.inf))


def ratio_stats(measured, true):
    """``(n, median, robust scatter)`` of ``measured / true`` (finite, true > 0)."""
    measured, true = np.asarray(measured, float), np.asarray(true, float)
    keep = np.isfinite(measured) & np.isfinite(true) & (true > 0)
    if not keep.any():
        return 0, float("nan"), float("nan")
    ratio = measured[keep] / true[keep]
    median = float(np.median(ratio))
    return int(keep.sum()), median, float(1.4826 * np.median(np.abs(ratio - median)))


def compare(catalog, truth, columns, band, radius, snr_bins=SNR_BINS, reference=None):
    """Per S/N bin and true class: ratio statistics of each named flux of ``catalog``.

    Parameters
    ----------
    catalog : dict of ndarray
        ``x``, ``y`` and the flux columns named in ``columns``.
    truth : dict
        ``x``, ``y``, ``snr``, ``class`` and ``image_flux_<band>`` (or ``flux_<band>``)
        of the true sources.
    columns : dict
        Label -> catalog column (or an ndarray of the catalog's length).
    band : str
    radius : float
    reference : ndarray, optional
        Per true source, what the columns are divided by instead of its flux
        (e.g. its expected half-light radius).

    Returns
    -------
    list of dict
        ``bin``, ``class``, and per label ``(n, median, scatter)``.
    """
    from astrodask.catalog_scores import match_positions

    match, _ = match_positions(np.asarray(truth["x"], float), np.asarray(truth["y"], float),
                               catalog["x"], catalog["y"], radius)
    found = match >= 0
    snr = np.asarray(truth["snr"], float)
    # the flux that lies inside the image (a source at the edge is partly outside)
    true_flux = np.asarray(truth.get(f"image_flux_{band}", truth[f"flux_{band}"])
                           if reference is None else reference, float)
    classes = np.asarray(truth["class"])
    rows = []
    for low, high in snr_bins:
        for kind in ("all", "star", "galaxy"):
            chosen = found & (snr >= low) & (snr < high)
            if kind != "all":
                chosen &= classes == kind
            row = {"bin": f"{low:g}-{high:g}", "class": kind}
            for label, column in columns.items():
                values = catalog[column] if isinstance(column, str) else column
                row[label] = ratio_stats(np.asarray(values, float)[match[chosen]],
                                         true_flux[chosen])
            rows.append(row)
    return rows


def region_rows(catalog, truth, columns, band, radius, grid, flagged, snr_min=10.0):
    """Ratio statistics of each flux over the true sources of S/N at least ``snr_min``, per
    region of the tile grid of their true position
    (:func:`astrodask.catalog_scores.region_masks`: interior and edge windows, seams, near
    flagged pixels)."""
    from astrodask.catalog_scores import region_masks

    regions = region_masks(truth["x"], truth["y"], grid, flagged)
    rows = []
    for name, inside in regions.items():
        if not inside.any():
            continue
        chosen = {k: np.asarray(v)[inside] for k, v in truth.items()
                  if k in ("x", "y", "snr", "class", f"flux_{band}", f"image_flux_{band}")}
        row = compare(catalog, chosen, columns, band, radius, snr_bins=((snr_min, np.inf),))[0]
        rows.append(dict(row, bin=f">= {snr_min:g}", region=name))
    return rows


def expected_half_light_radius(truth, preset, bands):
    """Per true source, the half-light radius (px) its ``flux_radius`` should have.

    Stars: that of the sum of the bands' pixel-integrated PSFs weighted by the
    star's fluxes (the detection image), from GalSim. Galaxies: the true
    half-light radius and the PSF's (of the bands' mean colour) in quadrature,
    exact for Gaussians only, so a reference for comparing catalogs, not a truth.
    """
    import galsim

    from astrodask.simulation.optics import band_models
    from astrodask.simulation.presets import get_preset

    preset = get_preset(preset)
    scale = preset.pixel_scale
    psfs = [m.psf for m in band_models(preset)]
    pixel = galsim.Pixel(scale)

    def hlr(weights):
        total = galsim.Sum([p.withFlux(float(w)) for p, w in zip(psfs, weights)])
        # drawn on a finer grid, the pixel's own integration given explicitly
        image = galsim.Convolve(total, pixel).drawImage(nx=256, ny=256, scale=scale / 4,
                                                        method="no_pixel")
        return image.calculateHLR(center=image.true_center, flux=float(sum(weights))) / scale

    fluxes = np.stack([np.asarray(truth[f"flux_{b}"], float) for b in bands], axis=1)
    mean_psf = hlr(np.ones(len(bands)))
    galaxy = np.hypot(np.asarray(truth["hlr"], float) / scale, mean_psf)
    stars = np.asarray(truth["class"]) == "star"
    expected = np.where(stars, np.nan, galaxy)
    for k in np.flatnonzero(stars):
        expected[k] = hlr(fluxes[k] / fluxes[k].sum())
    return expected


def neighbour_split(catalog, column):
    """The Kron flux ``column`` apart for apertures without and with another object's pixels
    (``auto_flags`` bit ``neighbours``), NaN elsewhere: two columns for :func:`compare`."""
    from astrodask.kron import AUTO_FLAGS

    if "auto_flags" not in catalog:
        return {}
    shared = (np.asarray(catalog["auto_flags"]) & AUTO_FLAGS["neighbours"]) != 0
    flux = np.asarray(catalog[column], float)
    return {"auto, clear": np.where(shared, np.nan, flux),
            "auto, neighbours": np.where(shared, flux, np.nan)}


def field_images(work, bands):
    """The simulated field's FITS files in ``work``, one per band."""
    return [work / "field" / f"{b}.fits" for b in bands]


def print_rows(name, band, rows, labels, what="flux"):
    print(f"\n{name}: measured / true {what} in {band} (n, median, robust scatter)")
    print("| true S/N | class | " + " | ".join(labels) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in labels) + " |")
    for row in rows:
        cells = [f"{row[k][0]}: {row[k][1]:.3f} ± {row[k][2]:.3f}" if row[k][0] else "-"
                 for k in labels]
        print(f"| {row['bin']} | {row['class']} | " + " | ".join(cells) + " |")


def parse_annuli(text):
    """``none,1.5:2.5`` -> ``[None, (1.5, 2.5)]``."""
    if not text:
        return []
    return [None if item == "none" else tuple(float(v) for v in item.split(":"))
            for item in text.split(",")]


def annulus_label(annulus):
    return "auto, no annulus" if annulus is None else f"auto, annulus {annulus[0]:g}-{annulus[1]:g}"


def remeasured(mosaic, results, catalog, annulus):
    """The catalog's Kron fluxes measured again with another local-background ``annulus``."""
    from astropy.io import fits

    from astrodask.kron import kron_photometry
    from astrodask.measure import measurement_noise

    noise, correlation = measurement_noise(mosaic)
    return kron_photometry(mosaic.array("image")[:], mosaic.array("mask")[:],
                           fits.getdata(results / "segmap.fits").astype(np.int32),
                           catalog["id"], catalog["x"], catalog["y"], catalog["a_image"],
                           catalog["b_image"], catalog["theta_image"], noise=noise,
                           correlation=correlation, annulus=annulus)["flux_auto"]


def bias_summary(results, labels):
    """Per label: summed |median - 1| and mean scatter over fields and S/N bins (all classes)."""
    summary = {}
    for label in labels:
        rows = [row[label] for field in results.values() for row in field["rows"]
                if row["class"] == "all" and row[label][0]]
        summary[label] = (sum(abs(r[1] - 1) for r in rows), float(np.mean([r[2] for r in rows])))
    return summary


def main(argv=None):
    import pyarrow.parquet as pq

    import astrodask
    from astrodask.baselines.sep_baseline import sep_catalog
    from astrodask.simulation.presets import get_preset
    from astrodask.train.maskrcnn_eval import psf_half_light_radius
    from catalog_threshold import VALIDATION

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="decam", choices=sorted(FIELDS))
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--fields", default=None,
                        help="default: standard (with --validation: every validation field)")
    parser.add_argument("--validation", action="store_true",
                        help="the validation mosaics of catalog_threshold.py, not the test ones")
    parser.add_argument("--annuli", default="",
                        help="also re-measure the Kron fluxes with these local-background "
                        "annuli (inner:outer in units of the aperture, or none)")
    parser.add_argument("--match-radius", type=float, default=2.0)
    parser.add_argument("--band", default=None, help="default: the middle band")
    parser.add_argument("--out", default="bench-output/photometry_quality")
    parser.add_argument("--merge-only", action="store_true",
                        help="reuse the simulations and runs an earlier call left in --out: "
                        "only merge them again (to measure a change of the merge)")
    add_sky_options(parser)
    args = parser.parse_args(argv)
    known = (VALIDATION if args.validation else FIELDS)[args.preset]
    names = (args.fields.split(",") if args.fields
             else list(known) if args.validation else ["standard"])
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown --fields: {', '.join(unknown)}")
    annuli = parse_annuli(args.annuli)
    out = Path(args.out)
    results = {}
    for name in names:
        work = out / name
        if args.merge_only:
            if not (work / "h32" / "results" / "done").exists():
                parser.error(f"--merge-only: no finished run in {work / 'h32'}")
            mosaic, catalog, seconds = merged_again(work / "h32")
            bands = list(mosaic.bands)
        else:
            if work.exists():
                shutil.rmtree(work)
            sim = astrodask.simulate(work / "field", size=(args.size, args.size),
                                     preset=args.preset, **known[name])
            bands = list(sim["bands"])
            # the masked and flagged fields' damage and weight maps, as mosaic_quality.py
            # makes them
            weights = (damage(work / "field", bands, args.size, FLAGS[name])
                       if name in FLAGS else None)
            if args.sky:
                add_sky(field_images(work, bands), simulated_sigmas(work / "field", bands),
                        args.sky)
            mosaic, catalog, seconds = pipeline(field_images(work, bands), work / "h32",
                                                weights=weights, background=args.background)
        band = args.band or bands[len(bands) // 2]
        truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
        flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
        # SEP subtracts its own background map: with --background it sees the pixels as given
        pixels = (mosaic.array("image")[:] if args.background is None
                  else fits_bands(field_images(work, bands)))
        sep = sep_catalog(pixels,
                          psf_half_light_radius(get_preset(args.preset)), mask=flagged,
                          auto=True)
        columns = {"isophotal": f"flux_{band}", "auto": f"flux_auto_{band}",
                   **neighbour_split(catalog, f"flux_auto_{band}")}
        for annulus in annuli:
            flux = remeasured(mosaic, work / "h32" / "results", catalog, annulus)
            columns[annulus_label(annulus)] = flux[:, bands.index(band)]
        ours = compare(catalog, truth, columns, band, args.match_radius)
        theirs = compare(sep, truth, {"SEP auto": sep["flux_auto"][:, bands.index(band)]},
                         band, args.match_radius)
        rows = [dict(a, **{"SEP auto": b["SEP auto"]}) for a, b in zip(ours, theirs)]
        labels = list(columns) + ["SEP auto"]
        print_rows(name, band, rows, labels)
        expected = expected_half_light_radius(truth, args.preset, bands)
        sizes = compare(catalog, truth, {"flux_radius": "flux_radius"}, band,
                        args.match_radius, reference=expected)
        theirs = compare(sep, truth, {"SEP flux_radius": "flux_radius"}, band,
                         args.match_radius, reference=expected)
        sizes = [dict(a, **{"SEP flux_radius": b["SEP flux_radius"]})
                 for a, b in zip(sizes, theirs)]
        print_rows(name, "the sum of the bands", [r for r in sizes if r["class"] != "all"],
                   ["flux_radius", "SEP flux_radius"],
                   what="half-light radius (stars: the PSF's; galaxies: true and PSF's in quadrature)")
        regions = region_rows(catalog, truth, {"auto": f"flux_auto_{band}"}, band,
                              args.match_radius, mosaic.tile_grid, flagged)
        for row in regions:
            n, median, scatter = row["auto"]
            print(f"  Kron, S/N {row['bin']}, {row['region']}: {n}: {median:.3f} ± {scatter:.3f}")
        results[name] = {"band": band, "rows": rows, "regions": regions, "sizes": sizes,
                         "seconds": seconds}
    print("\nsummed |median - 1| over fields and S/N bins, mean robust scatter:")
    for label, (bias, scatter) in bias_summary(results, labels).items():
        print(f"  {label}: {bias:.3f}, {scatter:.3f}")
    (out / "photometry_quality.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
