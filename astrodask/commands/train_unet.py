"""``astrodask train unet``: train the Morpheus U-Net on simulated fields."""

from astrodask.commands import group


def register(subparsers):
    sub = group(subparsers, "train", "Train the shipped models")
    parser = sub.add_parser(
        "unet",
        help="train the Morpheus U-Net for a survey's bands on simulated fields",
        description="Simulate fields of a survey preset (with the simulator's morphology "
                    "labels), train the Morpheus U-Net on augmented 40x40 windows with "
                    "weighted cross-entropy + background Dice and Adam, checkpoint every "
                    "epoch, and write OUT.keras with a model card holding the held-out "
                    "pixel accuracy per class and IoU(B), B = 0.5..0.9.")
    parser.add_argument("--out", required=True, metavar="PATH", help="output .keras file")
    parser.add_argument("--preset", default="decam", help="simulator preset (default decam)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crop", type=int, default=40,
                        help="window side (a multiple of 2 ** contraction levels)")
    parser.add_argument("--train-fields", type=int, default=24)
    parser.add_argument("--held-out-fields", type=int, default=4)
    parser.add_argument("--field-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after the first epoch that ends past this budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-dir", metavar="DIR",
                        help="default: OUT without .keras + .checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint instead of starting over")
    parser.add_argument("--down-filters", type=int, nargs="+", default=[8, 16, 32],
                        help="filters of each contraction level (default: Morpheus' 8 16 32)")
    parser.add_argument("--up-filters", type=int, nargs="+", default=[8, 16, 32],
                        help="filters of each expansion level, coarsest first")
    parser.add_argument("--mid-filters", type=int, default=16)
    parser.add_argument("--down-blocks", type=int, default=4)
    parser.add_argument("--up-blocks", type=int, default=2)
    parser.add_argument("--init-from", metavar="MODEL",
                        help="fine-tune: start from this U-Net's weights (a shipped name such as "
                             "morpheus, or a .keras file with the preset's bands); its "
                             "architecture replaces the filter and block options")
    parser.add_argument("--star-density", type=float, default=None,
                        help="stars per arcmin² in the simulated fields (default: the preset's)")
    parser.add_argument("--deep-fraction", type=float, default=0.0,
                        help="fraction of the simulated fields that are ultra-deep (default 0)")
    parser.add_argument("--eval-stride", type=int, default=8,
                        help="window stride of the faithful mode for the held-out metrics")
    parser.set_defaults(func=_train, quiet_native_logs=True)


def _train(args):
    from astrodask import train_unet

    card = train_unet(args.out, preset=args.preset, epochs=args.epochs,
                      steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                      crop=args.crop, train_fields=args.train_fields,
                      held_out_fields=args.held_out_fields, field_size=args.field_size,
                      seed=args.seed, learning_rate=args.learning_rate,
                      dropout_rate=args.dropout, max_minutes=args.max_minutes,
                      threads=args.threads, checkpoint_dir=args.checkpoint_dir,
                      resume=args.resume, eval_stride=args.eval_stride,
                      init_from=args.init_from, star_density=args.star_density,
                      deep_fraction=args.deep_fraction,
                      architecture={"down_filters": tuple(args.down_filters),
                                    "up_filters": tuple(args.up_filters),
                                    "mid_filters": args.mid_filters,
                                    "down_blocks": args.down_blocks,
                                    "up_blocks": args.up_blocks})
    held_out = card["metrics"]["faithful"]
    print(f"wrote {args.out} after {card['training']['epochs']} epochs; held-out pixel "
          f"accuracy {held_out['accuracy']:.3f}, IoU(0.5) {held_out['iou_0.5']:.3f}")
