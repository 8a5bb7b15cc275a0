"""``astrodask evaluate``: score a Mask R-CNN (and SEP) on held-out simulated fields."""

import argparse


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="score a Mask R-CNN on held-out simulated fields",
        description="Simulate held-out fields with truth, run a Mask R-CNN (and the SEP "
                    "baseline) on them and report AP, AP50, AP75, APs/m/l, precision at 80% "
                    "recall and confusion matrices, per class and combined.")
    parser.add_argument("model", nargs="?", default="maskrcnn_decam",
                        help="shipped model name, .keras path or training run directory "
                             "(default maskrcnn_decam)")
    parser.add_argument("--fields", type=int, default=12, help="number of test fields")
    parser.add_argument("--size", type=int, default=512, help="side of each field, px")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first test field (default 1000000, away from training)")
    parser.add_argument("--preset", default="decam")
    parser.add_argument("--conditions", default=None, metavar="NAME",
                        help="observing conditions of the test fields, one of the held-out "
                             "settings (seeing_2.2, seeing_0.5, gaussian_psf, pixel_scale_0.6, "
                             "deeper_1.2mag, shallower_1.2mag); default the preset's own")
    parser.add_argument("--no-baseline", action="store_true", help="skip the SEP baseline")
    parser.add_argument("--iou", choices=("bbox", "mask", "both"), default="both",
                        help="overlap measure(s) for matching")
    parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=None,
                        help="fuse detections on the 8 flips/rotations of each field "
                             "(default: the model's setting; on for maskrcnn_decam)")
    parser.add_argument("--out", help="write the full report as JSON here")
    parser.add_argument("--update-card", action="store_true",
                        help="store the metrics in the model's card (a .keras model only)")
    parser.set_defaults(func=run, quiet_native_logs=True)


def run(args):
    from astrodask import (evaluate_maskrcnn, evaluation_tables, model_card, store_evaluation,
                           write_evaluation)

    iou_types = ("bbox", "mask") if args.iou == "both" else (args.iou,)
    if args.update_card:
        model_card(args.model)  # fail now, not after the evaluation
    seed = {} if args.seed is None else {"seed": args.seed}
    result = evaluate_maskrcnn(
        args.model, n_fields=args.fields, size=args.size, preset=args.preset,
        baseline=not args.no_baseline, iou_types=iou_types,
        settings={} if args.flips is None else {"detection_flips": args.flips},
        log=lambda line: print(line, flush=True), conditions=args.conditions, **seed)
    print()
    print(evaluation_tables(result, iou_types))
    if args.out:
        print(f"report written to {write_evaluation(result, args.out)}")
    if args.update_card:
        print(f"metrics stored in {store_evaluation(args.model, result, flips=args.flips)}")
