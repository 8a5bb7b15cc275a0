"""Catalog flux errors against the scatter they should describe, under white and correlated noise.

Simulates ``decam`` fields whose sky noise is white, correlated as the
preset's coadds are, and correlated more strongly (seeds never used in
training), runs ingest -> run -> merge with the defaults, and compares each
catalog object's flux with the noiseless flux in its own segment: the pull
``(flux - noiseless) / flux_err`` has a standard deviation of 1 when the
errors are right. Printed beside the pulls with the errors of independent
pixels (the band's robust sky σ times √area, what the merge gave before it
counted the correlation), and the neighbour correlation the ingest measured
beside the one of the noise itself (image minus noiseless image).

Only objects whose flux is below 30 times its error count: above that, the
objects' own photon noise (which ``flux_err`` leaves out, as SExtractor's
does without a gain) adds to the scatter.

Usage::

    python benchmarks/flux_errors.py [--size 1024] [--out bench-output/flux_errors]
"""

import argparse
import json
from pathlib import Path
import shutil
import sys

import numpy as np

SEED = 2_000_200
SETTINGS = {"white": 0.0, "preset": None, "strong": 0.45}  # side weight of the noise kernel


def neighbour_correlation(noise):
    """Correlation of horizontally adjacent pixels of a noise image."""
    noise = noise - noise.mean()
    return float(np.mean(noise[:, 1:] * noise[:, :-1]) / np.mean(noise ** 2))


def score_setting(name, kernel, size, out):
    from astropy.io import fits
    from astropy.stats import mad_std
    from scipy import ndimage

    import astrodask
    from astrodask.noise_correlation import LAGS
    from astrodask.simulation.conditions import Conditions

    work = out / name
    if work.exists():
        shutil.rmtree(work)
    sim = astrodask.simulate(work / "field", size=(size, size), preset="decam",
                             seed=SEED + list(SETTINGS).index(name), noiseless=True,
                             conditions=Conditions(noise_kernel=kernel))
    bands = sim["bands"]
    mosaic = astrodask.ingest([work / "field" / f"{b}.fits" for b in bands], work / "mosaic.zarr")
    summary = astrodask.run(mosaic, work / "results")
    astrodask.merge(summary.results, mosaic=mosaic,
                    options=astrodask.MergeOptions(pictures=False))
    catalog = astrodask.read_catalog(work / "results" / "catalog.parquet").to_pydict()
    segmap = fits.getdata(work / "results" / "segmap.fits")
    stats = mosaic.attrs["band_stats"]
    result = {"setting": name, "kernel": kernel, "bands": {}}
    area = np.asarray(catalog["area"], float)
    for band in bands:
        noiseless = fits.getdata(work / "field" / f"noiseless_{band}.fits").astype(np.float64)
        image = fits.getdata(work / "field" / f"{band}.fits").astype(np.float64)
        held = ndimage.sum_labels(noiseless, segmap, index=np.asarray(catalog["id"]))
        flux = np.asarray(catalog[f"flux_{band}"], float)
        error = np.asarray(catalog[f"flux_err_{band}"], float)
        independent = stats[band]["mad_std"] * np.sqrt(area)
        faint = ~np.asarray(catalog["masked"]) & (error > 0) & (flux < 30 * error)
        pulls = (flux - held)[faint] / error[faint]
        pulls_independent = (flux - held)[faint] / independent[faint]
        rho = stats[band]["noise_correlation"]["rho"][LAGS.index((0, 1))]
        result["bands"][band] = {
            "n": int(faint.sum()),
            "neighbour_rho_measured": rho,
            "neighbour_rho_noise": neighbour_correlation(image - noiseless),
            "pull_std": float(mad_std(pulls)), "pull_median": float(np.median(pulls)),
            "pull_std_independent": float(mad_std(pulls_independent)),
            "error_ratio_median": float(np.median(error[faint] / independent[faint]))}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", default="bench-output/flux_errors")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'noise':8s} {'band':4s} {'n':>5s} {'rho(0,1) ingest':>15s} {'noise':>6s} "
          f"{'pull std':>8s} {'median':>7s} {'independent':>11s} {'err ratio':>9s}")
    for name, kernel in SETTINGS.items():
        r = score_setting(name, kernel, args.size, out)
        results.append(r)
        for band, v in r["bands"].items():
            print(f"{name:8s} {band:4s} {v['n']:5d} {v['neighbour_rho_measured']:15.3f} "
                  f"{v['neighbour_rho_noise']:6.3f} {v['pull_std']:8.2f} {v['pull_median']:+7.2f} "
                  f"{v['pull_std_independent']:11.2f} {v['error_ratio_median']:9.2f}")
        sys.stdout.flush()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
