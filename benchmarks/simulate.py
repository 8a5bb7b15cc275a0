"""Benchmark of ``astrodask simulate``: a large field to disk and training crops in memory.

Usage::

    .venv/bin/python benchmarks/simulate.py [--size 8192x8192] [--preset decam]
        [--crops 20] [--morpheus 0] [--out DIR]

Prints wall seconds, objects per second and peak RSS of the file run (in a
child process, so its RSS is its own), the share of that time spent drawing,
adding noise and writing, and the rate of 512x512 in-memory fields next to it.
``--morpheus N`` also classifies N simulated ``hst`` fields with the published
Morpheus model and prints object and pixel confusion matrices against the truth.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from astrodask.simulation import files
from astrodask.simulation.render import FieldPlan

spent = {"render": 0.0, "noise": 0.0}
_render, _noise = FieldPlan.render, FieldPlan.add_noise

def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t
    return wrapper

FieldPlan.render = timed("render", _render)
FieldPlan.add_noise = timed("noise", _noise)
out, size, preset, tile, workers = sys.argv[1:6]
t0 = time.perf_counter()
result = files.simulate(out, size=size, preset=preset, seed=1, tile_size=int(tile),
                        workers=int(workers))
total = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
rss = usage.ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
print(json.dumps({"seconds": total, "cpu_seconds": cpu, "n_objects": result["n_objects"],
                  "n_stars": result["n_stars"], "peak_rss_mib": rss, **spent}))
"""


def run_file_benchmark(size, preset, tile, workers, out):
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), size, preset, str(tile),
                           str(workers)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_crops(n, preset):
    from astrodask.simulation import simulate_field

    start = time.perf_counter()
    objects = 0
    for seed in range(n):
        objects += simulate_field((512, 512), preset=preset, seed=seed).truth.num_rows
    seconds = time.perf_counter() - start
    return seconds, objects


def morpheus_check(n):
    import numpy as np

    from astrodask.classes import MORPHOLOGY_CLASSES
    from astrodask.models.unet import load_unet
    from astrodask.morphology.windows import classify_image
    from astrodask.simulation import simulate_field

    model, card = load_unet("morpheus")
    order = [b.lower()[0] for b in card["bands"]]  # H, J, V, Z -> h, j, v, z
    objects = np.zeros((4, 4), int)
    pixels = np.zeros((5, 5), int)
    for seed in range(n):
        field = simulate_field((512, 512), preset="hst", seed=seed)
        idx = [field.bands.index(b) for b in order]
        probs = classify_image(model, field.images[idx], mode="fast")["mean"]
        pred = probs.argmax(axis=0)
        np.add.at(pixels, (field.morphology_map.ravel(), pred.ravel()), 1)
        truth = field.truth.to_pydict()
        for oid, code, area, mag in zip(truth["id"], truth["morphology_code"],
                                        truth["mask_area"], truth["mag_h"]):
            if area < 20 or mag > 25.5:
                continue
            sel = field.label_map == oid
            flux = np.clip(field.images[idx[0]][sel], 0, None)
            objects[code, int(np.argmax((probs[:4, sel] * flux).sum(axis=1)))] += 1
    names = MORPHOLOGY_CLASSES
    print(f"Morpheus on {n} simulated hst 512x512 fields (rows: truth, columns: predicted)")
    print("objects (H <= 25.5, mask >= 20 px), flux-weighted class:")
    print("  " + " ".join(f"{c[:9]:>9}" for c in names[:4]))
    for i in range(4):
        print(f"  {names[i][:9]:>9} " + " ".join(f"{v:9d}" for v in objects[i]))
    print("pixels:")
    for i in range(5):
        print(f"  {names[i][:9]:>9} " + " ".join(f"{v:9d}" for v in pixels[i]))
    agree = np.trace(objects) / max(objects.sum(), 1)
    print(f"object agreement {agree:.2f} over {objects.sum()} objects")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8192x8192")
    parser.add_argument("--preset", default="decam")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--crops", type=int, default=20, help="in-memory 512x512 fields to time")
    parser.add_argument("--morpheus", type=int, default=0, help="hst fields to classify")
    parser.add_argument("--out", help="output folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="simbench-")) / "field"
    tmp = None if args.out else out.parent
    try:
        r = run_file_benchmark(args.size, args.preset, args.tile_size, args.workers, out)
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2 ** 20
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    nx, ny = (int(v) for v in args.size.lower().split("x"))
    band_mib = nx * ny * 4 / 2 ** 20
    write = r["seconds"] - r["render"] - r["noise"]
    print(f"simulate {args.preset} {args.size} (tile {args.tile_size}, workers {args.workers}): "
          f"{r['seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s CPU), "
          f"{r['n_objects']} objects ({r['n_stars']} stars), "
          f"{r['n_objects'] / r['seconds']:.0f} objects/s, "
          f"{nx * ny / r['seconds'] / 1e6:.2f} Mpx/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
          f"(= {r['peak_rss_mib'] / band_mib:.2f} x one band's float32 image), "
          f"output {size_mb:.0f} MiB")
    if args.workers == 1:
        print(f"  time shares: drawing+truth {r['render'] / r['seconds']:.2f}, noise "
              f"{r['noise'] / r['seconds']:.2f}, writing+catalogue {write / r['seconds']:.2f}")
    if args.crops:
        seconds, objects = run_crops(args.crops, args.preset)
        print(f"in memory: {args.crops} fields of 512x512 in {seconds:.1f} s = "
              f"{args.crops / seconds:.2f} fields/s, {objects / seconds:.0f} objects/s "
              f"(ratio to the file run's objects/s: "
              f"{objects / seconds / (r['n_objects'] / r['seconds']):.2f})")
    if args.morpheus:
        morpheus_check(args.morpheus)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(parent process peak RSS {rss:.0f} MiB)")


if __name__ == "__main__":
    main()
