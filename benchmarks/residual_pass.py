"""A second Mask R-CNN pass over the residual of bright objects, on saved runs, against truth.

For mosaics that ``mosaic_quality.py`` or ``catalog_threshold.py`` have
already run (``ROOT/NAME/field/{band}.fits`` and ``truth.parquet``,
``ROOT/NAME/h32/mosaic.zarr`` and ``results``), the first catalog is merged
with the card's settings; every object with S/N >= ``--min-snr`` over all
bands that the U-Net does not call irregular is taken out of each band by
its symmetric template (:func:`astrodask.symmetric_residual.symmetric_residual`);
the residual bands go through ingest -> run -> merge with the shipped
models; and the second catalog's objects that lie inside those objects'
segments and at least ``--separation`` px from every first-pass object are
added. Completeness (S/N >= 10) and purity against truth, before and after,
per second-pass score cut, and the summed F1 (see BENCHMARKS.md, "A second
Mask R-CNN pass on the residual of bright objects").

Usage::

    python benchmarks/residual_pass.py --root /work/bench/val34/hst/score
        [--fields standard,deep,standard2,deep2] [--min-snr 50] [--separation 6]
        [--cuts 0.6] [--match-radius 3] [--out bench-output/residual_pass]
"""

import argparse
from pathlib import Path
import sys

import numpy as np


def residual_bands(field, results, bands, min_snr, out):
    """Write the residual of each band as ``out/{band}.fits``; return the paths and the region."""
    from astropy.io import fits

    import astrodask
    from astrodask.symmetric_residual import symmetric_residual

    cat = astrodask.read_catalog(results / "catalog.parquet").to_pydict()
    segmap = fits.getdata(results / "segmap.fits")
    snr = np.sqrt(sum((np.asarray(cat[f"flux_{b}"]) / np.asarray(cat[f"flux_err_{b}"])) ** 2
                      for b in bands))
    morphology = np.asarray(cat.get("morphology", [""] * len(snr)))
    chosen = np.flatnonzero((snr >= min_snr) & (morphology != "irregular"))
    objects = [(cat["id"][k], cat["y"][k], cat["x"][k]) for k in chosen]
    out.mkdir(parents=True, exist_ok=True)
    paths, region = [], None
    for band in bands:
        with fits.open(field / f"{band}.fits") as hdul:
            image, header = hdul[0].data, hdul[0].header.copy()
        residual, region = symmetric_residual(image, segmap, objects)
        path = out / f"{band}.fits"
        fits.writeto(path, residual.astype(np.float32), header, overwrite=True)
        paths.append(path)
    return paths, region


def main(argv=None):
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    import astrodask
    from astrodask.catalog_scores import score_catalog

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--fields", default="standard,deep,standard2,deep2")
    parser.add_argument("--min-snr", type=float, default=50.0)
    parser.add_argument("--separation", type=float, default=6.0)
    parser.add_argument("--cuts", default="0.6")
    parser.add_argument("--match-radius", type=float, default=3.0)
    parser.add_argument("--out", default="bench-output/residual_pass")
    args = parser.parse_args(argv)
    cuts = [float(v) for v in args.cuts.split(",")]
    f1 = dict.fromkeys(cuts, 0.0)
    f1_before = 0.0
    for name in args.fields.split(","):
        work = Path(args.root) / name
        mosaic = astrodask.open_mosaic(work / "h32" / "mosaic.zarr")
        first = work / "h32" / "results"
        astrodask.merge(first, mosaic=mosaic, options=astrodask.MergeOptions(pictures=False))
        base = astrodask.read_catalog(first / "catalog.parquet").to_pydict()
        out = Path(args.out) / f"{name}-snr{args.min_snr:g}"
        paths, region = residual_bands(work / "field", first, mosaic.bands, args.min_snr,
                                       out / "field")
        second = astrodask.ingest(paths, out / "mosaic.zarr", overwrite=True)
        astrodask.run(second, out / "results", restart=True)
        truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
        flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
        bx, by = np.asarray(base["x"]), np.asarray(base["y"])
        keys = ("x", "y", "source_class")
        before = score_catalog({k: np.asarray(base[k]) for k in keys}, truth, mosaic.tile_grid,
                               flagged, radius=args.match_radius)
        c0, p0 = before["completeness"], before["purity"]
        f1_before += 2 * c0 * p0 / (c0 + p0)
        for cut in cuts:
            astrodask.merge(out / "results", mosaic=second,
                            options=astrodask.MergeOptions(pictures=False, min_score=cut))
            extra = astrodask.read_catalog(out / "results" / "catalog.parquet").to_pydict()
            x, y = np.asarray(extra["x"]), np.asarray(extra["y"])
            rows = np.clip(np.round(y).astype(int), 0, region.shape[0] - 1)
            cols = np.clip(np.round(x).astype(int), 0, region.shape[1] - 1)
            nearest = (cKDTree(np.column_stack([bx, by])).query(np.column_stack([x, y]))[0]
                       if len(bx) else np.full(len(x), np.inf))
            add = region[rows, cols] & (nearest >= args.separation)
            both = {k: np.concatenate([np.asarray(base[k]), np.asarray(extra[k])[add]])
                    for k in keys}
            after = score_catalog(both, truth, mosaic.tile_grid, flagged,
                                  radius=args.match_radius)
            c, p = after["completeness"], after["purity"]
            f1[cut] += 2 * c * p / (c + p)
            print(f"{name:10s} cut {cut:g}: {int(add.sum())} added; completeness {c0:.4f} -> "
                  f"{c:.4f}, purity {p0:.4f} -> {p:.4f}", flush=True)
    print(f"summed F1 without the second pass {f1_before:.4f}")
    for cut in cuts:
        print(f"second pass, cut {cut:g}: summed F1 {f1[cut]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
