"""Choose the catalog score cut of a Mask R-CNN on validation mosaics.

Simulates validation mosaics of a preset (``decam``: seeds 3000000-3000003,
two standard, a crowded one and one with 0.5 large, bright galaxies per
arcmin² added, most of them spirals; ``hst``: 3000100-3000103, two standard and
two deep ones, of which the card's score cut saw the first two, and with
``--fields`` three more, 3000104-3000106, two deep and a standard one; never
used in training nor in ``mosaic_quality.py``), runs ingest -> run once with the
model card's detection settings, then merges at each candidate ``min_score``
and scores the catalog against truth (S/N >= 10, one-to-one within
``--match-radius``, 2 px by default). The pick
maximises the harmonic mean of completeness and purity, summed over the
fields; write it into the card as ``catalog_min_score``. With
``--segmentation`` (U-Net-only runs, e.g. ``--models morpheus``) the sweep is
over Algorithm 1's (threshold, background level) instead: the card's
``segmentation``. With ``--fold-fragments F1,F2,...`` the sweep is over the
area fraction below which knots of irregular galaxies join their galaxy
(``run`` option ``fold_fragments``, the card's ``fold_irregular_fragments``;
0 is off): one run per fraction on the same mosaics, merged with the card's
score cut. With ``--weak-snr S1,S2,...`` the sweep is over the S/N that keeps
a detection under the card's score cut but at least ``--weak-min-score``
(merge options ``weak_min_snr``, ``weak_min_score``; the card's
``catalog_weak_min_snr``, ``catalog_weak_min_score``; ``off`` keeps none;
``--weak-min-separation``, ``--weak-core-fraction``, ``--weak-max-host-area``:
``catalog_weak_min_separation``, ``catalog_weak_core_fraction``,
``catalog_weak_max_host_area``). With
``--peak-position-snr S1,S2,...`` the sweep is over the S/N from which bright
objects without a centre that the U-Net does not call irregular sit at
their peak (merge option ``peak_position_snr``, the card's
``peak_position_snr``; ``off``: never). With ``--maskrcnn-flips on,off`` the
Mask R-CNN runs with and without its 8 fused flips/rotations (``run`` option
``maskrcnn.flips``), one run each on the same mosaics, merged with the card's
score cut and timed side by side; ``--maskrcnn-flips-min-area A1,A2,...`` does the same
with the flips fused only on windows where one pass finds a galaxy of at least A mask
pixels (``run`` option ``maskrcnn.flips_min_area``, the card's
``detection_flips_min_area``; 0: every window). With ``--deblend-snr S1,S2,...`` the
sweep is over the S/N at which a Mask R-CNN instance over several peaks is
split (``run`` option ``maskrcnn.deblend_snr``, the card's
``deblend_instances.min_snr``; ``off`` is 0): one run per value. With
``--reclaim-sigma S1,S2,...`` the sweep is over the excess (noise σ) that
keeps a centre's basin pixel from a brighter neighbour (``run`` option
``maskrcnn.reclaim_sigma``, the card's ``centres.reclaim_sigma``; ``off`` is
0): one run per value.

Usage::

    python benchmarks/catalog_threshold.py [--preset decam] [--size 2048]
        [--models maskrcnn_hst,morpheus]
        [--segmentation | --fold-fragments 0,0.1,0.3,0.5 | --weak-snr off,8,10,12
         | --peak-position-snr off,30,50,70 | --maskrcnn-flips on,off
         | --maskrcnn-flips-min-area 0,2000,4000
         | --deblend-snr off,5,10,20 | --reclaim-sigma off,3,5]
        [--cuts 0.2,0.3,...] [--match-radius 2] [--fields standard-a,large]
        [--out bench-output/threshold]
"""

import argparse
import json
from pathlib import Path
import shutil
import sys
import time


from mosaic_quality import pipeline

VALIDATION = {
    "decam": {"standard-a": dict(seed=3_000_000), "standard-b": dict(seed=3_000_001),
              "crowded": dict(seed=3_000_002, density=120.0),
              "large": dict(seed=3_000_003, large_galaxies=0.5)},
    "hst": {"standard": dict(seed=3_000_100), "deep": dict(seed=3_000_101, deep=True),
            "standard2": dict(seed=3_000_102), "deep2": dict(seed=3_000_103, deep=True)},
}
#: More validation mosaics, used only when ``--fields`` names them (added in session 45:
#: the choices recorded in the cards summed the four above).
EXTRA_VALIDATION = {
    "decam": {},
    "hst": {"deep3": dict(seed=3_000_104, deep=True), "deep4": dict(seed=3_000_105, deep=True),
            "standard3": dict(seed=3_000_106),
            **{f"deep{k}": dict(seed=3_000_102 + k, deep=True) for k in range(5, 9)}},
}
CUTS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)
#: ``--segmentation``: Algorithm 1 (threshold, background level) pairs of U-Net-only runs
LEVELS = ((0.1, 0.9), (0.3, 0.9), (0.5, 0.95), (0.7, 0.97), (0.8, 0.98), (0.85, 0.99),
          (0.9, 0.99), (0.95, 0.995), (0.97, 0.998), (0.98, 0.999), (0.99, 0.9995))


def validation_fields(args, parser):
    """``{name: simulate kwargs}``: the preset's :data:`VALIDATION` mosaics, or those
    ``--fields`` names (also from :data:`EXTRA_VALIDATION`); others are a usage error."""
    fields = VALIDATION[args.preset]
    if not args.fields:
        return fields
    known = {**fields, **EXTRA_VALIDATION[args.preset]}
    unknown = sorted(set(args.fields.split(",")) - set(known))
    if unknown:
        parser.error(f"unknown --fields for {args.preset}: {', '.join(unknown)}")
    return {name: known[name] for name in args.fields.split(",")}


def _snrs_or_off(text):
    """Comma-separated S/N values; ``off`` is infinity (the rule never applies)."""
    return tuple(float("inf") if v == "off" else float(v) for v in text.split(","))


def _values_off_zero(text):
    """Comma-separated values of a run option; ``off`` is 0 (the option turned off)."""
    return tuple(0.0 if v == "off" else float(v) for v in text.split(","))


def _per_run(values, option, value=float, **fixed):
    """``(options, runs)`` of a sweep with one run per value: no merge options, and the
    run option ``maskrcnn.<option>`` set to ``value(v)`` (beside the ``fixed`` ones)."""
    return [{} for _ in values], {v: {"maskrcnn": {option: value(v), **fixed}} for v in values}


def build_parser():
    """The command line of this benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--out", default="bench-output/threshold")
    parser.add_argument("--preset", default="decam", choices=sorted(VALIDATION))
    parser.add_argument("--models", default=None,
                        help="comma-separated models to run (default: every shipped one for "
                             "the bands, as the CLI)")
    parser.add_argument("--segmentation", action="store_true",
                        help="U-Net-only runs: sweep the Algorithm 1 levels instead of the "
                             "Mask R-CNN score cut (give --models the U-Net)")
    parser.add_argument("--fold-fragments", default=None, metavar="F1,F2,...",
                        help="sweep the run's fold_fragments (one run per value) instead")
    parser.add_argument("--weak-snr", default=None, metavar="S1,S2,...",
                        help="sweep the S/N that keeps detections under the score cut "
                             "(off: none kept) instead")
    parser.add_argument("--weak-min-score", type=float, default=0.3,
                        help="with --weak-snr: the lowest score such a detection may have")
    parser.add_argument("--weak-min-separation", type=float, default=None,
                        help="with --weak-snr: the least distance (px) of such a detection from "
                             "every one at or above the cut (default: the card's)")
    parser.add_argument("--weak-core-fraction", type=float, default=None,
                        help="with --weak-snr: the least distance of such a detection from a "
                             "confident object's centre, in that object's radius (default: the "
                             "card's)")
    parser.add_argument("--weak-max-host-area", type=float, default=None,
                        help="with --weak-snr: such a detection touching a confident object "
                             "larger than this (arcsec²) is not kept (default: the card's)")
    parser.add_argument("--peak-position-snr", default=None, metavar="S1,S2,...",
                        help="sweep the S/N from which bright objects without a centre sit at "
                             "their peak (off: never) instead")
    parser.add_argument("--maskrcnn-flips", default=None, metavar="on,off",
                        help="one run with and one without the Mask R-CNN's 8 fused "
                             "flips/rotations instead (timed side by side)")
    parser.add_argument("--maskrcnn-flips-min-area", default=None, metavar="A1,A2,...",
                        help="one run per value with the flips fused only on windows holding "
                             "a galaxy of at least A mask pixels (0: every window), timed")
    parser.add_argument("--deblend-snr", default=None, metavar="off,S1,S2,...",
                        help="sweep the S/N that splits instances over several peaks")
    parser.add_argument("--reclaim-sigma", default=None, metavar="off,S1,S2,...",
                        help="sweep run option maskrcnn.reclaim_sigma (one run per value)")
    parser.add_argument("--cuts", default=None, metavar="C1,C2,...",
                        help=f"score cuts to sweep (default {','.join(map(str, CUTS))})")
    parser.add_argument("--merge-options", default=None, metavar="JSON",
                        help='merge options applied to every merge of the sweep, e.g. '
                             '\'{"min_score": 0.3}\' (a weak-detection sweep under a lower cut)')
    parser.add_argument("--match-radius", type=float, default=2.0,
                        help="one-to-one match radius to the truth, px")
    parser.add_argument("--fields", default=None, metavar="NAME,...",
                        help="validation mosaics to use (default: all of the preset's: "
                             + "; ".join(f"{p}: {', '.join(v)}" for p, v in VALIDATION.items())
                             + "; also: "
                             + "; ".join(f"{p}: {', '.join(v)}"
                                         for p, v in EXTRA_VALIDATION.items() if v) + ")")
    return parser


def sweep_settings(args, parser):
    """``(values, merge options per value, run settings per value, sweep kind)`` of the
    parsed command line; ``parser.error`` on a bad value."""
    runs = {}  # run settings per swept value; none: one run with the card's, merged at each cut
    sweep = "value"
    if args.segmentation:
        cuts = LEVELS
        options = [dict(morpheus_threshold=t, morpheus_background_level=b) for t, b in cuts]
    elif args.fold_fragments:
        cuts = tuple(float(v) for v in args.fold_fragments.split(","))
        options, runs = _per_run(cuts, "fold_fragments")
        sweep = "fold"
    elif args.maskrcnn_flips:
        flips = {"on": 1.0, "off": 0.0}
        try:
            cuts = tuple(flips[v] for v in args.maskrcnn_flips.split(","))
        except KeyError:
            parser.error("--maskrcnn-flips takes on, off or on,off")
        options, runs = _per_run(cuts, "flips", bool)
        sweep = "flips"
    elif args.maskrcnn_flips_min_area:
        cuts = tuple(float(int(v)) for v in args.maskrcnn_flips_min_area.split(","))
        options, runs = _per_run(cuts, "flips_min_area", int, flips=True)
        sweep = "flips"
    elif args.deblend_snr:
        cuts = _values_off_zero(args.deblend_snr)
        options, runs = _per_run(cuts, "deblend_snr")
        sweep = "deblend"
    elif args.reclaim_sigma:
        cuts = _values_off_zero(args.reclaim_sigma)
        options, runs = _per_run(cuts, "reclaim_sigma")
        sweep = "reclaim"
    elif args.weak_snr:
        cuts = _snrs_or_off(args.weak_snr)
        options = [dict(weak_min_score=args.weak_min_score, weak_min_snr=cut,
                        weak_min_separation=args.weak_min_separation,
                        weak_core_fraction=args.weak_core_fraction,
                        weak_max_host_area=args.weak_max_host_area) for cut in cuts]
    elif args.peak_position_snr:
        cuts = _snrs_or_off(args.peak_position_snr)
        options = [dict(peak_position_snr=cut) for cut in cuts]
    else:
        cuts = CUTS if args.cuts is None else tuple(float(v) for v in args.cuts.split(","))
        options = [dict(min_score=cut) for cut in cuts]
    if args.merge_options:
        try:
            fixed = json.loads(args.merge_options)
        except json.JSONDecodeError as exc:
            parser.error(f"--merge-options is not JSON: {exc}")
        if not isinstance(fixed, dict):
            parser.error("--merge-options must be a JSON object of merge options")
        options = [dict(fixed, **option) for option in options]
    return cuts, options, runs, sweep


def main(argv=None):
    import pyarrow.parquet as pq

    import astrodask
    from astrodask.catalog_scores import score_catalog

    parser = build_parser()
    args = parser.parse_args(argv)
    fields = validation_fields(args, parser)
    models = None if args.models is None else args.models.split(",")
    out = Path(args.out) / args.preset / ("segmentation" if args.segmentation
                                          else "flips" if args.maskrcnn_flips
                                          else "flips-area" if args.maskrcnn_flips_min_area
                                          else "score")
    cuts, options, runs, sweep = sweep_settings(args, parser)
    table, seconds = {}, {}
    for name, kwargs in fields.items():
        work = out / name
        if not (work / "h32" / "results" / "run.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            sim = astrodask.simulate(work / "field", size=(args.size, args.size),
                                     preset=args.preset, **kwargs)
            images = [work / "field" / f"{b}.fits" for b in sim["bands"]]
            # a flips sweep's first value is this run's (no run with the card's settings)
            _, _, took = pipeline(images, work / "h32", models=models,
                                  config=runs[cuts[0]] if sweep == "flips" else None)
            if sweep == "flips":
                seconds[name, cuts[0]] = took["run"]
        truth = pq.read_table(work / "field" / "truth.parquet").to_pydict()
        mosaic = astrodask.open_mosaic(work / "h32" / "mosaic.zarr")
        flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
        for cut, option in zip(cuts, options):
            results = work / "h32" / "results"
            config = runs.get(cut)
            if config is not None and not (sweep == "flips" and cut == cuts[0]):
                results = work / "h32" / f"results-{sweep}-{cut:g}"
                start = time.perf_counter()
                astrodask.run(mosaic, results, models=models, restart=True, **config)
                seconds[name, cut] = time.perf_counter() - start
            astrodask.merge(results, mosaic=mosaic,
                            options=astrodask.MergeOptions(pictures=False, **option))
            cat = astrodask.read_catalog(results / "catalog.parquet")
            catalog = {k: cat.column(k).to_numpy(zero_copy_only=False) for k in ("x", "y", "source_class")}
            s = score_catalog(catalog, truth, mosaic.tile_grid, flagged,
                              radius=args.match_radius)
            table[name, cut] = (s["completeness"], s["purity"])
            print(f"{name:11s} {option or {sweep: cut}}: completeness {s['completeness']:.4f} "
                  f"purity {s['purity']:.4f} objects {s['n_catalog']}"
                  + (f" run {seconds[name, cut]:.1f} s" if (name, cut) in seconds else ""),
                  flush=True)
    f1 = {cut: sum(2 * c * p / (c + p) if c + p else 0.0
                   for (n, k), (c, p) in table.items() if k == cut) for cut in cuts}
    # ties go to the lower cut, or the lower segmentation levels
    best = max(cuts, key=lambda cut: (round(f1[cut], 6), -cut if not args.segmentation
                                      else tuple(-v for v in cut)))
    for cut in cuts:
        run_time = sum(v for (n, k), v in seconds.items() if k == cut)
        print(f"{cut}: summed F1 {f1[cut]:.4f}"
              + (f", runs {run_time:.1f} s" if run_time else "")
              + ("  <- pick" if cut == best else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
