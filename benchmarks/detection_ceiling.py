"""How many true sources could a detector separate at all, under each observing condition?

Issue 17 asks that completeness at S/N >= 10 on held-out conditions stay
within 0.03 of its in-distribution value. At 2.2" seeing (8.4 px FWHM) many
sources blend with a neighbour into one light distribution. This asks how
many sources show a peak of their own even *without noise*: it simulates the
fields of ``conditions_quality.py`` again (same seeds, sizes and star
density, so its pipeline numbers apply to the same truth) with their
noiseless images, builds the detection image the truth's S/N is measured on
(the bands in units of their noise, summed), finds its local maxima, and
matches them one to one to the true sources within 2 px of the simulated
grid (:func:`astrodask.catalog_scores.match_positions`), every true source
taking part, as catalogs are scored: a nearer faint neighbour takes a peak
first.

The *peak ceiling* is the share of the true sources with S/N >= 10 that get
a peak. A detector that needs a source's own peak
(SEP, SExtractor) cannot find the others without a model of the blend; a
deblender that fits profiles, or a network that places an irregular galaxy
at its centre rather than on a knot, can, so this bounds peak finding, not
every method. The ceiling is given for all sources and for the smooth ones
(stars, disks, spheroids), whose light peaks at their centre unless a
neighbour's light removes the peak: for them the loss is blending.

With ``--pipeline`` it also runs ingest → run → merge with the shipped
defaults on the field's noisy images and splits the pipeline's completeness
between the sources that own a noiseless peak and those that do not: the
loss among the first is the detector's, among the second the blend's.

    PYTHONPATH=. .venv/bin/python benchmarks/detection_ceiling.py --out /work/bench/det-ceiling
    PYTHONPATH=. .venv/bin/python benchmarks/detection_ceiling.py --pipeline \
        --settings in_distribution,seeing_2.2,pixel_scale_0.6 --out /work/bench/det-ceiling

``--mosaic-fields`` takes the 2048² test fields of ``mosaic_quality.py``
instead (``decam:standard,crowded``; ``hst`` with ``--radius 3``, as it is
scored).
"""

import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conditions_quality import SEED, STAR_DENSITY, settings  # noqa: E402

MATCH_RADIUS = 2.0
MIN_SNR = 10.0


def detection_image(folder):
    """The noiseless bands of a simulated field, each in units of its noise, summed over
    bands and divided by sqrt(bands) (the image the truth's ``snr`` is measured on)."""
    from astropy.io import fits

    info = json.loads((folder / "simulation.json").read_text())
    bands = info["bands"]
    total = sum(fits.getdata(folder / f"noiseless_{b}.fits").astype(np.float64) / info["sigma"][b]
                for b in bands)
    return total / np.sqrt(len(bands))


def own_peaks(folder, radius=MATCH_RADIUS):
    """For each true source, whether a local maximum of the noiseless detection image within
    ``radius`` px is matched to it (one to one, against every true source); and the truth."""
    import pyarrow.parquet as pq
    from skimage.feature import peak_local_max

    from astrodask.catalog_scores import match_positions

    image = detection_image(folder)
    # Any positive local maximum counts: without noise even a faint source's peak is real.
    peaks = peak_local_max(image, min_distance=1, threshold_abs=1e-6, exclude_border=False)
    truth = pq.read_table(folder / "truth.parquet").to_pydict()
    x, y = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    return match_positions(x, y, peaks[:, 1], peaks[:, 0], radius)[0] >= 0, truth, len(peaks)


def shares(found, selections):
    """``found``'s mean over each boolean selection (NaN where it is empty)."""
    return {name: float(found[sel].mean()) if sel.any() else float("nan")
            for name, sel in selections.items()}


def peak_ceiling(folder, radius=MATCH_RADIUS, min_snr=MIN_SNR):
    """Share of the true sources with S/N >= ``min_snr`` that own a local maximum of the
    noiseless detection image within ``radius`` px.

    Returns
    -------
    dict
        ``ceiling``, ``smooth`` (stars, disks and spheroids only), ``sources``
        (S/N >= ``min_snr``), ``peaks`` (all local maxima), ``by_snr``: the
        ceiling in S/N bins ``[10, 20)``, ``[20, 50)``, ``>= 50``.
    """
    has_peak, truth, n_peaks = own_peaks(folder, radius)
    snr = np.asarray(truth["snr"], float)
    keep = snr >= min_snr
    smooth = keep & (np.asarray(truth.get("morphology", ["?"] * len(snr))) != "irregular")
    bins = {"10-20": (10, 20), "20-50": (20, 50), ">=50": (50, np.inf)}
    by_snr = shares(has_peak, {name: keep & (snr >= lo) & (snr < hi)
                               for name, (lo, hi) in bins.items()})
    totals = shares(has_peak, {"ceiling": keep, "smooth": smooth})
    return dict(totals, sources=int(keep.sum()), peaks=n_peaks, by_snr=by_snr)


def pipeline_split(folder, radius=MATCH_RADIUS, min_snr=MIN_SNR):
    """The shipped pipeline's completeness on the field, among the sources that own a
    noiseless peak and among those that do not."""
    from astrodask.catalog_scores import match_positions
    from mosaic_quality import pipeline

    info = json.loads((folder / "simulation.json").read_text())
    images = [folder / f"{b}.fits" for b in info["bands"]]
    _, catalog, _ = pipeline(images, folder / "pipeline")
    has_peak, truth, _ = own_peaks(folder, radius)
    x, y = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    found = match_positions(x, y, catalog["x"], catalog["y"], radius)[0] >= 0
    keep = np.asarray(truth["snr"], float) >= min_snr
    split = shares(found, {"completeness": keep, "with_peak": keep & has_peak,
                           "without_peak": keep & ~has_peak})
    return dict(split, n_without_peak=int((keep & ~has_peak).sum()))


def fields(args, parser):
    """``(name, simulate keyword arguments)`` of each field asked for: the settings of
    ``conditions_quality.py`` or the undamaged fields of ``mosaic_quality.py``."""
    if args.mosaic_fields:
        from mosaic_quality import FIELDS, FLAGS

        preset, _, names = args.mosaic_fields.partition(":")
        known = [n for n in FIELDS.get(preset, {}) if n not in FLAGS]
        chosen = names.split(",") if names else known
        if not known or set(chosen) - set(known):
            parser.error(f"--mosaic-fields takes PRESET:NAME,... of {', '.join(FIELDS)} with "
                         f"undamaged fields ({preset}: {', '.join(known) or 'none'})")
        return [(f"{preset}_{n}", dict(FIELDS[preset][n], preset=preset,
                                       size=(args.size or 2048,) * 2)) for n in chosen]
    every = settings()
    chosen = args.settings.split(",") if args.settings else list(every)
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(every)}")
    return [(name, dict(preset="decam", size=(args.size or 1024,) * 2, seed=SEED + k,
                        conditions=replace(conditions, star_density=STAR_DENSITY)))
            for k, (name, conditions) in enumerate(every.items()) if name in chosen]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, help="side of the fields (default: their "
                                                 "benchmark's, 1024 or 2048)")
    parser.add_argument("--settings", help="comma-separated (default: every setting of "
                                           "conditions_quality.py)")
    parser.add_argument("--mosaic-fields", metavar="PRESET[:NAME,...]",
                        help="the fields of mosaic_quality.py instead (e.g. decam:standard,crowded "
                             "or hst; fields it damages with flags are left out)")
    parser.add_argument("--radius", type=float, default=MATCH_RADIUS,
                        help="match radius in px (2; the hst benchmark scores within 3)")
    parser.add_argument("--pipeline", action="store_true",
                        help="also run the shipped pipeline and split its completeness")
    parser.add_argument("--out", default="bench-output/detection_ceiling")
    args = parser.parse_args(argv)

    import astrodask

    out = Path(args.out)
    chosen = fields(args, parser)
    print(f"{'field':18s} {'FWHM px':>7s} {'sources':>7s} | peak ceiling at S/N >= 10: all "
          "(S/N 10-20, 20-50, >= 50), smooth" + (" | pipeline: completeness, with a peak, "
                                                 "without (n)" if args.pipeline else ""))
    results = []
    for name, kwargs in chosen:
        folder = out / name
        if not (folder / "truth.parquet").exists():
            astrodask.simulate(folder, noiseless=True, **kwargs)
        fwhm = np.median(list(json.loads((folder / "simulation.json").read_text())
                              ["psf_fwhm_px"].values()))
        row = dict(peak_ceiling(folder, args.radius), field=name, fwhm_px=float(fwhm),
                   seed=kwargs["seed"], radius=args.radius)
        bins = ", ".join(f"{v:.3f}" for v in row["by_snr"].values())
        line = (f"{name:18s} {fwhm:7.2f} {row['sources']:7d} | {row['ceiling']:.3f} ({bins}), "
                f"{row['smooth']:.3f}")
        if args.pipeline:
            row["pipeline"] = p = pipeline_split(folder, args.radius)
            line += (f" | {p['completeness']:.3f}, {p['with_peak']:.3f}, {p['without_peak']:.3f} "
                     f"({p['n_without_peak']})")
        results.append(row)
        print(line)
        sys.stdout.flush()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
