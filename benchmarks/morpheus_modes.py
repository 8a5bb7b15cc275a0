"""Morpheus large-image modes: agreement with stride-1 Morpheus and speed.

On one simulated 4-band HST field (H, J, V, Z at 0.06"/px, GalSim, the
``hst`` preset, ``deep=True``) this runs the published Morpheus weights

* with astrodask's Morpheus-faithful mode at stride 1 (the reference: it
  equals ``morpheus_core.predict`` at stride 1, see
  tests/test_morphology_windows.py) and at larger strides;
* with the fast whole-tile mode (one pass, the 8 flips/rotations, and the
  variants the options allow);
* with ``morpheus_core.predict`` (PyPI ``morpheus-core``) given a callable
  that runs the same converted Keras model, at stride 1 and at the strides
  above, in-process on this machine (its ``cpus=`` parallelism spawns
  subprocesses on y-strips and is not used, as for astrodask's modes).

Agreement is measured on a central region (``--region``, default 200x200;
0 = the whole image) where the stride-1 reference is computed exactly (the
faithful mode run on the region plus its 34-pixel context): the fraction of
pixels whose top class (of the mean probabilities) is the same as stride-1
Morpheus's, the same over the source pixels only (stride-1 top class not
background), and the mean |delta p| over the 5 classes. Every mode itself
runs on the whole image. Times are wall-clock seconds for the
whole image; speed ratios are printed against morpheus_core at stride 1 and
at the same stride.

Usage::

    .venv/bin/python benchmarks/morpheus_modes.py [--size 600] [--threads 2]
        [--strides 2 4 8 15 30] [--core-strides 4 8 15 30]
        [--core-stride1-rows N] [--json results.json]

``--core-stride1-rows N`` runs morpheus_core at stride 1 on the top N rows
only and scales its time by the window count; likewise astrodask's stride-1
time when ``--region`` is not 0. Such times are marked EXTRAPOLATED in the
output. ``--region 0`` and no ``--core-stride1-rows`` make every run real.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MORPHEUS_ORDER = ("h", "j", "v", "z")
METRICS = ("same_top", "same_top_sources", "mean_abs_dp")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=600, help="image side in pixels (>= 600)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--strides", type=int, nargs="*", default=[2, 4, 8, 15, 30])
    parser.add_argument("--core-strides", type=int, nargs="*", default=[4, 8, 15, 30])
    parser.add_argument("--core-stride1-rows", type=int, default=None,
                        help="run morpheus_core at stride 1 on this many rows and extrapolate")
    parser.add_argument("--region", type=int, default=200,
                        help="run the stride-1 reference on a central region of this side "
                             "(plus its context); 0: on the whole image")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def field_image(size, seed):
    from astrodask.simulation import simulate_field

    field = simulate_field((size, size), preset="hst", seed=seed, deep=True)
    order = [field.bands.index(b) for b in MORPHEUS_ORDER]
    return field.images[order], field


def agreement(result, reference):
    """Same top class (all counted pixels, and source pixels only) and mean |dp|."""
    counted = reference["n"] > 0
    top = reference["mean"].argmax(0)
    source = counted & (top != 4)
    same = result["mean"].argmax(0) == top
    delta = np.abs(result["mean"] - reference["mean"]).mean(axis=0)
    return float(same[counted].mean()), float(same[source].mean()), float(delta[counted].mean())


def reference_region(model, image, side):
    """Stride-1 Morpheus on a central ``side`` x ``side`` region (``side`` 0: everything).

    The faithful mode is run on the region plus the context radius around
    it, so the region's values are exactly those of a whole-image stride-1
    run (tests/test_morphology_windows.py checks that property). Returns the
    region's slices, the seconds, the number of windows and the result.
    """
    from astrodask.morphology.windows import classify_image, context_radius

    _, height, width = image.shape
    if not side or side >= min(height, width) - 80:
        out, seconds = timed(classify_image, model, image, mode="faithful", stride=1)
        return (slice(0, height), slice(0, width)), seconds, windows_count(height, width, 1), out
    margin = context_radius(mode="faithful") + 1
    y0, x0 = (height - side) // 2, (width - side) // 2
    a, b = y0 - margin, x0 - margin
    cut = image[:, a:y0 + side + margin, b:x0 + side + margin]
    out, seconds = timed(classify_image, model, cut, mode="faithful", stride=1)
    full = {key: np.zeros(value.shape[:-2] + (height, width), value.dtype)
            for key, value in out.items()}
    for key, value in out.items():
        full[key][..., a:a + cut.shape[1], b:b + cut.shape[2]] = value
    region = (slice(y0, y0 + side), slice(x0, x0 + side))
    return region, seconds, windows_count(*cut.shape[1:], 1), full


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return out, time.perf_counter() - start


def windows_count(height, width, stride):
    return len(range(0, height - 39, stride)) * len(range(0, width - 39, stride))


def morpheus_core_run(model, image, stride, batch_size=1024):
    """morpheus_core.predict (mean and variance) with our model; returns a result dict."""
    from morpheus_core import morpheus_core

    from astrodask.morphology.windows import standardise_windows

    def classify(batch):
        return np.asarray(model.predict_on_batch(standardise_windows(batch[0])))

    update_map = np.pad(np.ones((30, 30)), 5)
    _, (mean_var, n) = morpheus_core.predict(
        classify, [image.transpose(1, 2, 0)], 5, batch_size, (40, 40), stride=(stride, stride),
        update_map=update_map, aggregate_method=morpheus_core.AGGREGATION_METHODS.MEAN_VAR)
    return {"mean": mean_var[..., 0].transpose(2, 0, 1), "n": n}


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import io
    import contextlib

    from astrodask.models.unet import load_unet
    from astrodask.morphology.windows import classify_image, standardise_windows

    model, _ = load_unet("morpheus")
    image, field = field_image(args.size, args.seed)
    _, height, width = image.shape
    print(f"image: {args.size}x{args.size}x4 (H, J, V, Z), simulated HST deep field, "
          f"{len(field.truth)} objects, seed {args.seed}; TF threads {args.threads}")

    probe = standardise_windows(np.random.default_rng(0).normal(size=(1024, 40, 40, 4)))
    model.predict_on_batch(probe)
    _, seconds = timed(model.predict_on_batch, probe)
    rate = 1024 / seconds
    print(f"model throughput on 40x40 windows: {rate:.0f} windows/s "
          f"({rate * 1600 / 1e6:.2f} Mpx/s); stride 1 here = "
          f"{windows_count(height, width, 1)} windows")

    rows = []
    region, ref_seconds, ref_windows, full = reference_region(model, image, args.region)
    reference = {key: value[..., region[0], region[1]] for key, value in full.items()}
    total = windows_count(height, width, 1)
    stride1 = {"method": "astrodask faithful", "stride": 1, "windows": total,
               **dict(zip(METRICS, agreement(reference, reference)))}
    if ref_windows == total:
        stride1["seconds"] = ref_seconds
    else:
        stride1.update(seconds=ref_seconds * total / ref_windows,
                       extrapolated_from_windows=ref_windows, measured_seconds=ref_seconds)
    rows.append(stride1)
    print(f"astrodask faithful stride 1 (reference): {ref_seconds:.1f} s for {ref_windows} "
          f"windows" + ("" if ref_windows == total else
                        f"; full image EXTRAPOLATED: {stride1['seconds']:.0f} s"), flush=True)
    print(f"agreement region: rows {region[0].start}:{region[0].stop}, "
          f"columns {region[1].start}:{region[1].stop}; source pixels there "
          f"(stride-1 top class not background): "
          f"{int(((reference['mean'].argmax(0) != 4) & (reference['n'] > 0)).sum())}")

    def crop(result):
        return {key: value[..., region[0], region[1]] for key, value in result.items()}

    for stride in args.strides:
        out, seconds = timed(classify_image, model, image, mode="faithful", stride=stride)
        rows.append({"method": "astrodask faithful", "stride": stride, "seconds": seconds,
                     "windows": windows_count(height, width, stride),
                     **dict(zip(METRICS, agreement(crop(out), reference)))})
        print(f"astrodask faithful stride {stride}: {seconds:.1f} s", flush=True)
    fast_modes = [
        ("astrodask fast", {}),
        ("astrodask fast + 8 flips", {"flips": True}),
        ("astrodask fast, align_corners", {"sampling": "align_corners"}),
        ("astrodask fast, tile normalisation", {"normalisation": "tile"}),
    ]
    for name, options in fast_modes:
        _, first = timed(classify_image, model, image, mode="fast", **options)
        out, seconds = timed(classify_image, model, image, mode="fast", **options)
        rows.append({"method": name, "stride": None, "seconds": seconds, "windows": None,
                     "first_call_seconds": first, **dict(zip(METRICS, agreement(crop(out), reference)))})
        print(f"{name}: {seconds:.2f} s (first call, with tracing: {first:.2f} s)", flush=True)

    # morpheus_core, same weights, same machine
    quiet = contextlib.redirect_stderr(io.StringIO())  # its tqdm bar
    if args.core_stride1_rows:
        rows_run = args.core_stride1_rows
        with quiet:
            _, seconds = timed(morpheus_core_run, model, image[:, :rows_run], 1)
        done = windows_count(rows_run, width, 1)
        total = windows_count(height, width, 1)
        core1 = {"method": "morpheus_core", "stride": 1, "windows": total,
                 "seconds": seconds * total / done, **dict.fromkeys(METRICS),
                 "extrapolated_from_windows": done, "measured_seconds": seconds}
        print(f"morpheus_core stride 1: EXTRAPOLATED from {done} of {total} windows "
              f"({seconds:.1f} s measured)", flush=True)
    else:
        with quiet:
            out, seconds = timed(morpheus_core_run, model, image, 1)
        core1 = {"method": "morpheus_core", "stride": 1, "seconds": seconds,
                 "windows": windows_count(height, width, 1),
                 **dict(zip(METRICS, agreement(crop(out), reference)))}
        print(f"morpheus_core stride 1: {seconds:.1f} s", flush=True)
    rows.append(core1)
    core_by_stride = {1: core1["seconds"]}
    for stride in args.core_strides:
        with quiet:
            out, seconds = timed(morpheus_core_run, model, image, stride)
        core_by_stride[stride] = seconds
        rows.append({"method": "morpheus_core", "stride": stride, "seconds": seconds,
                     "windows": windows_count(height, width, stride),
                     **dict(zip(METRICS, agreement(crop(out), reference)))})
        print(f"morpheus_core stride {stride}: {seconds:.1f} s", flush=True)

    print()
    header = (f"{'method':36s} {'stride':>6s} {'windows':>8s} {'seconds':>9s} "
              f"{'same top':>9s} {'(sources)':>9s} {'mean|dp|':>9s} {'x vs MC s=1':>11s} "
              f"{'x vs MC same s':>14s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio1 = core_by_stride[1] / row["seconds"]
        same_stride = core_by_stride.get(row["stride"])
        ratio_same = f"{same_stride / row['seconds']:.1f}" if same_stride and \
            row["method"] != "morpheus_core" else "-"
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        mark = " (EXTRAPOLATED)" if "extrapolated_from_windows" in row else ""
        print(f"{row['method']:36s} {fmt(row['stride'], 'd'):>6s} {fmt(row['windows'], 'd'):>8s} "
              f"{row['seconds']:9.2f} {fmt(row['same_top'], '.4f'):>9s} "
              f"{fmt(row['same_top_sources'], '.4f'):>9s} "
              f"{fmt(row['mean_abs_dp'], '.4f'):>9s} {ratio1:11.1f} {ratio_same:>14s}{mark}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"size": args.size, "seed": args.seed, "threads": args.threads,
                       "windows_per_second": rate, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
