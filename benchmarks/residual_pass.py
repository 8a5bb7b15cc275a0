"""The residual pass (``astrodask merge --residual-pass``) on whole mosaics, against truth.

For each field ``ROOT/NAME/field/`` (the band FITS files and ``truth.parquet``
that ``mosaic_quality.py`` or ``catalog_threshold.py`` simulate), the first
pass is ``ROOT/NAME/h32/{mosaic.zarr,results}`` when those runs left it,
else it is made here (ingest with a 32 px halo, run, merge with the cards'
settings but the residual pass). A copy of the merged results then takes
:func:`astrodask.residual_pass` at each ``--min-snr``; the catalog is
scored before and after (completeness at S/N >= 10 and purity, matched
within ``--match-radius`` px) and the summed F1 over the fields printed.

Usage::

    python benchmarks/residual_pass.py --root /work/bench/val34/hst/score
        [--fields standard,deep,standard2,deep2] [--min-snr 50] [--separation 6]
        [--min-score 0.6] [--core-fraction 0.3] [--match-radius 3]
        [--out bench-output/residual_pass]
"""

import argparse
import json
from pathlib import Path
import shutil
import sys

import numpy as np


def first_pass(work):
    """The first pass's mosaic and merged results folder, made if missing."""
    import astrodask

    base = work / "h32"
    results = base / "results"
    if not (results / "merge.json").exists() or not (base / "mosaic.zarr").exists():
        base.mkdir(parents=True, exist_ok=True)
        simulation = json.loads((work / "field" / "simulation.json").read_text())
        names = simulation["bands"]
        mosaic = astrodask.ingest([work / "field" / f"{b}.fits" for b in names],
                                  base / "mosaic.zarr", halo=32, overwrite=True)
        astrodask.run(mosaic, results, restart=True)
    mosaic = astrodask.open_mosaic(base / "mosaic.zarr")
    astrodask.merge(results, mosaic=mosaic,
                    options=astrodask.MergeOptions(pictures=False, residual_pass=False))
    return mosaic, results


def score(mosaic, catalog, truth, radius):
    """``(completeness, purity)`` of a catalog folder against the truth table."""
    import astrodask
    from astrodask.catalog_scores import score_catalog

    cat = astrodask.read_catalog(catalog, columns=["x", "y", "source_class"]).to_pydict()
    flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
    scores = score_catalog({k: np.asarray(v) for k, v in cat.items()}, truth, mosaic.tile_grid,
                           flagged, radius=radius)
    return scores["completeness"], scores["purity"]


def f1(completeness, purity):
    return 2 * completeness * purity / (completeness + purity)


def main(argv=None):
    import pyarrow.parquet as pq

    import astrodask

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--fields", default="standard,deep,standard2,deep2")
    parser.add_argument("--min-snr", default="50")
    parser.add_argument("--separation", type=float, default=6.0)
    parser.add_argument("--min-score", type=float, default=0.6)
    parser.add_argument("--core-fraction", type=float, default=0.3)
    parser.add_argument("--match-radius", type=float, default=3.0)
    parser.add_argument("--out", default="bench-output/residual_pass")
    args = parser.parse_args(argv)
    snrs = [float(v) for v in args.min_snr.split(",")]
    summed = {None: 0.0, **dict.fromkeys(snrs, 0.0)}
    for name in args.fields.split(","):
        work = Path(args.root) / name
        truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
        mosaic, results = first_pass(work)
        c0, p0 = score(mosaic, results / "catalog.parquet", truth, args.match_radius)
        summed[None] += f1(c0, p0)
        for snr in snrs:
            copy = Path(args.out) / f"{name}-snr{snr:g}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(results, copy)
            options = astrodask.ResidualOptions(min_snr=snr, separation=args.separation,
                                                min_score=args.min_score,
                                                core_fraction=args.core_fraction)
            done = astrodask.residual_pass(copy, mosaic=mosaic, options=options)
            c, p = score(mosaic, copy / "catalog.parquet", truth, args.match_radius)
            summed[snr] += f1(c, p)
            print(f"{name:10s} S/N >= {snr:g}: {done.n_parents} taken out, {done.n_added} added "
                  f"({sum(done.seconds.values()):.0f} s); completeness {c0:.4f} -> {c:.4f}, "
                  f"purity {p0:.4f} -> {p:.4f}", flush=True)
    print(f"summed F1 without the residual pass {summed[None]:.4f}")
    for snr in snrs:
        print(f"residual pass, S/N >= {snr:g}, separation {args.separation:g}, score cut "
              f"{args.min_score:g}, core fraction {args.core_fraction:g}: "
              f"summed F1 {summed[snr]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
