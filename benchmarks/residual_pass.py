"""The residual pass (``astrodask merge --residual-pass``) on whole mosaics, against truth.

For each field ``ROOT/NAME/field/`` (the band FITS files and ``truth.parquet``
that ``mosaic_quality.py`` or ``catalog_threshold.py`` simulate), the first
pass is ``ROOT/NAME/h32/{mosaic.zarr,results}`` when those runs left it,
else it is made here (ingest with a 32 px halo, run, merge with the cards'
settings but the residual pass). A copy of the merged results then takes
:func:`astrodask.residual_pass` at each ``--min-snr`` and each second-run
variant of ``--second-run`` (``FLIPS:SCORE``: whether the second run fuses
the Mask R-CNN's 8 flipped passes, and its score cut); the catalog is
scored before and after (completeness at S/N >= 10 and purity, matched
within ``--match-radius`` px), and the summed F1 over the fields and the
second runs' summed seconds (side by side in one process) are printed.

Usage::

    python benchmarks/residual_pass.py --root /work/bench/val34/hst/score
        [--fields standard,deep,standard2,deep2] [--min-snr 50] [--separation 6]
        [--second-run off:0.8,on:0.6] [--core-fraction 0.3] [--match-radius 3]
        [--irregular-centroid-sigma 8] [--out bench-output/residual_pass]
"""

import argparse
import json
from pathlib import Path
import shutil
import sys

import numpy as np


def first_pass(work, irregular_centroid_sigma=None):
    """The first pass's mosaic and merged results folder, made if missing.

    ``irregular_centroid_sigma`` overrides the value the run's card recorded
    (runs made before a card chose it).
    """
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
    options = astrodask.MergeOptions(pictures=False, residual_pass=False,
                                     irregular_centroid_sigma=irregular_centroid_sigma)
    astrodask.merge(results, mosaic=mosaic, options=options)
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
    parser.add_argument("--second-run", default="off:0.8",
                        help="FLIPS:SCORE,...: the 8 flips (on/off) and score cut of each variant")
    parser.add_argument("--core-fraction", type=float, default=0.3)
    parser.add_argument("--match-radius", type=float, default=3.0)
    parser.add_argument("--irregular-centroid-sigma", type=float,
                        help="the first pass's merge setting (default: the run's card's)")
    parser.add_argument("--out", default="bench-output/residual_pass")
    args = parser.parse_args(argv)
    snrs = [float(v) for v in args.min_snr.split(",")]
    variants = []
    for item in args.second_run.split(","):
        flips, cut = item.split(":")
        variants.append((flips == "on", float(cut)))
    cases = [(snr, flips, cut) for snr in snrs for flips, cut in variants]
    summed = {None: 0.0, **dict.fromkeys(cases, 0.0)}
    seconds = dict.fromkeys(cases, 0.0)
    for name in args.fields.split(","):
        work = Path(args.root) / name
        truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
        mosaic, results = first_pass(work, args.irregular_centroid_sigma)
        c0, p0 = score(mosaic, results / "catalog.parquet", truth, args.match_radius)
        summed[None] += f1(c0, p0)
        for case in cases:
            snr, flips, cut = case
            copy = Path(args.out) / f"{name}-snr{snr:g}-flips{'on' if flips else 'off'}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(results, copy)
            options = astrodask.ResidualOptions(min_snr=snr, separation=args.separation,
                                                min_score=cut, flips=flips,
                                                core_fraction=args.core_fraction)
            done = astrodask.residual_pass(copy, mosaic=mosaic, options=options)
            c, p = score(mosaic, copy / "catalog.parquet", truth, args.match_radius)
            summed[case] += f1(c, p)
            seconds[case] += done.seconds.get("run", 0.0)
            print(f"{name:10s} S/N >= {snr:g}, flips {'on' if flips else 'off'}, cut {cut:g}: "
                  f"{done.n_parents} taken out, {done.n_added} added (second run "
                  f"{done.seconds.get('run', 0.0):.0f} s); completeness {c0:.4f} -> {c:.4f}, "
                  f"purity {p0:.4f} -> {p:.4f}", flush=True)
    print(f"summed F1 without the residual pass {summed[None]:.4f}")
    fastest = min(seconds.values()) or 1.0
    for case in cases:
        snr, flips, cut = case
        print(f"residual pass, S/N >= {snr:g}, separation {args.separation:g}, flips "
              f"{'on' if flips else 'off'}, score cut {cut:g}, core fraction "
              f"{args.core_fraction:g}: summed F1 {summed[case]:.4f}, second runs "
              f"{seconds[case]:.0f} s ({seconds[case] / fastest:.2f}x the fastest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
