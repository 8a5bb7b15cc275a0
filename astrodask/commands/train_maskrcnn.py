"""``astrodask train maskrcnn``: train Mask R-CNN on simulated fields (resumable)."""

from astrodask.commands import group


def register(subparsers):
    sub = group(subparsers, "train", "Train the shipped models")
    parser = sub.add_parser(
        "maskrcnn", help="train Mask R-CNN on simulated fields",
        description="Train Mask R-CNN (star/galaxy detection, classification, masks) on "
                    "simulated fields. Re-running with the same RUN_DIR resumes from its "
                    "last checkpoint.")
    parser.add_argument("run_dir", help="run directory (checkpoints, pool cache, model.keras)")
    parser.add_argument("--preset", default="decam", help="simulator preset (default decam)")
    parser.add_argument("--fields", type=int, default=160, help="simulated training fields")
    parser.add_argument("--field-size", type=int, default=256, help="side of each field, px")
    parser.add_argument("--star-density", type=float, default=None,
                        help="stars per arcmin² in the training fields (default: the preset's)")
    parser.add_argument("--randomised-fields", type=int, default=0, metavar="N",
                        help="of the new fields, the last N draw seeing, PSF family, pixel "
                             "scale, depth, noise, stars, cosmic rays and saturation at random "
                             "(domain randomisation; new runs only)")
    parser.add_argument("--deep-fields", type=int, default=0, metavar="N",
                        help="of the new fields, the first N are ultra-deep (more and fainter "
                             "galaxies, deeper images; new runs only)")
    parser.add_argument("--pair-fraction", type=float, default=0.0, metavar="F",
                        help="share of the galaxies of each new field placed next to another "
                             "galaxy (blended pairs; new runs only); default 0")
    parser.add_argument("--artefacts", type=float, default=0.0, metavar="P",
                        help="share of crops given a residual sky gradient (and half as many "
                             "an unflagged bad column); default 0")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes simulating the pool (it does not depend on them)")
    parser.add_argument("--seed", type=int, default=0, help="first simulation seed and batch seed")
    parser.add_argument("--steps", type=int, default=6000, help="total optimisation steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128, help="training crop side, px (x64)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--class-weights", default=None, metavar="BG,STAR,GALAXY",
                        help="classification loss weight of each true class, e.g. 1,4,1 "
                             "(also changes a resumed run from its current step)")
    parser.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101),
                        help="ResNet depth (new runs only)")
    parser.add_argument("--roi-min-level", type=int, default=2, choices=(1, 2),
                        help="finest pyramid level for ROIAlign: 2 (P2, stride 4) or 1 (adds a "
                             "stride-2 P1 for the smallest boxes); new runs only")
    parser.add_argument("--anchor-scale-factors", default="1", metavar="F[,F...]",
                        help="anchors of each pyramid level: its scale (8..128 px) times each "
                             "factor, e.g. 1,0.5 adds 4 px anchors on P2; new runs only")
    parser.add_argument("--pool-from", default=None, metavar="RUN_DIR",
                        help="start the training pool from another run's cached fields; "
                             "only the fields missing up to --fields are simulated, with the "
                             "seeds after its last (new runs only)")
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="start a new run from this model's weights (shipped name or "
                             ".keras path; layers it lacks start fresh)")
    parser.add_argument("--warmup-steps", type=int, default=200,
                        help="linear learning-rate warm-up steps")
    parser.add_argument("--ema-momentum", type=float, default=0.0,
                        help="keep a moving average of the weights with this momentum per "
                             "step (e.g. 0.999) and save it as the model; 0: off (new runs "
                             "only)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.set_defaults(func=run, quiet_native_logs=True)


def run(args):
    from astrodask import (MaskRCNNConfig, TrainSettings, configure_framework,
                           train_maskrcnn_on_simulations)

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, crop_size=args.crop,
                             learning_rate=args.learning_rate, seed=args.seed,
                             class_weights=args.class_weights or TrainSettings.class_weights,
                             warmup_steps=args.warmup_steps, ema_momentum=args.ema_momentum,
                             gradient_probability=args.artefacts,
                             bad_column_probability=args.artefacts / 2,
                             checkpoint_every_s=60 * args.checkpoint_minutes)
    config = MaskRCNNConfig(backbone_depth=args.depth, roi_min_level=args.roi_min_level,
                            anchor_scale_factors=args.anchor_scale_factors)
    configure_framework(args.threads)
    max_seconds = None if args.max_minutes is None else 60 * args.max_minutes
    _, state = train_maskrcnn_on_simulations(
        args.run_dir, n_fields=args.fields, field_size=args.field_size, seed=args.seed,
        preset=args.preset, star_density=args.star_density, config=config,
        settings=settings, max_seconds=max_seconds, log=lambda line: print(line, flush=True),
        init_from=args.init_from, pool_from=args.pool_from, randomised=args.randomised_fields,
        workers=args.workers, deep=args.deep_fields, pairs=args.pair_fraction)
    print(f"step {state['step']} of {args.steps}; model saved in {args.run_dir}/model.keras")
