"""Ingest throughput and peak memory, and how peak memory scales with mosaic size.

Writes synthetic 3-band FITS mosaics (noise plus sources, streamed to disk so
the script itself stays small), ingests a large one and one with a quarter of
its area, each in a fresh process, and prints MB/s, peak RSS and the ratio of
the two peaks (target: <= 1.3, i.e. memory does not grow with mosaic size).

    .venv/bin/python benchmarks/ingest.py [--size 12000] [--workdir bench-output/ingest]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

ROWS_PER_WRITE = 256


def write_band(path, size, band, seed):
    """Stream a size x size float32 band to ``path`` without holding it in memory."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [size / 2, size / 2]
    wcs.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = size
    header["NAXIS2"] = size
    header.extend(wcs.to_header())
    header["FILTER"] = band
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-6:7, -6:7]
    star = np.exp(-(yy ** 2 + xx ** 2) / 8.0).astype(np.float32) * 50
    stream = fits.StreamingHDU(str(path), header)
    for y0 in range(0, size, ROWS_PER_WRITE):
        rows = min(ROWS_PER_WRITE, size - y0)
        block = rng.normal(0.0, 1.0, size=(rows, size)).astype(np.float32)
        for _ in range(rows * size // 20000):  # a few sources per block
            y, x = rng.integers(6, rows - 7), rng.integers(6, size - 7)
            block[y - 6:y + 7, x - 6:x + 7] += star
        stream.write(block.astype(">f4"))
    stream.close()


def run_ingest(paths, out):
    """Ingest in a fresh process; return (seconds, peak RSS in MiB)."""
    code = (
        "import json, resource, sys, time\n"
        "import astrodask\n"
        "t0 = time.perf_counter()\n"
        "astrodask.ingest(sys.argv[2:], sys.argv[1])\n"
        "dt = time.perf_counter() - t0\n"
        "print(json.dumps({'seconds': dt, 'peak_mib': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out), *map(str, paths)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(workdir, size, label):
    folder = workdir / label
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    paths = [folder / f"{b}.fits" for b in "grz"]
    for i, path in enumerate(paths):
        write_band(path, size, "grz"[i], seed=i)
    made = time.perf_counter() - t0
    result = run_ingest(paths, folder / "mosaic.zarr")
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    result.update(size=size, input_mb=megabytes, mb_per_s=megabytes / result["seconds"],
                  make_seconds=made)
    shutil.rmtree(folder)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12000, help="side of the large mosaic")
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/ingest"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [measure(args.workdir, args.size // 2, "small"),
            measure(args.workdir, args.size, "large")]
    print(f"{'mosaic':>16} {'input MB':>9} {'seconds':>8} {'MB/s':>7} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['size']:>7}x{r['size']:<7}x3 {r['input_mb']:9.0f} {r['seconds']:8.1f} "
              f"{r['mb_per_s']:7.1f} {r['peak_mib']:13.0f}")
    ratio = rows[1]["peak_mib"] / rows[0]["peak_mib"]
    verdict = "OK" if ratio <= 1.3 else "TOO HIGH"
    print(f"peak RSS ratio large/small (4x the area): {ratio:.3f} (target <= 1.3: {verdict})")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
