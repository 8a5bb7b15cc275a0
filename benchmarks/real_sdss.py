"""The whole pipeline on real pixels: the SDSS g, r, i field of NGC 6976 against SExtractor.

``../shared/realdata/sdss_ngc6976_gri`` holds three SDSS frames reprojected
on one TAN grid (682x496 px, ~1.19"/px, nanomaggies) and a SExtractor 2.25
catalog of the r band (a reference, not truth). The shipped models take g, r,
z: the i band feeds their z input (``--band-map z=i``). The script runs
ingest -> run -> merge as the CLI does and reports:

- recovery of SExtractor's N brightest sources (MAG_AUTO) within 2 px;
- agreement with CLASS_STAR on bright sources: > 0.9 should be ``star``,
  < 0.1 ``galaxy``;
- how many catalog objects lie on each of the reference's large sources
  (isophotal area >= ``--large-area``), beside SExtractor's own count,
  within three times its A x B ellipse (about its isophotal footprint:
  pi 3A 3B is 0.87-1.09 of ISOAREA for the three spirals of this field) and
  within twice it (the inner part): a large galaxy cut into its HII regions
  and arms shows as many objects;
- the catalog's r fluxes, Kron (``flux_auto_r``) and isophotal, over
  SExtractor's ``FLUX_AUTO`` (median ± robust scatter) for the brightest
  sources found (those whose r core was kept) and for every reference
  source of S/N >= 10 matched within 2 px, and the median of ``mag_auto_r``
  less ``MAG_AUTO`` (the frames' ``BUNIT`` nanomaggy gives the catalog's AB
  zero point, 22.5, as the reference's configuration does);
- the catalog's half-light radius (``flux_radius``, on the sum of the
  bands) over SExtractor's r-band ``FLUX_RADIUS`` for the brightest stars
  and galaxies found with their r core;
- the overview picture (copied to ``--picture`` when given).

``--background MESH`` ingests with a sky-background map of that mesh (the
reference's SExtractor configuration used 64 px meshes on these already
sky-subtracted frames); ``--sky N`` first adds to each frame a sky of N
times its robust σ, tilted as ``mosaic_quality.py --sky`` tilts it: real
pixels whose sky was not subtracted.

SExtractor saw only the r band. Where a bright star's r-band core was lost
(saturated and replaced in the frame), its r profile is flat and broad while
it stays point-like in g and i, so CLASS_STAR calls it a galaxy. The script
therefore also measures each reference source's 4 px aperture magnitudes in
g, r and i and reports the agreement again without the sources whose r is
more than ``--r-deficit`` mag fainter than the mean of g and i (no star or
galaxy has such a dip in its spectrum; on this field the others lie below
-0.01 mag).

Usage::

    python benchmarks/real_sdss.py [--data ../shared/realdata/sdss_ngc6976_gri]
        [--out bench-output/sdss] [--brightest 100] [--picture docs/gallery/sdss_overview.png]
        [--models maskrcnn_decam,unet] [--rescale 3|auto] [--deblend-contrast 0.005]
        [--reclaim-sigma S] [--background 64] [--sky 100]
"""

import argparse
import gzip
from pathlib import Path
import shutil
import sys

import numpy as np

from mosaic_quality import add_sky, add_sky_options

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / \
    "sdss_ngc6976_gri"


def main(argv=None):
    from astropy.io import fits

    import astrodask
    from astrodask.catalog_scores import match_positions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default="bench-output/sdss")
    parser.add_argument("--brightest", type=int, default=100)
    parser.add_argument("--picture", help="copy overview.png here")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to run (default: every shipped one for the "
                             "bands)")
    parser.add_argument("--r-deficit", type=float, default=0.3,
                        help="r - (g + i) / 2 (mag, 4 px apertures) above which a reference "
                             "source's r band is taken as corrupted (default 0.3)")
    parser.add_argument("--large-area", type=int, default=1000,
                        help="isophotal area (px) of the reference's large sources, whose "
                             "catalog objects are counted (default 1000)")
    parser.add_argument("--deblend-contrast", type=float, default=None, metavar="C",
                        help="as run --deblend-contrast (default: the card's)")
    parser.add_argument("--reclaim-sigma", type=float, default=None, metavar="S",
                        help="as run --reclaim-sigma (default: the card's)")
    add_sky_options(parser)
    parser.add_argument("--rescale", default=None,
                        help="resample at ingest by this factor (or auto), as ingest --rescale")
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    images = []
    for band in "gri":
        path = out / f"sdss_{band}.fits"
        with gzip.open(data / f"sdss_{band}.fits.gz") as src:
            path.write_bytes(src.read())
        images.append(path)
    if args.sky:
        from astropy.stats import mad_std

        add_sky(images, [mad_std(fits.getdata(path), ignore_nan=True) for path in images],
                args.sky)
    rescale = None if args.rescale in (None, "auto") else float(args.rescale)
    mosaic = astrodask.ingest(images, out / "mosaic.zarr", bands=["g", "r", "i"],
                              rescale=args.rescale if args.rescale == "auto" else rescale,
                              background=args.background)
    models = None if args.models is None else args.models.split(",")
    summary = astrodask.run(mosaic, out / "results", band_map={"z": "i"}, models=models,
                            maskrcnn={"deblend_contrast": args.deblend_contrast,
                                      "reclaim_sigma": args.reclaim_sigma})
    astrodask.merge(summary.results, mosaic=mosaic)
    catalog = astrodask.read_catalog(out / "results" / "catalog.parquet").to_pydict()

    with fits.open(data / "sdss_r_sex2.25_ref.fits") as hdul:
        ref = hdul[1].data
    order = np.argsort(ref["MAG_AUTO"])[:args.brightest]
    rx, ry = ref["X_IMAGE"][order] - 1.0, ref["Y_IMAGE"][order] - 1.0   # FITS 1-based -> 0-based
    cls = ref["CLASS_STAR"][order]
    # catalog positions on the input grid through the sky (the store's grid may be rescaled)
    from astropy.wcs import WCS

    with fits.open(images[1]) as hdul:
        input_wcs = WCS(hdul[0].header)
    cx, cy = input_wcs.all_world2pix(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]), 0)
    to_cat, _ = match_positions(rx, ry, cx, cy, 2.0)
    found = to_cat >= 0
    ours = np.array([catalog["source_class"][k] if k >= 0 else None for k in to_cat], dtype=object)
    star, galaxy = cls > 0.9, cls < 0.1
    agree_star = (ours[found & star] == "star").mean() if (found & star).any() else float("nan")
    agree_gal = (ours[found & galaxy] == "galaxy").mean() if (found & galaxy).any() \
        else float("nan")
    print(f"catalog: {len(cx)} objects (SExtractor: {len(ref)})")
    print(f"recovered within 2 px: {found.sum()}/{len(order)} of SExtractor's brightest "
          f"= {found.mean():.3f}")
    print(f"CLASS_STAR > 0.9 called star: {(ours[found & star] == 'star').sum()}/"
          f"{(found & star).sum()} = {agree_star:.3f}")
    print(f"CLASS_STAR < 0.1 called galaxy: {(ours[found & galaxy] == 'galaxy').sum()}/"
          f"{(found & galaxy).sum()} = {agree_gal:.3f}")
    # on the frames as given (without an added --sky)
    deficit = r_band_deficit([fits.getdata(data / f"sdss_{band}.fits.gz") for band in "gri"],
                             rx, ry)
    clean = deficit <= args.r_deficit
    print(f"reference sources with r - (g + i)/2 > {args.r_deficit:g} mag (r core lost): "
          f"{(~clean).sum()}/{len(order)}; of them CLASS_STAR > 0.9: {(~clean & star).sum()}, "
          f"< 0.1: {(~clean & galaxy).sum()}, called star by astrodask: "
          f"{(ours[found & ~clean] == 'star').sum()}/{(found & ~clean).sum()}")
    for name, sel, label in (("star", star, "> 0.9"), ("galaxy", galaxy, "< 0.1")):
        n = (found & clean & sel).sum()
        agree = (ours[found & clean & sel] == name).sum()
        print(f"  without them, CLASS_STAR {label} called {name}: {agree}/{n}"
              + (f" = {agree / n:.3f}" if n else ""))
    flux_agreement(catalog, ref, cx, cy, order, found, to_cat, clean)
    # the store's pixels may be rescaled: radii back to the input's
    radius = np.asarray(catalog["flux_radius"], float) / mosaic.rescale_factor
    theirs = ref["FLUX_RADIUS"][order]
    parts = []
    for name, sel in (("stars", star), ("galaxies", galaxy)):
        chosen = found & clean & sel
        parts.append(f"{name} {ratio_text(radius[to_cat[chosen]], theirs[chosen])}")
    print("half-light radius over SExtractor's r FLUX_RADIUS, brightest found with their r "
          "core: " + ", ".join(parts))
    large = np.flatnonzero(ref["ISOAREA_IMAGE"] >= args.large_area)
    print(f"large reference sources (isophotal area >= {args.large_area} px): {len(large)}")
    for scale in (3, 2):
        inside = objects_in_ellipses(ref, large, cx, cy, scale)
        theirs = objects_in_ellipses(ref, large, ref["X_IMAGE"] - 1.0, ref["Y_IMAGE"] - 1.0,
                                     scale)
        print(f"  catalog objects centred within {scale} A x {scale} B of each: "
              f"{', '.join(str(n) for n in inside)} (SExtractor: "
              f"{', '.join(str(n) for n in theirs)})")
    if args.picture:
        Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "results" / "overview.png", args.picture)
        print(f"overview picture: {args.picture}")
    return 0


def ratio_text(ours, theirs):
    """``median ± robust scatter (n)`` of ``ours / theirs`` where both are finite and positive."""
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    keep = np.isfinite(ours) & np.isfinite(theirs) & (ours > 0) & (theirs > 0)
    if not keep.any():
        return "none"
    ratio = ours[keep] / theirs[keep]
    median = np.median(ratio)
    return f"{median:.3f} ± {1.4826 * np.median(np.abs(ratio - median)):.3f} ({keep.sum()})"


def flux_agreement(catalog, ref, cx, cy, order, found, to_cat, clean, min_snr=10.0):
    """Print the catalog's r fluxes (Kron and isophotal) over SExtractor's FLUX_AUTO: for the
    brightest sources found whose r core was kept, and for every reference source of S/N at
    least ``min_snr`` (FLUX_AUTO / FLUXERR_AUTO) matched within 2 px."""
    from astrodask.catalog_scores import match_positions

    auto, iso = np.asarray(catalog["flux_auto_r"]), np.asarray(catalog["flux_r"])
    chosen = found & clean
    theirs = ref["FLUX_AUTO"][order][chosen]
    print(f"r flux over SExtractor's FLUX_AUTO, brightest found with their r core: Kron "
          f"{ratio_text(auto[to_cat[chosen]], theirs)}, isophotal "
          f"{ratio_text(iso[to_cat[chosen]], theirs)}")
    snr = ref["FLUX_AUTO"] / np.where(ref["FLUXERR_AUTO"] > 0, ref["FLUXERR_AUTO"], np.inf)
    every = np.flatnonzero(snr >= min_snr)
    match, _ = match_positions(ref["X_IMAGE"][every] - 1.0, ref["Y_IMAGE"][every] - 1.0, cx, cy,
                               2.0)
    hit = match >= 0
    theirs = ref["FLUX_AUTO"][every][hit]
    print(f"  every reference source of S/N >= {min_snr:g} matched ({hit.sum()}/{len(every)}): "
          f"Kron {ratio_text(auto[match[hit]], theirs)}, isophotal "
          f"{ratio_text(iso[match[hit]], theirs)}")
    # AB magnitudes: the store's zero point from the frames' BUNIT (nanomaggy: 22.5), the
    # reference's from its configuration (MAG_ZEROPOINT 22.5)
    difference = np.asarray(catalog["mag_auto_r"], float)[match[hit]] - ref["MAG_AUTO"][every][hit]
    finite = np.isfinite(difference)
    print(f"  mag_auto_r - MAG_AUTO: median {np.median(difference[finite]):+.3f} mag "
          f"({finite.sum()} with a magnitude)" if finite.any()
          else "  mag_auto_r - MAG_AUTO: no catalog magnitudes (no zero point)")


def objects_in_ellipses(ref, which, x, y, scale=2.0):
    """How many of the positions ``x``, ``y`` (0-based) lie in each reference source's
    ellipse (``A_IMAGE``, ``B_IMAGE``, ``THETA_IMAGE``) scaled by ``scale``.

    One large galaxy should hold one object, plus the stars and galaxies
    that happen to lie on it: a catalog that cuts the galaxy into its HII
    regions and arms holds many more than SExtractor's does.
    """
    counts = []
    for k in which:
        dx, dy = x - (ref["X_IMAGE"][k] - 1.0), y - (ref["Y_IMAGE"][k] - 1.0)
        theta = np.radians(ref["THETA_IMAGE"][k])
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        a, b = scale * ref["A_IMAGE"][k], scale * ref["B_IMAGE"][k]
        counts.append(int(((u / a) ** 2 + (v / b) ** 2 <= 1.0).sum()))
    return counts


def r_band_deficit(images, x, y, radius=4.0):
    """``r - (g + i) / 2`` in magnitudes, in circular apertures of ``radius`` px.

    ``images`` are the g, r, i pixels (same grid, same flux unit), ``x``,
    ``y`` 0-based positions. NaN where a flux is not positive.
    """
    import sep

    fluxes = [sep.sum_circle(np.ascontiguousarray(image, dtype=np.float64),
                             np.asarray(x, np.float64), np.asarray(y, np.float64), radius)[0]
              for image in images]
    with np.errstate(invalid="ignore", divide="ignore"):
        g, r, i = (np.where(f > 0, -2.5 * np.log10(f), np.nan) for f in fluxes)
    return r - (g + i) / 2


if __name__ == "__main__":
    sys.exit(main())
