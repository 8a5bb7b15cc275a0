"""Milliseconds per 512x512 block for each shipped model, and a check of ``--gpus``.

1. **Blocks.** For each shipped model, the median time of one call at batch
   1, 2, 4, 8 and 16 blocks (after a warm-up call per batch size, which also
   pays JAX/XLA compilation): the Mask R-CNN's whole inference path
   (:func:`~astrodask.models.maskrcnn.detect`) in one pass and with the 8
   fused flips/rotations; the U-Net's network on whole blocks (the fast
   mode's model call, after the sliding standardisation), and at batch 1
   also ``classify_tile`` (the engine's per-window call, NumPy included).
2. **Mosaic.** ``astrodask.run`` of a small synthetic g,r,z mosaic with both
   shipped DECam models. With ``--gpus`` it runs on the cluster that
   ``astrodask run --gpus`` starts (dask-cuda ``LocalCUDACluster``, one
   worker per GPU), then checks that each worker touched only its own GPU:
   NVML's list of processes holding memory on each GPU must show every
   worker on its own GPU and on no other, and the framework in each worker
   must see one GPU. Without ``--gpus`` the same run goes to a local CPU
   cluster (no GPU check), which is what the tiny mode exercises in CI.

Runs on the TensorFlow backend (default) and on JAX without TensorFlow
(``KERAS_BACKEND=jax``); nothing here imports TensorFlow itself. The mosaic
part (run 2) runs first with ``--gpus``, so that this process holds no GPU
memory while the workers run.

    python benchmarks/gpu_blocks.py --gpus                  # all GPUs
    KERAS_BACKEND=jax python benchmarks/gpu_blocks.py --gpus
    python benchmarks/gpu_blocks.py --tiny                  # CPU, 64-px blocks, seconds

Exit status 1 when the GPU check fails, 2 when the mosaic run cannot start (no GPU, no
dask-cuda: one line on stderr; the block timings still run).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# Before Keras (and its backend) is imported, here and in the workers, which
# inherit this environment: no preallocation of most of the GPU by JAX, and
# GPU indices that mean the same to CUDA as to NVML.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

import logging  # noqa: E402

import numpy as np  # noqa: E402

# Keras on TensorFlow retraces for every new batch size and says so each time.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

BATCHES = (1, 2, 4, 8, 16)
MASKRCNN = "maskrcnn_decam"
UNETS = ("morpheus", "morpheus_decam")


def synthetic_blocks(n, size, n_bands, seed=0):
    """``(n, bands, size, size)`` float32 sky: noise and Gaussian sources of mixed sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blocks = rng.normal(0.0, 1.0, size=(n, n_bands, size, size)).astype(np.float32)
    per_block = max(4, size * size // 2000)
    for block in blocks:
        for _ in range(per_block):
            y, x = rng.uniform(0, size, 2)
            r = rng.choice([0.8, 1.2, 2.0, 4.0])
            flux = rng.uniform(5, 200) * rng.uniform(0.5, 1.5, n_bands)
            blob = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r)) / (2 * np.pi * r * r)
            block += (flux[:, None, None] * blob).astype(np.float32)
    return blocks


def timed(call, repeats):
    """Median seconds of ``repeats`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def devices():
    """Backend and the devices it uses, in words."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip()
                 for d in jax.devices()]
    elif backend == "tensorflow":
        import tensorflow as tf

        found = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "torch":
        import torch

        found = ([f"cuda:{i} {torch.cuda.get_device_name(i)}"
                  for i in range(torch.cuda.device_count())] or ["cpu"])
    else:
        found = []
    return f"Keras {keras.__version__}, backend {backend}: {', '.join(found) or '?'}"


def block_rows(size, batches, repeats, detection=None):
    """Yield rows ``(model, mode, batch, seconds per call)`` for every shipped model, as measured.

    ``detection``: Mask R-CNN settings overriding the model's (the tiny mode
    keeps fewer proposals).
    """
    from astrodask.models.card import resolve_model_path
    from astrodask.models.maskrcnn import band_statistics, detect, load_maskrcnn, normalise_bands
    from astrodask.models.unet import load_unet, with_sampling
    from astrodask.morphology.windows import classify_tile, standardise_local

    largest = max(batches)
    model = load_maskrcnn(resolve_model_path(MASKRCNN))
    raw = synthetic_blocks(largest, size, len(model.config.bands), seed=1)
    mean, std = band_statistics(raw.transpose(1, 0, 2, 3).reshape(len(model.config.bands), -1,
                                                                  size))
    images = normalise_bands(raw, mean, std, model.config.normalisation_scale)
    for flips in (False, True):
        mode = "8 fused flips" if flips else "one pass"
        for batch in batches:
            seconds = timed(lambda: detect(model, images[:batch], detection_flips=flips,
                                           **(detection or {})), repeats)
            yield MASKRCNN, mode, batch, seconds
    for name in UNETS:
        unet, card = load_unet(name)
        net = with_sampling(unet, "half_pixel")  # the fast mode's network (runners, windows)
        raw = synthetic_blocks(largest, size, len(card["bands"]), seed=2)
        x = np.stack([standardise_local(block) for block in raw])
        for batch in batches:
            seconds = timed(lambda: net.predict_on_batch(x[:batch]), repeats)
            yield name, "fast: network", batch, seconds
        seconds = timed(lambda: classify_tile(unet, raw[0], mode="fast"), repeats)
        yield name, "fast: classify_tile", 1, seconds


def print_blocks(rows, size):
    """Print the table row by row, as each is measured (a run cut short keeps its rows)."""
    print(f"\n| model | mode | batch | ms per call | ms per {size}x{size} block | blocks/s |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for model, mode, batch, seconds in rows:
        print(f"| {model} | {mode} | {batch} | {1000 * seconds:.1f} | "
              f"{1000 * seconds / batch:.1f} | {batch / seconds:.1f} |", flush=True)


def write_mosaic(folder, size, tile, halo):
    """A ``size``² g,r,z mosaic store of synthetic sky (FITS bands with a TAN WCS, ingested)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    import astrodask

    folder.mkdir(parents=True, exist_ok=True)
    sky = synthetic_blocks(1, size, 3, seed=3)[0]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [size / 2, size / 2]
    wcs.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    paths = []
    for band, data in zip("grz", sky):
        header = wcs.to_header()
        header["FILTER"] = band
        path = folder / f"{band}.fits"
        fits.writeto(path, data, header, overwrite=True)
        paths.append(path)
    return astrodask.ingest(paths, folder / "mosaic.zarr", tile=tile, halo=halo, overwrite=True)


def _worker_devices():
    """On a worker: its pid, ``CUDA_VISIBLE_DEVICES`` and the GPUs its framework sees."""
    import os
    import sys

    seen = None
    if "jax" in sys.modules:
        import jax

        seen = [str(d) for d in jax.devices() if d.platform == "gpu"]
    elif "tensorflow" in sys.modules:
        import tensorflow as tf

        seen = [d.name for d in tf.config.list_logical_devices("GPU")]
    elif "torch" in sys.modules:
        import torch

        seen = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "framework_gpus": seen, "tensorflow": "tensorflow" in sys.modules}


def gpu_processes():
    """NVML: for each GPU index, the pids holding memory on it (``None`` without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    found = {}
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        found[index] = {p.pid for p in procs}
    return found


def check_own_gpus(workers, processes):
    """Lines of the per-worker GPU check and whether it passed.

    Parameters
    ----------
    workers : list of dict
        :func:`_worker_devices` of each worker, after the run.
    processes : dict or None
        :func:`gpu_processes`, taken while the workers were alive.
    """
    lines, ok = [], True
    pids_seen = set().union(*processes.values()) if processes else set()
    own_gpus = []
    for info in workers:
        visible = (info["visible"] or "").split(",")
        own = int(visible[0]) if len(visible) == 1 and visible[0].isdigit() else None
        own_gpus.append(own)
        problems = []
        if own is None:
            problems.append(f"CUDA_VISIBLE_DEVICES={info['visible']!r} is not one GPU")
        if info["framework_gpus"] is not None and len(info["framework_gpus"]) != 1:
            problems.append(f"the framework sees {len(info['framework_gpus'])} GPUs")
        touched = None
        if processes is not None and info["pid"] in pids_seen:
            touched = sorted(g for g, pids in processes.items() if info["pid"] in pids)
            if touched != [own]:
                problems.append(f"holds memory on GPUs {touched}, not only on GPU {own}")
        ok &= not problems
        where = (f"NVML: memory on GPUs {touched}" if touched is not None else
                 "NVML: pid not listed (no NVML, or a container's own pid namespace)")
        lines.append(f"worker pid {info['pid']}: CUDA_VISIBLE_DEVICES={info['visible']}, "
                     f"framework GPUs {info['framework_gpus']}, {where}: "
                     f"{'; '.join(problems) or 'own GPU only'}")
    if len(set(own_gpus)) != len(own_gpus):
        ok = False
        lines.append(f"workers share GPUs: {own_gpus}")
    return lines, ok


def run_mosaic(workdir, size, tile, halo, gpus, workers, maskrcnn_flips=None):
    """``astrodask.run`` of the synthetic mosaic.

    Returns
    -------
    summary : RunSummary
    wall : float
        Seconds of the whole run (models loading on the workers included).
    lines : list of str
        The per-worker GPU check (empty without ``gpus``).
    ok : bool
        Whether the check passed.
    """
    import astrodask
    from astrodask.engine.cluster import connect
    from astrodask.engine.run import resolve_config

    mosaic = write_mosaic(workdir / "mosaic", size, tile, halo)
    # warmed up: the compute seconds per window hold no graph compilation
    config = resolve_config(models=["unet", "maskrcnn"], gpus=gpus,
                            n_workers=None if gpus else workers, threads_per_worker=1,
                            warm_up=True, config={"maskrcnn": {"flips": maskrcnn_flips}})
    with connect(config) as (client, description):
        start = time.perf_counter()
        summary = astrodask.run(mosaic, workdir / "results", config=config, client=client,
                                restart=True)
        wall = time.perf_counter() - start
        processes = gpu_processes() if gpus else None
        per_worker = list(client.run(_worker_devices).values())
    summary.cluster = description
    with_tf = sum(info["tensorflow"] for info in per_worker)
    lines, ok = check_own_gpus(per_worker, processes) if gpus else ([], True)
    return summary, wall, [f"workers that imported TensorFlow: {with_tf} of "
                           f"{len(per_worker)}"] + lines, ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", nargs="?", const="all", metavar="IDS",
                        help="run the mosaic on a LocalCUDACluster over these GPUs (all, or "
                             "0,1,...) and check that each worker used only its own")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke test: 64-px blocks at batch 1 and 2, the Mask R-CNN "
                             "keeping 64 proposals; a 128-px mosaic, Mask R-CNN in one pass")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,2,4,8,16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row "
                                                                  "(default 5; 1 with --tiny)")
    parser.add_argument("--workers", type=int, default=1, help="CPU workers without --gpus")
    parser.add_argument("--skip-blocks", action="store_true", help="only the mosaic run")
    parser.add_argument("--skip-mosaic", action="store_true", help="only the block timings")
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/gpu_blocks"))
    args = parser.parse_args(argv)

    size, mosaic_size, tile, halo = (64, 128, 64, 8) if args.tiny else (512, 1536, 512, 32)
    detection = dict(rpn_post_nms_inference=64, rpn_pre_nms=256) if args.tiny else None
    batches = (tuple(int(b) for b in args.batches.split(",")) if args.batches
               else (1, 2) if args.tiny else BATCHES)
    repeats = args.repeats or (1 if args.tiny else 5)
    gpus = None if args.gpus is None else (
        "all" if args.gpus == "all" else [int(g) for g in args.gpus.split(",")])
    print(f"load average {os.getloadavg()[0]:.1f}; KERAS_BACKEND="
          f"{os.environ.get('KERAS_BACKEND', '(default)')}")

    ok, failed = True, 0
    # The mosaic first: this process has touched no GPU yet (the check counts workers only,
    # but a parent holding GPU memory would take it from the worker on that GPU).
    if not args.skip_mosaic:
        import warnings

        from astrodask.errors import AstrodaskError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the halo warning: seams do not matter here
                summary, wall, lines, ok = run_mosaic(
                    args.workdir, mosaic_size, tile, halo, gpus, args.workers,
                    maskrcnn_flips=False if args.tiny else None)
        except AstrodaskError as exc:
            # the block timings still run (e.g. a GPU machine without dask-cuda)
            print(f"gpu_blocks: error: {exc}", file=sys.stderr)
            failed = 2
        else:
            print(f"\nmosaic {mosaic_size}x{mosaic_size} g,r,z, windows of {tile} "
                  f"(halo {halo}): {summary.tiles_run} windows ({', '.join(summary.models)}) "
                  f"on {summary.cluster} in {wall:.1f} s ({summary.seconds:.1f} s computing, "
                  f"{1000 * summary.seconds / max(summary.tiles_run, 1):.0f} ms per window), "
                  f"batches per worker pid {summary.workers}")
            for line in lines:
                print(line)
            if gpus:
                print(f"GPU check: {'PASS' if ok else 'FAIL'}")
    if not args.skip_blocks:
        from astrodask.framework import import_keras_quietly

        import_keras_quietly()
        print(f"\n{devices()}")
        print_blocks(block_rows(size, batches, repeats, detection), size)
    print(f"\nTensorFlow imported by this process: {'tensorflow' in sys.modules}")
    return failed or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
