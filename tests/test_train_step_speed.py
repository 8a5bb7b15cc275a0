"""benchmarks/train_step_speed.py: its synthetic crops are consistent and its steps are timed."""

import numpy as np

from benchmark_scripts import load_benchmark
from test_maskrcnn_train import TINY


def test_synthetic_crops_have_boxes_around_their_masks():
    pool = load_benchmark("train_step_speed").synthetic_pool(2, 96, 5, seed=1)
    assert len(pool) == 2
    for example in pool:
        assert example.image.shape == (96, 96, 3) and example.image.dtype == np.float32
        assert example.masks.shape == (5, 96, 96) and set(example.class_ids) <= {1, 2}
        for (y0, x0, y1, x1), mask in zip(example.boxes.astype(int), example.masks):
            ys, xs = np.nonzero(mask)
            assert (y0, x0, y1, x1) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_every_step_is_timed():
    script = load_benchmark("train_step_speed")
    pool = script.synthetic_pool(2, 128, 6)
    seconds = script.time_steps(pool, TINY, steps=2, batch_size=2, crop=64, compiled=False)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
