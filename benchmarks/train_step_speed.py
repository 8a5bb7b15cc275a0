"""Seconds per Mask R-CNN training step on this machine's Keras backend, compiled and eager.

Training runs on TensorFlow (``GradientTape``, network calls in
``tf.function``) or on JAX (``jax.value_and_grad``, the backbone and RPN in
``jax.jit``): the machines lent with a GPU here have JAX only. This script
times the same steps both ways on the shipped model's layout, side by side
in one run, on synthetic crops (noise with Gaussian stars and elliptical
galaxies; what is timed is the step, not what it learns)::

    python benchmarks/train_step_speed.py [--steps 6] [--batch-size 4] [--crop 128]
    KERAS_BACKEND=jax python benchmarks/train_step_speed.py

The first step of each mode (tracing, compiling) is reported apart; the
median of the others is the speed. On a GPU, ``--batch-size 16 --crop 256``
is closer to what a training run there would use.
"""

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np


def synthetic_pool(n_fields, size, n_objects, seed=0):
    """``n_fields`` training examples: sky noise with round stars and elliptical galaxies."""
    from astrodask.models.detections import boxes_from_masks
    from astrodask.train.maskrcnn_data import Example

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pool = []
    for _ in range(n_fields):
        image = rng.normal(0.0, 1.0, (size, size, 3)).astype(np.float32)
        masks, classes = [], []
        for _ in range(n_objects):
            cy, cx = rng.uniform(6, size - 6, 2)
            star = rng.random() < 0.2
            a, b = (1.5, 1.5) if star else rng.uniform(1.5, 5.0, 2)
            theta = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
            v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
            r2 = (u / a) ** 2 + (v / b) ** 2
            image += (rng.uniform(5, 50) * np.exp(-0.5 * r2))[..., None].astype(np.float32)
            masks.append(r2 < 4.0)
            classes.append(1 if star else 2)
        masks = np.array(masks)
        pool.append(Example(image=image, boxes=boxes_from_masks(masks).astype(np.float32),
                            class_ids=np.array(classes, np.int64), masks=masks))
    return pool


def time_steps(pool, config, steps, batch_size, crop, compiled):
    """Seconds of each of ``steps`` training steps (a fresh run, same seed)."""
    from astrodask.train.maskrcnn import TrainSettings, train_maskrcnn

    stamps = []

    def log(line):
        if line.startswith("step="):  # one line per step (log_every 1)
            stamps.append(time.perf_counter())

    settings = TrainSettings(steps=steps, batch_size=batch_size, crop_size=crop,
                             warmup_steps=1, log_every=1, checkpoint_every_s=1e9,
                             compiled=compiled)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train_maskrcnn(pool, run_dir, config=config, settings=settings, log=log)
    return list(np.diff([start] + stamps))


def main(argv=None):
    import keras

    from astrodask.models.card import model_card
    from astrodask.models.maskrcnn import MaskRCNNConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--model", default="maskrcnn_decam",
                        help="shipped model whose layout is timed (random weights)")
    parser.add_argument("--modes", default="compiled,eager",
                        help="comma-separated, of compiled and eager (default both)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"compiled", "eager"}:
        parser.error(f"--modes takes compiled and/or eager, not {args.modes!r}")
    config = MaskRCNNConfig.from_dict(model_card(args.model)["config"])
    pool = synthetic_pool(8, max(2 * args.crop, 128), 40)
    print(f"backend {keras.backend.backend()}, {args.model} layout, batch {args.batch_size} "
          f"crops of {args.crop}, {args.steps} steps per mode")
    medians = {}
    for name in modes:
        seconds = time_steps(pool, config, args.steps, args.batch_size, args.crop,
                             name == "compiled")
        medians[name] = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        print(f"{name:9s} first step {seconds[0]:7.2f} s, then median {medians[name]:7.3f} s "
              f"per step ({1000 * medians[name] / args.batch_size:.0f} ms per crop)")
    if len(medians) == 2:
        print(f"eager / compiled: {medians['eager'] / medians['compiled']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
