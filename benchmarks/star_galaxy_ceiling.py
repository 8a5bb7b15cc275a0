"""How well can any classifier that sees only a source's shape tell stars from galaxies?

For the held-out observing conditions of issue 17 (2.2" and 0.5" seeing, a
Gaussian PSF, 0.6"/px pixels) and the preset's own, this simulates one
1024² ``decam`` field each (seeds from 2400000, never trained on; 8
stars/arcmin² as in ``conditions_quality.py``) and measures two shape
statistics of every true source with S/N >= 10 *at its true position*, with
the PSF taken from the field's bright isolated true stars, so neither
detection, centroid nor PSF measurement costs anything:

- the aperture concentration (:func:`astrodask.psf.concentration`, what
  ``--psf-classes`` divides by the PSF stars'; a threshold's ceiling does
  not change with that scale, so it is left out here);
- a PSF-matched statistic in the manner of SExtractor's SPREAD_MODEL
  (Desai et al. 2012): ``(G.I)/(P.I) - (G.P)/(P.P)`` with ``P`` the PSF
  stamp, ``G`` the PSF convolved with an exponential of scale FWHM/16.

For each it prints the *ceiling*: the largest min(star accuracy, galaxy
accuracy) that a threshold chosen on the truth of that very field reaches,
at S/N >= 10 and >= 20. A classifier of the source's shape cannot do better
on that field. Statistics are computed in the r band (noise-limited, sky
subtracted with a sigma-clipped median).

    .venv/bin/python benchmarks/star_galaxy_ceiling.py --out /work/bench/sg-ceiling
"""

import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys

import numpy as np

SEED = 2400000
STAR_DENSITY = 8.0
SETTINGS = ("seeing_2.2", "seeing_0.5", "gaussian_psf", "pixel_scale_0.6")


def stamp(image, x, y, radius):
    """``(2 radius + 1)²`` pixels centred on the 0-based ``(x, y)`` (cubic-spline shift); None at edges."""
    from scipy import ndimage as ndi

    ix, iy, pad = int(round(x)), int(round(y)), 3
    y0, x0 = iy - radius - pad, ix - radius - pad
    size = 2 * (radius + pad) + 1
    if y0 < 0 or x0 < 0 or y0 + size > image.shape[0] or x0 + size > image.shape[1]:
        return None
    cut = image[y0:y0 + size, x0:x0 + size]
    return ndi.shift(cut, (iy - y, ix - x), order=3, mode="nearest")[pad:-pad, pad:-pad]


def psf_stars(truth, fwhm_px, saturation, image, radius):
    """Normalised stamps of true stars with S/N > 50, no true source within 2.5 FWHM, unsaturated."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([truth["x"], truth["y"]]))
    stamps = []
    for x, y, kind, snr in zip(truth["x"], truth["y"], truth["class"], truth["snr"]):
        if kind != "star" or snr <= 50 or len(tree.query_ball_point([x, y], 2.5 * fwhm_px)) > 1:
            continue
        cut = stamp(image, x, y, radius)
        if cut is not None and cut.max() < 0.5 * saturation:
            stamps.append(cut / cut.sum())
    return stamps


def extended_psf(psf, fwhm_px):
    """The PSF convolved with a circular exponential of scale FWHM/16 (sampled 5x5 per pixel)."""
    from scipy import ndimage as ndi

    radius = psf.shape[0] // 2
    offsets = (np.arange(5) + 0.5) / 5 - 0.5
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    kernel = sum(np.exp(-np.hypot(yy + dy, xx + dx) / (fwhm_px / 16.0))
                 for dy in offsets for dx in offsets)
    out = ndi.convolve(psf, kernel / kernel.sum(), mode="constant")
    return out / out.sum()


def spread(cut, psf, extended):
    """The PSF-matched extension statistic of one stamp (NaN if its PSF-weighted flux is not positive)."""
    radius = psf.shape[0] // 2
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    window = np.hypot(yy, xx) <= radius
    a, b = (extended * cut)[window].sum(), (psf * cut)[window].sum()
    if b <= 0:
        return np.nan
    return a / b - (extended * psf)[window].sum() / (psf * psf)[window].sum()


def ceiling(score, is_star):
    """Largest min(star accuracy, galaxy accuracy) of a cut ``score <= t`` -> star."""
    ok = np.isfinite(score)
    score, is_star = score[ok], is_star[ok]
    if not is_star.any() or is_star.all():
        return float("nan")
    cuts = np.unique(score)
    stars = np.searchsorted(np.sort(score[is_star]), cuts, side="right") / is_star.sum()
    galaxies = 1.0 - np.searchsorted(np.sort(score[~is_star]), cuts, side="right") / (~is_star).sum()
    return float(np.max(np.minimum(stars, galaxies)))


def measure(folder):
    """Shape statistics of a simulated field's true sources with S/N >= 10."""
    import pyarrow.parquet as pq
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats

    from astrodask.psf import concentration

    info = json.loads((folder / "simulation.json").read_text())
    fwhm = float(info["psf_fwhm_px"]["r"])
    raw = fits.getdata(folder / "r.fits").astype(np.float64)
    _, sky, noise = sigma_clipped_stats(raw[::2, ::2], sigma=3.0)
    image = raw - sky
    truth = pq.read_table(folder / "truth.parquet").to_pydict()
    radius = int(np.ceil(2.0 * fwhm)) + 2
    stamps = psf_stars(truth, fwhm, float(np.max(raw)), image, radius)
    psf = np.median(stamps, axis=0)
    psf /= psf.sum()
    extended = extended_psf(psf, fwhm)
    snr = np.asarray(truth["snr"], float)
    keep = snr >= 10
    x, y = np.asarray(truth["x"], float)[keep], np.asarray(truth["y"], float)[keep]
    is_star = np.asarray(truth["class"])[keep] == "star"
    cuts = [stamp(image, a, b, radius) for a, b in zip(x, y)]
    spread_value = np.array([np.nan if c is None else spread(c, psf, extended) for c in cuts])
    ratio = concentration(image, x, y, fwhm, noise)[0]
    return {"fwhm_px": fwhm, "n_psf_stars": len(stamps), "snr": snr[keep], "is_star": is_star,
            "spread": spread_value, "concentration_deficit": 1.0 - ratio}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", default="bench-output/star_galaxy_ceiling")
    args = parser.parse_args(argv)

    import astrodask
    from astrodask.simulation.conditions import HELD_OUT, Conditions

    out = Path(args.out)
    settings = {"in_distribution": Conditions(), **{k: HELD_OUT[k] for k in SETTINGS}}
    print(f"{'setting':16s} {'FWHM px':>7s} {'stars':>5s} {'gal.':>5s} | ceiling of min(star, "
          f"galaxy accuracy) at S/N >= 10 [>= 20]: concentration, spread statistic")
    results = []
    for k, (name, conditions) in enumerate(settings.items()):
        folder = out / name
        if not (folder / "truth.parquet").exists():
            astrodask.simulate(folder, size=(args.size, args.size), preset="decam", seed=SEED + k,
                               conditions=replace(conditions, star_density=STAR_DENSITY))
        m = measure(folder)
        bright = m["snr"] >= 20
        row = {"setting": name, "fwhm_px": m["fwhm_px"], "n_psf_stars": m["n_psf_stars"],
               "stars": int(m["is_star"].sum()), "galaxies": int((~m["is_star"]).sum())}
        for key in ("concentration_deficit", "spread"):
            row[key] = [ceiling(m[key], m["is_star"]),
                        ceiling(m[key][bright], m["is_star"][bright])]
        results.append(row)
        print(f"{name:16s} {row['fwhm_px']:7.2f} {row['stars']:5d} {row['galaxies']:5d} | "
              + "   ".join(f"{row[key][0]:.2f} [{row[key][1]:.2f}]"
                           for key in ("concentration_deficit", "spread")))
        sys.stdout.flush()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
