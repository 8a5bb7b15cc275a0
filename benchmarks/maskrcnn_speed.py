"""Seconds per 512x512 block of Mask R-CNN inference on this machine's CPU.

Runs the whole inference path (forward pass, proposals, heads, per-class
NMS, mask pasting) with :func:`astrodask.models.maskrcnn.detect` on
simulated DECam fields at batch 1 and batch 4, in one pass and with the 8
fused flips/rotations (``detection_flips``), after one warm-up call each, and
prints the median of ``--repeats`` timings and the flips/one-pass ratio.

    .venv/bin/python benchmarks/maskrcnn_speed.py [--model maskrcnn_decam] [--repeats 3]
"""

import argparse
import os
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="maskrcnn_decam", help="shipped name or .keras path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from astrodask.models.card import resolve_model_path
    from astrodask.models.maskrcnn import band_statistics, detect, load_maskrcnn, normalise_bands
    from astrodask.simulation import simulate_field

    model = load_maskrcnn(resolve_model_path(args.model))
    blocks = []
    for seed in range(2_000_000, 2_000_004):
        field = simulate_field(shape=(512, 512), preset="decam", seed=seed)
        mean, std = band_statistics(field.images)
        blocks.append(normalise_bands(field.images, mean, std, model.config.normalisation_scale))
    blocks = np.stack(blocks)

    print(f"model {args.model}: depth {model.config.backbone_depth}, "
          f"{model.count_params():,} parameters; load average {os.getloadavg()[0]:.1f}")
    print("| flips | batch | s per call | s per 512x512 block | detections per block |")
    print("| --- | --- | --- | --- | --- |")
    per_block = {}
    for flips in (False, True):
        for batch in (1, 4):
            images = blocks[:batch]
            results = detect(model, images, detection_flips=flips)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                results = detect(model, images, detection_flips=flips)
                times.append(time.perf_counter() - start)
            per_call = statistics.median(times)
            per_block[flips, batch] = per_call / batch
            n_det = np.mean([len(r) for r in results])
            print(f"| {'8 fused' if flips else 'one pass'} | {batch} | {per_call:.2f} | "
                  f"{per_call / batch:.2f} | {n_det:.0f} |")
    print("flips / one pass, s per block: " + ", ".join(
        f"batch {b} {per_block[True, b] / per_block[False, b]:.1f}x" for b in (1, 4)))

if __name__ == "__main__":
    main()
