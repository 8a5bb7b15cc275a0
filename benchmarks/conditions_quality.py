"""Whole-mosaic catalogs under observing conditions never trained on, beside SEP.

For each setting (the preset's own conditions, then every held-out setting of
``astrodask.simulation.conditions.HELD_OUT``: seeing 2.2" and 0.5", a Gaussian
PSF, 0.6"/px pixels, 1.2 mag deeper and shallower), simulates one ``decam``
field (seeds 2200000+, never trained on; 8 stars per arcmin² so that star
accuracy is measured on enough stars), runs ingest -> run -> merge with each
Mask R-CNN given, and scores the catalog against truth as
``benchmarks/mosaic_quality.py`` does (one-to-one within 2 px, S/N >= 10):
completeness, purity, star and galaxy accuracy. SEP runs on the same pixels,
told the true PSF. ``--ap`` adds the per-block metrics of ``astrodask
evaluate --conditions`` (box AP50, precision at 80% recall per class) on
four 512² fields per setting.

Usage::

    python benchmarks/conditions_quality.py [--models maskrcnn_decam,PATH.keras]
        [--settings in_distribution,seeing_2.2,...] [--size 1024] [--ap]
        [--out bench-output/conditions]
"""

import argparse
from dataclasses import replace
import json
from pathlib import Path
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosaic_quality import fmt, pipeline, sep_on  # noqa: E402

SEED = 2_200_000
AP_SEED = 2_300_000
STAR_DENSITY = 8.0


def settings():
    from astrodask.simulation.conditions import HELD_OUT, Conditions

    return {"in_distribution": Conditions(), **HELD_OUT}


def score_setting(k, name, conditions, models, size, out, ap, rescale=None):
    import pyarrow.parquet as pq

    import astrodask
    from astrodask.catalog_scores import score_catalog
    from astrodask.simulation.conditions import apply_conditions
    from astrodask.train.maskrcnn_eval import evaluate_on_simulations

    conditions = replace(conditions, star_density=STAR_DENSITY)
    work = out / name
    if work.exists():
        shutil.rmtree(work)
    sim = astrodask.simulate(work / "field", size=(size, size), preset="decam", seed=SEED + k,
                             conditions=conditions)
    images = [work / "field" / f"{b}.fits" for b in sim["bands"]]
    truth_input = pq.read_table(work / "field" / "truth.parquet").to_pydict()
    truth = truth_input
    result = {"setting": name, "conditions": conditions.to_dict(), "size": size,
              "psf_fwhm_px": sim["psf_fwhm_px"], "n_true": len(truth["x"]), "models": {}}
    mosaic = None
    for label, model in models.items():
        mosaic, catalog, seconds = pipeline(images, work / label, models=[model], rescale=rescale)
        flagged = (mosaic.array("mask")[:] != 0).any(axis=0)
        truth = on_store_grid(truth_input, mosaic.rescale_factor)
        # 2 px of the simulated grid, whatever the store's grid
        radius = 2.0 * mosaic.rescale_factor
        result["models"][label] = {"catalog": score_catalog(catalog, truth, mosaic.tile_grid,
                                                            flagged, radius=radius),
                                   "seconds": seconds}
        if ap:
            report = evaluate_on_simulations(model, n_fields=4, size=512, seed=AP_SEED + 10 * k,
                                             baseline=False, iou_types=("bbox",),
                                             conditions=conditions, log=lambda line: None)
            box = report["maskrcnn"]["bbox"]["metrics"]
            result["models"][label]["blocks"] = {
                "ap50": box["combined"]["AP50"],
                "precision_at_80_recall": {c: box[c]["precision_at_80_recall"]
                                           for c in ("star", "galaxy")}}
    preset = apply_conditions("decam", conditions)
    result["sep"] = score_catalog(sep_on(mosaic, preset), truth, mosaic.tile_grid, flagged,
                                  radius=radius)
    result["rescale"] = mosaic.rescale_factor
    return result


def on_store_grid(truth, factor):
    """Truth positions on a store resampled by ``factor`` (original ``x = (x' + 0.5) / F - 0.5``)."""
    if factor == 1:
        return truth
    import numpy as np

    return dict(truth, x=(np.asarray(truth["x"]) + 0.5) * factor - 0.5,
                y=(np.asarray(truth["y"]) + 0.5) * factor - 0.5)


def print_setting(r):
    fwhm = ", ".join(f"{b} {v:.1f}" for b, v in r["psf_fwhm_px"].items())
    print(f"\n## {r['setting']} (PSF FWHM px: {fwhm}; {r['n_true']} true sources)")
    labels = list(r["models"])
    print(f"{'S/N >= 10':18s}" + "".join(f"{label[:22]:>24s}" for label in labels) + f"{'SEP':>9s}")
    for key in ("completeness", "purity", "star_accuracy", "galaxy_accuracy"):
        print(f"{key:18s}" + "".join(f"{fmt(r['models'][m]['catalog'][key]):>24s}" for m in labels)
              + f"{fmt(r['sep'][key]):>9s}")
    if all("blocks" in r["models"][m] for m in labels):
        print(f"{'box AP50 (blocks)':18s}" + "".join(
            f"{fmt(r['models'][m]['blocks']['ap50']):>24s}" for m in labels))
        for c in ("star", "galaxy"):
            print(f"{'P@80%R ' + c:18s}" + "".join(
                f"{fmt(r['models'][m]['blocks']['precision_at_80_recall'][c]):>24s}"
                for m in labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="maskrcnn_decam",
                        help="comma-separated Mask R-CNNs (shipped names or .keras paths)")
    parser.add_argument("--settings", default=None, help="comma-separated setting names")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--ap", action="store_true", help="also per-block AP50 and P@80%%R")
    parser.add_argument("--rescale", default=None, metavar="F|auto",
                        help="resample at ingest (ingest --rescale); scores on the store's grid")
    parser.add_argument("--out", default="bench-output/conditions")
    parser.add_argument("--update-card", default=None, metavar="MODEL",
                        help="store this model's numbers per setting in its card "
                             "(evaluation_conditions)")
    args = parser.parse_args(argv)
    everything = settings()
    names = list(everything) if args.settings is None else args.settings.split(",")
    models = {m if "/" not in m else Path(m).parent.name + "/" + Path(m).name: m
              for m in args.models.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        k = list(everything).index(name)
        rescale = args.rescale if args.rescale in (None, "auto") else float(args.rescale)
        r = score_setting(k, name, everything[name], models, args.size, out, args.ap, rescale)
        print_setting(r)
        sys.stdout.flush()
        results.append(r)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    if args.update_card:
        update_card(args.update_card, models, results, args)
    return 0


def update_card(model, models, results, args):
    """Each setting's catalog (and block) metrics of ``model`` in its card."""
    from astrodask.models.card import read_model_card, resolve_model_path, write_model_card

    label = next(k for k, v in models.items() if v == model)
    path = resolve_model_path(model)
    card = read_model_card(path)
    card["evaluation_conditions"] = {
        "command": "python benchmarks/conditions_quality.py " + " ".join(sys.argv[1:]),
        "what": f"one {args.size}x{args.size} decam field per setting (seeds {SEED}+), "
                f"{STAR_DENSITY:g} stars/arcmin2, ingest -> run -> merge with the card's "
                "settings; S/N >= 10, one-to-one match within 2 px; SEP told the true PSF",
        "settings": {r["setting"]: {
            "conditions": r["conditions"], "psf_fwhm_px": r["psf_fwhm_px"],
            **{k: r["models"][label]["catalog"][k]
               for k in ("completeness", "purity", "star_accuracy", "galaxy_accuracy")},
            **r["models"][label].get("blocks", {}),
            "sep": {k: r["sep"][k] for k in ("completeness", "purity", "star_accuracy",
                                              "galaxy_accuracy")}}
            for r in results}}
    write_model_card(path, card)


if __name__ == "__main__":
    sys.exit(main())
