"""The Mask R-CNN's ROIAlign, NMS and mask pasting against their former versions, side by side.

On a GPU (``benchmarks/gpu_blocks.py``) most of a block's time was spent
outside the network, in these steps. Their former versions are kept here:

- ROIAlign gathered, for every output bin, its ``sampling_ratio``² samples'
  4 bilinear neighbours (16 feature rows per bin); the shipped one reads one
  small window of the level per box and takes one batched product with the
  outer product of the two axes' weights (bilinear sampling is separable);
- NMS was a greedy loop over the boxes by score, each step computing the IoU
  of the best box with all that remain; the shipped one computes the IoU of
  the pairs that overlap in x only and keeps the same boxes in one pass;
- mask pasting interpolated each grid with ``scipy.ndimage.map_coordinates``;
  the shipped one with two small matrix products.

The script times ROIAlign alone on random source boxes (box head: 1,000
RoIs to 7x7; mask head: 100 RoIs to 14x14, on one 512x512 image's P2..P5
with 64 channels), then the whole of :func:`astrodask.models.maskrcnn.detect`
on a synthetic 512x512 g,r,z block (``gpu_blocks.synthetic_blocks``) with the
former steps patched in and with the shipped ones, alternately, and prints
median milliseconds, their ratio, and whether the detections agree.

    .venv/bin/python benchmarks/maskrcnn_host_steps.py [--repeats 7]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/maskrcnn_host_steps.py
"""

import argparse
import statistics
import sys
import time

import numpy as np


def gather_crop_level(feature, boxes, batch_index, output_size, sampling_ratio, stride):
    """The former ROIAlign of one level: one gather of every sample's 4 neighbours."""
    from keras import ops

    from astrodask.models.maskrcnn.roi_align import _sample_grid

    _, height, width, channels = feature.shape
    n_boxes, size, ratio = len(boxes), output_size, sampling_ratio
    scaled = boxes / stride
    y0, y1, fy = _sample_grid(scaled[:, 0], scaled[:, 2], size * ratio, height)
    x0, x1, fx = _sample_grid(scaled[:, 1], scaled[:, 3], size * ratio, width)
    base = (batch_index.astype(np.int64) * height * width)[:, None, None]
    rows, cols = [(y0, 1 - fy), (y1, fy)], [(x0, 1 - fx), (x1, fx)]
    index = np.stack([base + yi[:, :, None] * width + xi[:, None, :]
                      for yi, _ in rows for xi, _ in cols], axis=-1)
    weight = np.stack([wy[:, :, None] * wx[:, None, :]
                       for _, wy in rows for _, wx in cols], axis=-1) / ratio ** 2

    def per_bin(a):
        a = a.reshape(n_boxes, size, ratio, size, ratio, 4).transpose(0, 1, 3, 2, 4, 5)
        return a.reshape(n_boxes, size, size, 4 * ratio * ratio)

    index, weight = per_bin(index), per_bin(weight).astype(np.float32)
    flat = ops.reshape(feature, (-1, channels))
    values = ops.take(flat, ops.convert_to_tensor(index.reshape(-1).astype("int32")), axis=0)
    values = ops.reshape(values, index.shape + (channels,))
    return ops.sum(values * weight[..., None], axis=3)


def greedy_nms(boxes, scores, threshold, max_output):
    """The former NMS: the best box, the IoU with all the rest, drop, repeat."""
    from astrodask.models.maskrcnn.detection import greedy_loop

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return greedy_loop(boxes, areas, order, threshold, max_output)


def map_coordinates_paste(mask_probs, boxes, image_shape, threshold=0.5):
    """The former mask pasting, one ``map_coordinates`` per detection."""
    from scipy import ndimage

    from astrodask.models.maskrcnn.detection import box_grid_coordinates

    masks = np.zeros((len(boxes),) + tuple(image_shape), dtype=bool)
    for i, prob, window, u, v in box_grid_coordinates(mask_probs, boxes, image_shape):
        uu, vv = np.meshgrid(u, v, indexing="ij")
        values = ndimage.map_coordinates(prob, [uu, vv], order=1, mode="nearest")
        masks[(i,) + window] = values >= threshold
    return masks


class former_steps:
    """Context manager: the Mask R-CNN runs with the former ROIAlign, NMS and pasting."""

    def __enter__(self):
        from astrodask.models.maskrcnn import detection, model, roi_align, rpn

        self.saved = [(roi_align, "_crop_level", gather_crop_level),
                      (detection, "nms", greedy_nms), (rpn, "nms", greedy_nms),
                      (model, "nms", greedy_nms), (model, "paste_masks", map_coordinates_paste)]
        self.saved = [(module, name, getattr(module, name), new)
                      for module, name, new in self.saved]
        for module, name, _, new in self.saved:
            setattr(module, name, new)
        return self

    def __exit__(self, *exc):
        for module, name, old, _ in self.saved:
            setattr(module, name, old)
        return False


def side_by_side(calls, repeats):
    """Results of one warm-up call of each and the median seconds of ``repeats``, alternately."""
    results = {name: call() for name, call in calls.items()}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return results, {name: statistics.median(t) for name, t in times.items()}


def random_boxes(rng, n, image=512):
    """Boxes of sources: 3-60 px, aspect 1/2-2, anywhere in the image (clipped)."""
    side = np.exp(rng.uniform(np.log(3), np.log(60), n))
    aspect = rng.choice([0.5, 1.0, 2.0], n)
    y1, x1 = rng.uniform(-10, image - 3, n), rng.uniform(-10, image - 3, n)
    boxes = np.stack([y1, x1, y1 + side * np.sqrt(aspect), x1 + side / np.sqrt(aspect)], 1)
    return np.clip(boxes, 0, image).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    from astrodask.framework import import_keras_quietly

    keras = import_keras_quietly()
    from keras import ops

    from astrodask.models.card import resolve_model_path
    from astrodask.models.maskrcnn import (band_statistics, detect, load_maskrcnn,
                                           normalise_bands, roi_align)
    from gpu_blocks import synthetic_blocks

    rng = np.random.default_rng(0)
    pyramid = [ops.convert_to_tensor(rng.normal(size=(1, 512 // 2 ** k, 512 // 2 ** k, 64))
                                     .astype(np.float32)) for k in (2, 3, 4, 5)]
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}; median of "
          f"{args.repeats} calls each, alternately, after a warm-up call")
    print("\n| step | former, ms | shipped, ms | former / shipped | agreement |")
    print("| --- | --- | --- | --- | --- |")
    for n, size in ((1000, 7), (100, 14)):
        boxes = random_boxes(rng, n)
        batch = np.zeros(n, np.int64)

        def pooled():
            return np.asarray(roi_align.roi_align(pyramid, boxes, batch, size))

        def former():
            with former_steps():
                return pooled()

        results, seconds = side_by_side({"former": former, "shipped": pooled}, args.repeats)
        diff = float(np.abs(results["former"] - results["shipped"]).max())
        print(f"| ROIAlign, {n} RoIs to {size}x{size} | {1000 * seconds['former']:.1f} | "
              f"{1000 * seconds['shipped']:.1f} | {seconds['former'] / seconds['shipped']:.2f}x "
              f"| max difference {diff:.1e} |", flush=True)

    model = load_maskrcnn(resolve_model_path("maskrcnn_decam"))
    bands = len(model.config.bands)
    raw = synthetic_blocks(1, 512, bands, seed=1)
    mean, std = band_statistics(raw.transpose(1, 0, 2, 3).reshape(bands, -1, 512))
    images = normalise_bands(raw, mean, std, model.config.normalisation_scale)
    for flips in (False, True):
        def shipped():
            return detect(model, images, detection_flips=flips)[0]

        def former():
            with former_steps():
                return shipped()

        results, seconds = side_by_side({"former": former, "shipped": shipped}, args.repeats)
        a, b = results["former"], results["shipped"]
        same = (len(a.boxes) == len(b.boxes) and np.allclose(a.boxes, b.boxes, atol=1e-3)
                and np.array_equal(a.class_ids, b.class_ids)
                and np.allclose(a.scores, b.scores, atol=1e-4))
        pixels = np.mean(a.masks != b.masks) if a.masks.shape == b.masks.shape else float("nan")
        print(f"| detect, 512x512, {'8 fused flips' if flips else 'one pass'} | "
              f"{1000 * seconds['former']:.1f} | {1000 * seconds['shipped']:.1f} | "
              f"{seconds['former'] / seconds['shipped']:.2f}x | {len(b.boxes)} detections, "
              f"{'the same' if same else 'DIFFERENT'}; mask pixels differing {pixels:.1e} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
