"""``astrodask run``: the models over every tile of a mosaic, on Dask."""

import argparse
import sys

from astrodask.commands import progress_bar


def register(subparsers):
    parser = subparsers.add_parser(
        "run", help="run the models over every tile of a mosaic on Dask",
        description="Run Mask R-CNN and/or the U-Net over every window of a mosaic store on a "
                    "Dask cluster (local by default). Finished tiles are kept: re-running the "
                    "same command resumes.")
    parser.add_argument("mosaic", metavar="MOSAIC.zarr", help="store written by astrodask ingest")
    parser.add_argument("--out", required=True, metavar="RESULTS", help="results folder")
    parser.add_argument("--config", metavar="RUN.yaml",
                        help="YAML file with any of the options; flags override it")
    parser.add_argument("--models", help="comma-separated: unet, maskrcnn, a shipped model "
                                         "name or a .keras path (default: every shipped "
                                         "kind whose bands the mosaic has)")
    parser.add_argument("--band-map", metavar="MODEL=MOSAIC,...",
                        help="which mosaic band feeds each model band, e.g. H=f160w,J=f125w")
    parser.add_argument("--n-workers", type=int, help="local workers (default: one per core)")
    parser.add_argument("--threads-per-worker", type=int, help="threads per worker (default 1)")
    parser.add_argument("--gpus", nargs="?", const="all", metavar="IDS",
                        help="dask-cuda LocalCUDACluster, one worker per GPU (all, or 0,1,...)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="join an existing cluster")
    parser.add_argument("--scheduler-file", metavar="FILE", help="join an existing cluster")
    parser.add_argument("--gpu-workers", action="store_true", default=None,
                        help="existing cluster: run only on workers started with "
                             "--resources GPU=1")
    parser.add_argument("--batch-size", type=int,
                        help="tiles per task (default 4 with a Mask R-CNN, else 1)")
    parser.add_argument("--unet-mode", choices=["fast", "faithful"], help="U-Net mode")
    parser.add_argument("--unet-stride", type=int, help="faithful-mode window stride")
    parser.add_argument("--flips", action="store_true", default=None,
                        help="fast mode: average the 8 flips/rotations")
    parser.add_argument("--unet-outputs", metavar="mean[,var,votes]",
                        help="U-Net products kept in unet.zarr (default mean; var and votes: "
                             "variance and rank votes over the flips or the faithful windows)")
    parser.add_argument("--max-detections", type=int, metavar="N",
                        help="Mask R-CNN: most detections per window (default: the model "
                             "card's, 500 for maskrcnn_decam)")
    parser.add_argument("--maskrcnn-flips", action=argparse.BooleanOptionalAction, default=None,
                        help="Mask R-CNN: fuse detections on the 8 flips/rotations of each tile "
                             "(default: the model's setting; on for maskrcnn_decam)")
    parser.add_argument("--maskrcnn-flips-min-area", type=int, metavar="PIXELS",
                        help="Mask R-CNN with flips: fuse them only on windows where one pass "
                             "finds a galaxy of at least this many mask pixels (default: the "
                             "model card's; 0: every window)")
    parser.add_argument("--psf-classes", choices=("auto", "on", "off"),
                        help="Mask R-CNN: star/galaxy from each source's concentration against "
                             "the PSF measured at ingest (the card's star_galaxy model): auto "
                             "(default) where the mosaic's FWHM lies outside the network's "
                             "training, on, or off (the network's classes)")
    parser.add_argument("--fold-fragments", type=float, metavar="FRACTION",
                        help="Mask R-CNN with a U-Net: fold detections that touch a larger "
                             "one, both irregular to the U-Net, below this fraction of its area "
                             "into it (knots of irregular galaxies; default: the model card's, "
                             "0.5 for maskrcnn_hst, none for maskrcnn_decam; 0: off)")
    parser.add_argument("--centres", action=argparse.BooleanOptionalAction, default=None,
                        help="Mask R-CNN: one detection per peak of the card's centre network "
                             "(default: where the card has one, as maskrcnn_decam does); "
                             "--no-centres keeps the Mask R-CNN's own instances")
    parser.add_argument("--deblend-contrast", type=float, metavar="C",
                        help="with the centre network: a peak whose light above the saddle to "
                             "a brighter neighbour is under this fraction of its footprint's "
                             "light joins that neighbour (SExtractor's DEBLEND_MINCONT, e.g. "
                             "0.005: large galaxies of real images stay whole; default: the "
                             "card's, none for maskrcnn_decam; 0: off)")
    parser.add_argument("--reclaim-sigma", type=float, metavar="S",
                        help="with the centre network: a pixel of a detection's basin goes to "
                             "a brighter neighbour whose light mirrored through its centre "
                             "explains it to within S noise sigma (a faint source on a "
                             "galaxy's disk keeps only its own light; default: the card's; "
                             "0: off)")
    parser.add_argument("--deblend-snr", type=float, metavar="S",
                        help="without a centre network: split a Mask R-CNN instance over "
                             "several peaks where a peak's light above the saddle to a "
                             "brighter one has at least this S/N (default: the card's, "
                             "which may limit the split to instances the U-Net calls "
                             "irregular; 0: off)")
    parser.add_argument("--restart", action="store_true", default=None,
                        help="ignore done markers and recompute every tile")
    parser.add_argument("--report", nargs="?", const="", metavar="HTML",
                        help="write Dask's performance report (default RESULTS/report.html)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args):
    """The validated RunConfig of parsed ``astrodask run`` arguments (file, then flags)."""
    from astrodask import resolve_config

    return resolve_config(
        args.config, models=args.models, band_map=args.band_map,
        n_workers=args.n_workers, threads_per_worker=args.threads_per_worker, gpus=args.gpus,
        scheduler=args.scheduler, scheduler_file=args.scheduler_file,
        gpu_workers=args.gpu_workers, batch_size=args.batch_size, restart=args.restart,
        report=args.report,
        unet={"mode": args.unet_mode, "stride": args.unet_stride, "flips": args.flips,
              "outputs": args.unet_outputs},
        maskrcnn={"flips": args.maskrcnn_flips, "flips_min_area": args.maskrcnn_flips_min_area,
                  "max_detections": args.max_detections,
                  "psf_classes": args.psf_classes, "fold_fragments": args.fold_fragments,
                  "centres": args.centres, "deblend_contrast": args.deblend_contrast,
                  "reclaim_sigma": args.reclaim_sigma, "deblend_snr": args.deblend_snr})


def run(args):
    from astrodask import run as run_engine

    config = config_from_args(args)

    def started(summary):
        print(f"running on {summary.cluster}", file=sys.stderr)
        if summary.dashboard:
            print(f"dashboard: {summary.dashboard}", file=sys.stderr)

    with progress_bar("run", "tiles", args.quiet) as progress:
        summary = run_engine(args.mosaic, args.out, config=config, progress=progress,
                             on_start=None if args.quiet else started)
    print(summary.text())
