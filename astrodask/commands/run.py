"""``astrodask run``: the models over every tile of a mosaic, on Dask."""

import argparse
import sys


def _csv(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _band_map(text):
    from ..errors import InputError

    mapping = {}
    for pair in _csv(text):
        if "=" not in pair:
            raise InputError(f"--band-map wants MODEL=MOSAIC pairs, got {pair!r}")
        model_band, mosaic_band = pair.split("=", 1)
        mapping[model_band.strip()] = mosaic_band.strip()
    return mapping


def _gpus(text):
    return "all" if text in (None, "all") else [int(g) for g in _csv(text)]


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
                                         "name or a .keras path (default unet)")
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
    parser.add_argument("--maskrcnn-flips", action=argparse.BooleanOptionalAction, default=None,
                        help="Mask R-CNN: fuse detections on the 8 flips/rotations of each tile "
                             "(default: the model's setting; on for maskrcnn_decam)")
    parser.add_argument("--restart", action="store_true", default=None,
                        help="ignore done markers and recompute every tile")
    parser.add_argument("--report", nargs="?", const="", metavar="HTML",
                        help="write Dask's performance report (default RESULTS/report.html)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args):
    """The validated RunConfig of parsed ``astrodask run`` arguments (file, then flags)."""
    from dataclasses import replace

    from .. import storage
    from ..engine.run import resolve_config

    config = resolve_config(
        args.config,
        models=_csv(args.models) if args.models else None,
        band_map=_band_map(args.band_map) if args.band_map else None,
        n_workers=args.n_workers, threads_per_worker=args.threads_per_worker,
        gpus=_gpus(args.gpus) if args.gpus is not None else None,
        scheduler=args.scheduler, scheduler_file=args.scheduler_file,
        gpu_workers=args.gpu_workers,
        batch_size=args.batch_size, restart=args.restart,
        report=(args.report or storage.join(storage.normalise(args.out), "report.html"))
        if args.report is not None else None)
    unet = {k: v for k, v in {"mode": args.unet_mode, "stride": args.unet_stride,
                              "flips": args.flips}.items() if v is not None}
    if unet:
        config = replace(config, unet=replace(config.unet, **unet))
    if args.maskrcnn_flips is not None:
        config = replace(config, maskrcnn=replace(config.maskrcnn, flips=args.maskrcnn_flips))
    return config.validate()


def run(args):
    from ..engine.run import print_summary, run as run_engine
    from ..progress import TextProgress

    config = config_from_args(args)

    def started(summary):
        print(f"running on {summary.cluster}", file=sys.stderr)
        if summary.dashboard:
            print(f"dashboard: {summary.dashboard}", file=sys.stderr)

    progress = None if args.quiet else TextProgress("run", unit="tiles")
    summary = run_engine(args.mosaic, args.out, config=config, progress=progress,
                         on_start=None if args.quiet else started)
    if progress is not None:
        progress.close()
    print_summary(summary)
