"""Fit the per-object morphology calibration of a U-Net on simulated mosaics.

Simulates ``--fields`` fields of ``--size`` squared pixels of the preset
(seeds from ``--seed``; never those of the test or validation mosaics; the
kinds cycle through standard, crowded and large-galaxy fields for
``decam``, standard and deep ones for ``hst``), runs ingest -> run -> merge with
the shipped models as the CLI does, matches the catalog to the truth (one to
one within 2 px) and fits :class:`astrodask.morphology.calibration.MorphologyCalibration`
on the matched objects (truth S/N >= ``--snr-min``). Each field's catalog
and truth are cached in ``--out`` (re-running adds only the missing seeds).
It prints, per true-S/N bin, the objects right and the share called each
class, for the U-Net's dominant class (Morpheus eq. 16) and for the
calibration fitted on the other fields (leave one field out);
``--update-card`` writes the calibration fitted on every field into the
U-Net's card (``morphology_calibration``).

    PYTHONPATH=. .venv/bin/python benchmarks/fit_morphology.py --fields 12 --out /work/bench/morph-cal
    PYTHONPATH=. .venv/bin/python benchmarks/fit_morphology.py --preset hst --size 1024 \
        --fields 16 --seed 3100100 --model morpheus_hst --out /work/bench/morph-cal-hst
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mosaic_quality import pipeline  # noqa: E402

#: Kinds of fitting field per preset, in turn: ``decam`` the preset's density, crowded,
#: large galaxies; ``hst`` standard and deep.
KINDS = {"decam": ({}, {"density": 120.0}, {"large_galaxies": 0.5}),
         "hst": ({}, {"deep": True})}
SNR_BINS = ((5.0, 10.0), (10.0, 20.0), (20.0, np.inf))


def field_catalog(preset, seed, size, out):
    """Run the pipeline on one simulated field; cache its catalog and truth in ``out``."""
    import pyarrow.parquet as pq

    import astrodask

    done = out / f"field-{seed}"
    if (done / "catalog.parquet").exists():
        return done
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    kinds = KINDS[preset]
    kwargs = kinds[seed % len(kinds)]
    sim = astrodask.simulate(work / "field", size=(size, size), preset=preset, seed=seed, **kwargs)
    images = [work / "field" / f"{b}.fits" for b in sim["bands"]]
    pipeline(images, work / "run")
    part = out / f"field-{seed}.part"
    if part.exists():
        shutil.rmtree(part)
    part.mkdir()
    pq.write_table(astrodask.read_catalog(work / "run" / "results" / "catalog.parquet"),
                   part / "catalog.parquet")
    pq.write_table(pq.read_table(work / "field" / "truth.parquet"), part / "truth.parquet")
    part.rename(done)
    shutil.rmtree(work)
    return done


def field_samples(folder, radius=2.0):
    """Matched objects of one cached field: eq. 16 probabilities, catalog S/N, dominant eq. 16
    class, true class and true S/N."""
    import pyarrow.parquet as pq

    from astrodask.catalog_scores import match_positions
    from astrodask.classes import MORPHOLOGY_CLASSES
    from astrodask.measure import total_snr

    catalog = pq.read_table(folder / "catalog.parquet").to_pydict()
    truth = pq.read_table(folder / "truth.parquet").to_pydict()
    bands = [name[len("flux_err_"):] for name in catalog if name.startswith("flux_err_")]
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in catalog.items()
               if k.startswith("flux_")}
    _, to_cat = match_positions(catalog["x"], catalog["y"], truth["x"], truth["y"], radius)
    t = np.flatnonzero(to_cat >= 0)
    c = to_cat[t]
    probabilities = np.column_stack([np.asarray(catalog[f"p_{k}"], dtype=np.float64)
                                     for k in MORPHOLOGY_CLASSES])[c]
    # the dominant eq. 16 class from the p_* columns (the catalog's morphology may be calibrated)
    sources = np.nan_to_num(probabilities[:, :-1], nan=-1.0)
    return {"probabilities": probabilities, "snr": total_snr(columns, bands)[c],
            "dominant": np.asarray(MORPHOLOGY_CLASSES, dtype=object)[sources.argmax(axis=1)],
            "true_class": np.asarray(truth["morphology"]).astype(str)[t],
            "true_snr": np.asarray(truth["snr"], dtype=np.float64)[t]}


def report(name, predicted, samples):
    """One line per true-S/N bin: objects right and the share called each class."""
    from astrodask.morphology.calibration import SOURCE_CLASSES

    lines, gaps = [], []
    for lo, hi in SNR_BINS:
        sel = (samples["true_snr"] >= lo) & (samples["true_snr"] < hi)
        right = np.mean(predicted[sel] == samples["true_class"][sel])
        called = np.array([np.mean(predicted[sel] == c) for c in SOURCE_CLASSES])
        true = np.array([np.mean(samples["true_class"][sel] == c) for c in SOURCE_CLASSES])
        gaps.append(np.abs(called - true).sum() / 2)
        shares = " ".join(f"{v:.2f}" for v in called)
        truth = " ".join(f"{v:.2f}" for v in true)
        lines.append(f"  {name:12s} S/N {lo:>4.0f}-{hi:<4.0f} n {sel.sum():5d}  right {right:.3f}"
                     f"  called {shares}  (truth {truth})")
    bright = samples["true_snr"] >= 20
    recall = " / ".join(
        f"{np.mean(predicted[bright & (samples['true_class'] == c)] == c):.3f}"
        for c in SOURCE_CLASSES)
    lines.append(f"  {name:12s} recall at S/N >= 20 ({' / '.join(SOURCE_CLASSES)}): {recall}; "
                 f"objects in the wrong class share, mean over the S/N bins: {np.mean(gaps):.3f}")
    return "\n".join(lines)


def joined(parts, keys=None):
    """The samples of several fields in one dict."""
    return {k: np.concatenate([p[k] for p in parts]) for k in (keys or parts[0])}


def main(argv=None):
    from astrodask.morphology.calibration import BALANCE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="decam")
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--seed", type=int, default=3_100_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--snr-min", type=float, default=5.0)
    parser.add_argument("--out", default="bench-output/morphology")
    parser.add_argument("--l2", type=float, default=1e-3, help="penalty of the fit")
    parser.add_argument("--balances", type=lambda t: [float(v) for v in t.split(",")],
                        default=[0.0, 0.5, 0.6, 0.7, 1.0],
                        help="class-weight powers to compare, leaving one field out")
    parser.add_argument("--balance", type=float, default=BALANCE,
                        help="class-weight power of the calibration --update-card writes")
    parser.add_argument("--model", default="morpheus_decam", help="the U-Net whose card "
                        "--update-card writes")
    parser.add_argument("--update-card", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seed, args.seed + args.fields):
        field_catalog(args.preset, seed, args.size, out)
        print(f"field {seed} done", flush=True)

    from astrodask.morphology.calibration import fit_morphology_calibration

    seeds = list(range(args.seed, args.seed + args.fields))
    parts = [field_samples(out / f"field-{seed}") for seed in seeds]
    parts = [{k: v[p["true_snr"] >= args.snr_min] for k, v in p.items()} for p in parts]
    pooled = joined(parts)
    print(f"{len(seeds)} fields (seeds {seeds[0]}-{seeds[-1]}), {len(pooled['snr'])} matched "
          f"objects of true S/N >= {args.snr_min:g}; each field classified by the calibration "
          f"fitted on the others; called: share of spheroid, disk, irregular, point source")
    print(report("eq. 16", pooled["dominant"], pooled))
    for balance in args.balances:
        held = []
        for k in range(len(seeds)):
            others = joined([p for j, p in enumerate(parts) if j != k])
            model = fit_morphology_calibration(others["probabilities"], others["snr"],
                                               others["true_class"], l2=args.l2, balance=balance)
            held.append(model.classify(parts[k]["probabilities"], parts[k]["snr"]))
        print(report(f"balance {balance:g}", np.concatenate(held), pooled), flush=True)
    if args.update_card:
        from astrodask.models.card import read_model_card, resolve_model_path, write_model_card

        samples = joined(parts)
        model = fit_morphology_calibration(samples["probabilities"], samples["snr"],
                                           samples["true_class"], l2=args.l2,
                                           balance=args.balance)
        path = resolve_model_path(args.model)
        card = read_model_card(path)
        card["morphology_calibration"] = dict(
            model.to_dict(), fitted_on=f"{len(seeds)} simulated {args.preset} mosaics of "
            f"{args.size}x{args.size} px (seeds {seeds[0]}-{seeds[-1]}), "
            f"{len(samples['snr'])} matched objects of true S/N >= {args.snr_min:g}, "
            f"class-weight power {args.balance:g}",
            command="benchmarks/fit_morphology.py " + " ".join(argv or sys.argv[1:]))
        write_model_card(path, card)
        print(f"wrote morphology_calibration into {path}'s card")


if __name__ == "__main__":
    main()
