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
    parser.set_defaults(func=run)


def run(args):
    from pathlib import Path

    from astrodask.errors import InputError
    from astrodask.storage import put_json
    from astrodask.train.maskrcnn_eval import (TEST_SEED, completeness_table,
                                               evaluate_on_simulations, metrics_table)

    if args.fields < 1 or args.size < 64:
        raise InputError("--fields must be positive and --size at least 64")
    iou_types = ("bbox", "mask") if args.iou == "both" else (args.iou,)
    card_target = None
    if args.update_card:
        from astrodask.models.card import read_model_card, resolve_model_path

        if Path(args.model).is_dir():
            raise InputError("--update-card needs a .keras model, not a run directory")
        card_target = resolve_model_path(args.model)
        read_model_card(card_target)  # fail now, not after the evaluation
    result = evaluate_on_simulations(
        args.model, n_fields=args.fields, size=args.size,
        seed=TEST_SEED if args.seed is None else args.seed, preset=args.preset,
        baseline=not args.no_baseline, iou_types=iou_types,
        settings={} if args.flips is None else {"detection_flips": args.flips},
        log=lambda line: print(line, flush=True), conditions=args.conditions)
    for iou_type in iou_types:
        print(f"\nIoU on {iou_type}:")
        print(metrics_table(result, iou_type))
    print("\nFound (box IoU >= 0.5) by the simulator's S/N:")
    print(completeness_table(result))
    if args.out:
        put_json(args.out, result, indent=1, sort_keys=False, default=float)
        print(f"report written to {args.out}")
    if card_target is not None:
        from astrodask.models.card import read_model_card, write_model_card
        from astrodask.train.maskrcnn_eval import card_metrics

        card = read_model_card(card_target)
        # the card's "evaluation" is of the model's own settings; an override goes beside it
        flips = result["settings"]["detection_flips"]
        own = card.get("config", {}).get("detection_flips", False)
        key = ("evaluation" if args.flips is None or flips == own
               else f"evaluation_{'with' if flips else 'without'}_flips")
        card[key] = card_metrics(result)
        print(f"metrics stored in {write_model_card(card_target, card)}")
