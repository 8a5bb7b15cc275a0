"""Fit the PSF-aware star/galaxy model of a Mask R-CNN on randomised simulated fields.

Simulates ``--fields`` decam fields with observing conditions drawn at random
(seeds from ``--seed``; never those of the held-out evaluation), runs the
network on each with its own classes, matches its instances to the truth,
and fits :class:`astrodask.star_galaxy.StarGalaxyModel` on the features
(concentration relative to the PSF measured at ingest, S/N, the PSF's FWHM; saturated
instances left out, the engine calls them stars). It prints, per
field, star and galaxy accuracy at true S/N >= 10 of the network and of the
model fitted on the other fields (leave one field out). Samples are cached
per run in ``--out`` (re-running adds only the missing seeds);
``--update-card`` writes the model fitted on every field into the card.

    .venv/bin/python benchmarks/fit_star_galaxy.py --fields 24 --out /work/bench/sg
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="maskrcnn_decam")
    parser.add_argument("--fields", type=int, default=24)
    parser.add_argument("--seed", type=int, default=2300000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-output/star_galaxy")
    parser.add_argument("--update-card", action="store_true",
                        help="write the fitted model into the model's card (star_galaxy)")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from astrodask.models.card import read_model_card, resolve_model_path, write_model_card
    from astrodask.train.star_galaxy import fit_from_samples, star_galaxy_samples

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = resolve_model_path(args.model)
    card = read_model_card(path)
    seeds = [s for s in range(args.seed, args.seed + args.fields)
             if not (out / f"samples-{s}.npz").exists()]
    if seeds:
        with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            for seed in seeds:
                samples = star_galaxy_samples(str(path), [seed], out / "work", size=args.size,
                                              client=client)
                np.savez(out / f"samples-{seed}.npz", **samples)
    parts = [dict(np.load(out / f"samples-{s}.npz"))
             for s in range(args.seed, args.seed + args.fields)]
    samples = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    print("seed     FWHM px  stars galaxies | network star / galaxy | PSF-aware (other fields)")
    for k, seed in enumerate(range(args.seed, args.seed + args.fields)):
        if not len(parts[k]["is_star"]):
            print(f"{seed}  no PSF measured in every band: not sampled")
            continue
        others = {key: np.concatenate([p[key] for j, p in enumerate(parts) if j != k])
                  for key in samples}
        test = {key: v[parts[k]["true_snr"] >= 10] for key, v in parts[k].items()}
        p_star = fit_from_samples(others).star_probability(test["relative_concentration"],
                                                           test["snr"], test["saturated"],
                                                           fwhm_px=test["fwhm_px"])
        # samples cached before session 17 hold the network's star score instead of its class
        network = (test["network_star"].astype(bool) if "network_star" in test
                   else test["network_p_star"] >= 0.5)
        aware = np.where(np.isfinite(p_star), p_star >= 0.5, network)
        star = test["is_star"]
        print(f"{seed}  {test['fwhm_px'][0]:6.2f}  {star.sum():5d} {(~star).sum():8d} | "
              f"{(network & star).sum() / star.sum():13.2f} / {(~network & ~star).sum() / (~star).sum():.2f} | "
              f"{(aware & star).sum() / star.sum():13.2f} / {(~aware & ~star).sum() / (~star).sum():.2f}")
    model = fit_from_samples(samples)
    keep = samples["true_snr"] >= 10
    print(f"{len(parts)} fields, {int(keep.sum())} matched instances with S/N >= 10 "
          f"({int(samples['is_star'][keep].sum())} stars); FWHM "
          f"{samples['fwhm_px'].min():.1f}-{samples['fwhm_px'].max():.1f} px")
    print(json.dumps(model.to_dict()))
    (out / "star_galaxy.json").write_text(json.dumps(model.to_dict(), indent=1))
    if args.update_card:
        sampled = sum(1 for p in parts if len(p["is_star"]))
        card["star_galaxy"] = dict(model.to_dict(), fitted_on=(
            f"{sampled} simulated {args.size}² fields, seeds {args.seed}-"
            f"{args.seed + args.fields - 1}, conditions drawn from TRAINING_RANGES "
            "(Gaussian PSFs never; fields without a measured PSF in every band left out), "
            "matched instances with true S/N >= 5; saturated instances left out (the engine "
            "calls them stars); the mosaic's FWHM is clipped to fwhm_range_px"))
        write_model_card(path, card)
        print(f"wrote the model into {path}'s card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
