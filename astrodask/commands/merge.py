"""``astrodask merge``: a finished run → catalog, segmentation map and pictures."""

import argparse

from astrodask.commands import progress_bar


def register(subparsers):
    parser = subparsers.add_parser(
        "merge", help="merge a finished run into a catalog, segmentation map and pictures",
        description="Resolve objects across window edges (ownership by anchor, stitching of "
                    "cut objects, matching by mask IoU in the overlaps), paint the exclusive "
                    "segmentation map, measure every object and write catalog.parquet (a "
                    "Parquet dataset), segmap.fits, morphology.fits, PNG quick-looks and "
                    "summary.txt into the results folder. Runs as Dask tasks (a local cluster "
                    "by default); re-running an interrupted merge resumes it. With "
                    "--residual-pass, the bright objects are then taken out of the bands by "
                    "their symmetric templates, the models run again on that residual, and "
                    "what they find inside those objects' segments is added (quality bit 64; "
                    "the default where the Mask R-CNN card chooses it).")
    parser.add_argument("results", metavar="RESULTS", help="results folder of astrodask run")
    parser.add_argument("--mosaic", help="mosaic store (default: the one the run used)")
    parser.add_argument("--match-iou", type=float, default=0.5,
                        help="IoU within window overlaps at which two pieces are one object")
    parser.add_argument("--morpheus-threshold", type=float,
                        help="U-Net-only runs: background probability that seeds a source "
                             "(default: the U-Net card's, else 0.1)")
    parser.add_argument("--morpheus-background-level", type=float,
                        help="U-Net-only runs: background probability that seeds the sky "
                             "(default: the U-Net card's, else 0.9)")
    parser.add_argument("--min-snr", type=float, default=5.0,
                        help="U-Net-only runs: minimum S/N of a segment (default 5)")
    parser.add_argument("--min-score", type=float,
                        help="Mask R-CNN runs: leave out objects scored below this (default: "
                             "the model card's catalog_min_score)")
    parser.add_argument("--weak-min-score", type=float,
                        help="Mask R-CNN runs: objects scored under --min-score but at least "
                             "this stay when their S/N reaches --weak-min-snr (default: the "
                             "model card's catalog_weak_min_score)")
    parser.add_argument("--weak-min-snr", type=float,
                        help="S/N (all bands, within the detection's mask) that keeps such an "
                             "object (default: the model card's catalog_weak_min_snr; inf "
                             "keeps none)")
    parser.add_argument("--weak-min-contrast", type=float,
                        help="such an object touching others that pass the cut stays only if "
                             "its S/N is at least this fraction of theirs (default: the model "
                             "card's catalog_weak_min_contrast)")
    parser.add_argument("--weak-min-separation", type=float,
                        help="such an object stays only if its centre lies at least this many "
                             "pixels from every object that passes the cut (default: the model "
                             "card's catalog_weak_min_separation)")
    parser.add_argument("--weak-core-fraction", type=float,
                        help="such an object stays only if its centre lies at least this "
                             "fraction of the radius sqrt(area/pi) from the centre of every "
                             "object that passes the cut (default: the model card's "
                             "catalog_weak_core_fraction)")
    parser.add_argument("--weak-max-host-area", type=float, metavar="ARCSEC2",
                        help="such an object stays only if no object that passes the cut and "
                             "that it touches covers more than this many arcsec² (a large "
                             "galaxy's knots; default: the model card's "
                             "catalog_weak_max_host_area)")
    parser.add_argument("--large-host-area", type=float, metavar="ARCSEC2",
                        help="a galaxy that passes the cut and covers at least this many "
                             "arcsec² is a large, resolved galaxy: smaller objects centred "
                             "within --large-host-reach of its radius are folded into it (its "
                             "HII regions and arms; default: the model card's "
                             "catalog_large_host_area, else off)")
    parser.add_argument("--large-host-reach", type=float, metavar="RADII",
                        help="with --large-host-area: how far from the galaxy's centre, in "
                             "radii sqrt(area/pi) (default: the model card's "
                             "catalog_large_host_reach, else 1.5)")
    parser.add_argument("--irregular-centroid-snr", type=float,
                        help="runs with a centre network: galaxies the U-Net calls irregular "
                             "with S/N at least this sit at their segment's centroid, not their "
                             "centre peak (default: the model card's)")
    parser.add_argument("--peak-position-snr", type=float,
                        help="objects without a centre that the U-Net does not call irregular, "
                             "with S/N at least this, sit at their peak where it lies more than "
                             "1 px from their segment's centroid (default: the model card's)")
    parser.add_argument("--irregular-centroid-sigma", type=float,
                        help="galaxies the U-Net calls irregular that sit at a centroid take "
                             "the centroid weighted by the detection image smoothed by this "
                             "many pixels (default: the model card's; 0: off)")
    parser.add_argument("--kron-annulus", type=_annulus, metavar="INNER:OUTER|none",
                        help="local background of the Kron fluxes: the free pixels between "
                             "these multiples of the aperture, or none (default: the Mask "
                             "R-CNN card's, else 1.2:2)")
    parser.add_argument("--morphology-calibration", action=argparse.BooleanOptionalAction,
                        help="the catalog's morphology from the U-Net card's calibration "
                             "(eq. 16 probabilities and S/N; default: on where the card has "
                             "one); --no-morphology-calibration: the dominant eq. 16 class")
    parser.add_argument("--kron-annulus-for", choices=("neighbours", "all"),
                        help="the apertures the local background comes off: those that hold "
                             "another object's pixels, or all (default: the Mask R-CNN card's, "
                             "else neighbours)")
    parser.add_argument("--detection-threshold", type=float, default=0.5,
                        help="max. min(background) for morpheus_detected")
    parser.add_argument("--no-pictures", action="store_true", help="skip the PNG quick-looks")
    parser.add_argument("--residual-pass", action=argparse.BooleanOptionalAction,
                        help="Mask R-CNN runs: a second pass over the residual of the bright "
                             "objects finds faint sources inside their segments (default: the "
                             "model card's choice: on for maskrcnn_hst, off for maskrcnn_decam)")
    parser.add_argument("--residual-min-snr", type=float,
                        help="S/N (all bands) of the objects taken out (default: the card's, "
                             "else 50)")
    parser.add_argument("--residual-separation", type=float,
                        help="least distance (px) of an addition from every first-pass object "
                             "(default: the card's, else 6)")
    parser.add_argument("--residual-min-score", type=float,
                        help="detection score cut of the second pass (default: the card's, "
                             "else 0.6 with its flips fused, 0.8 without)")
    parser.add_argument("--residual-flips", action=argparse.BooleanOptionalAction,
                        help="the second pass fuses the Mask R-CNN's 8 flipped passes "
                             "(default: the card's, else on; --no-residual-flips: one pass "
                             "per window, 2.5x faster, a little less complete)")
    parser.add_argument("--residual-core-fraction", type=float,
                        help="no addition closer to the centre of the object that holds it "
                             "than this fraction of its radius sqrt(area/pi) (default: the "
                             "card's, else 0.3)")
    parser.add_argument("--n-workers", type=int, help="local workers (default: one per core)")
    parser.add_argument("--threads-per-worker", type=int, help="threads per worker (default 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="join an existing cluster")
    parser.add_argument("--scheduler-file", metavar="FILE", help="join an existing cluster")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args):
    from astrodask import MergeOptions, merge

    options = MergeOptions(match_iou=args.match_iou, morpheus_threshold=args.morpheus_threshold,
                           morpheus_background_level=args.morpheus_background_level,
                           morpheus_min_snr=args.min_snr,
                           min_score=args.min_score, weak_min_score=args.weak_min_score,
                           weak_min_snr=args.weak_min_snr,
                           weak_min_contrast=args.weak_min_contrast,
                           weak_min_separation=args.weak_min_separation,
                           weak_core_fraction=args.weak_core_fraction,
                           weak_max_host_area=args.weak_max_host_area,
                           large_host_area=args.large_host_area,
                           large_host_reach=args.large_host_reach,
                           irregular_centroid_snr=args.irregular_centroid_snr,
                           peak_position_snr=args.peak_position_snr,
                           irregular_centroid_sigma=args.irregular_centroid_sigma,
                           detection_threshold=args.detection_threshold,
                           pictures=not args.no_pictures, residual_pass=args.residual_pass,
                           residual_min_snr=args.residual_min_snr,
                           residual_separation=args.residual_separation,
                           residual_min_score=args.residual_min_score,
                           residual_core_fraction=args.residual_core_fraction,
                           residual_flips=args.residual_flips,
                           kron_annulus=args.kron_annulus,
                           kron_annulus_for=args.kron_annulus_for,
                           morphology_calibration=args.morphology_calibration)
    with progress_bar("merge", "tasks", args.quiet) as progress:
        summary = merge(args.results, mosaic=args.mosaic, options=options,
                        n_workers=args.n_workers, threads_per_worker=args.threads_per_worker,
                        scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                        progress=progress)
    print(summary.text(), end="")


def _annulus(text):
    """``INNER:OUTER`` -> ``(inner, outer)``; ``none`` -> ``()`` (no local background)."""
    if text.strip().lower() == "none":
        return ()
    try:
        inner, outer = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INNER:OUTER or none, got {text!r}") from None
    return (inner, outer)
