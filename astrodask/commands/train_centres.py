"""``astrodask train centres``: train the centre network on simulated fields (resumable)."""

import argparse

from astrodask.commands import group


def register(subparsers):
    sub = group(subparsers, "train", "Train the shipped models")
    parser = sub.add_parser(
        "centres", help="train the centre network (where sources are) on simulated fields",
        description="Simulate a pool of fields (the preset's own, blended pairs, crowded, "
                    "star-rich with saturation and cosmic rays), train the centre network's "
                    "heatmap with CenterNet's focal loss, and checkpoint into RUN_DIR; rerun "
                    "to resume. With --attach-to, a finished run's weights are copied beside "
                    "a Mask R-CNN and recorded in its card, so the engine uses them.")
    parser.add_argument("run_dir", help="run directory (pool, weights, optimizer, state.json)")
    parser.add_argument("--preset", default="decam", help="simulator preset (default decam)")
    parser.add_argument("--fields", type=int, default=800, help="simulated fields (default 800)")
    parser.add_argument("--field-size", type=int, default=256, help="side of each field, px")
    parser.add_argument("--seed", type=int, default=4_000_000, help="seed of the first field")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96, help="crop side, a multiple of 8")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--binning", type=int, default=1,
                        help="train on fields binned BxB (crops in binned pixels); the engine "
                             "bins each window the same way (default 1: none)")
    parser.add_argument("--damage", type=float, default=0.0,
                        help="fraction of crops given a noise-filled flagged region (a bad "
                             "column, a stripe, a block), as the engine fills flagged pixels "
                             "and the mosaic's padding (default 0)")
    parser.add_argument("--randomise", type=float, default=0.0, metavar="F",
                        help="share of the pool's fields that draw their observing conditions "
                             "(seeing, PSF, pixel scale, depth, noise) from the training ranges "
                             "(default 0: the preset's)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after a checkpoint once this much time has passed")
    parser.add_argument("--workers", type=int, default=1, help="processes simulating the pool")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init-weights", metavar="WEIGHTS.h5",
                        help="start from these centre-network weights (fine-tuning), e.g. "
                             "a shipped MODEL.centres.weights.h5; read on a fresh run only")
    parser.add_argument("--widths", type=_widths, default=None, metavar="W1,W2,...",
                        help="filters per level of the network, finest first (default "
                             "16,32,64,96)")
    parser.add_argument("--init-widths", type=_widths, default=None, metavar="W1,W2,...",
                        help="the widths of --init-weights where they are narrower than "
                             "--widths: the network starts as their widened copy")
    parser.add_argument("--attach-to", metavar="MODEL.keras",
                        help="after training, copy the weights beside this Mask R-CNN and "
                             "record them in its card")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="with --attach-to: the least heatmap peak the engine keeps")
    parser.set_defaults(func=_train, quiet_native_logs=True)


def _widths(text):
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be two or more positive integers "
                                         f"separated by commas, got {text!r}")
    return widths


def _train(args):
    from astrodask import attach_centres, configure_framework, train_centres

    configure_framework(args.threads)
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    _, state = train_centres(args.run_dir, preset=args.preset, n_fields=args.fields,
                             field_size=args.field_size, seed=args.seed, max_seconds=max_seconds,
                             workers=args.workers, init_weights=args.init_weights,
                             init_widths=args.init_widths, randomise=args.randomise,
                             steps=args.steps, batch_size=args.batch_size,
                             crop=args.crop, learning_rate=args.learning_rate,
                             damage=args.damage, binning=args.binning,
                             **({"widths": args.widths} if args.widths else {}))
    done = state["step"] >= state["settings"]["steps"]
    print(f"{state['step']}/{state['settings']['steps']} steps"
          + ("" if done else "; rerun to resume"))
    if args.attach_to and done:
        attach_centres(args.run_dir, args.attach_to, args.threshold)
        print(f"attached to {args.attach_to}")
