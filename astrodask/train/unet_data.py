"""Training windows for the U-Net from simulated fields.

Each sample is a ``crop`` x ``crop`` window cut from a simulated field (the
simulator's ``morphology_map`` gives the per-pixel class), turned by a random
multiple of 90 degrees and flipped, then standardised per window exactly as
Morpheus does at inference. Half of the windows are centred near a source
pixel: the fields are mostly sky.
"""

import keras
import numpy as np

from ..classes import MORPHOLOGY_CLASSES, MORPHOLOGY_CODE
from ..morphology.windows import standardise_windows

BACKGROUND = MORPHOLOGY_CODE["background"]


def simulate_fields(n_fields, size, preset, seed, star_density=None, deep_fraction=0.0):
    """``n_fields`` simulated fields (images, label maps); field i uses seed ``seed + i``.

    ``star_density`` (stars per arcmin², default the preset's) lets point sources
    be common enough to learn from in presets with few stars; the first
    ``round(deep_fraction * n_fields)`` fields are ultra-deep (the simulator's
    ``deep``: more and fainter galaxies, deeper images).
    """
    from ..simulation import simulate_field

    n_deep = round(deep_fraction * n_fields)
    fields = [simulate_field((size, size), preset=preset, seed=seed + i, star_density=star_density,
                             deep=i < n_deep)
              for i in range(n_fields)]
    images = np.stack([f.images for f in fields]).astype(np.float32)
    labels = np.stack([f.morphology_map for f in fields]).astype(np.int64)
    return images, labels, fields[0].bands


def sample_windows(images, labels, count, crop, rng, source_fraction=0.5):
    """Cut ``count`` augmented windows; returns (x (n, crop, crop, bands), y (n, crop, crop))."""
    n_fields, _, height, width = images.shape
    field = rng.integers(0, n_fields, size=count)
    y0 = rng.integers(0, height - crop + 1, size=count)
    x0 = rng.integers(0, width - crop + 1, size=count)
    near_source = rng.random(count) < source_fraction
    for i in np.nonzero(near_source)[0]:
        ys, xs = np.nonzero(labels[field[i]] != BACKGROUND)
        if len(ys):
            k = rng.integers(0, len(ys))
            jitter = rng.integers(-crop // 2 + 1, crop // 2, size=2)
            y0[i] = np.clip(ys[k] - crop // 2 + jitter[0], 0, height - crop)
            x0[i] = np.clip(xs[k] - crop // 2 + jitter[1], 0, width - crop)
    turns = rng.integers(0, 4, size=count)
    flips = rng.random(count) < 0.5
    x = np.empty((count, crop, crop, images.shape[1]), np.float32)
    y = np.empty((count, crop, crop), np.int64)
    for i in range(count):
        win = images[field[i], :, y0[i]:y0[i] + crop, x0[i]:x0[i] + crop].transpose(1, 2, 0)
        lab = labels[field[i], y0[i]:y0[i] + crop, x0[i]:x0[i] + crop]
        if flips[i]:
            win, lab = win[:, ::-1], lab[:, ::-1]
        x[i] = np.rot90(win, turns[i])
        y[i] = np.rot90(lab, turns[i])
    return standardise_windows(x), y


class WindowSequence(keras.utils.PyDataset):
    """Batches of augmented windows; batch ``i`` of epoch ``e`` is the same on every run.

    Keep :class:`EpochSync` among the callbacks so ``epoch`` follows training.
    """

    def __init__(self, images, labels, batch_size, steps, crop=40, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, labels
        self.batch_size, self.steps, self.crop, self.seed = batch_size, steps, crop, seed
        self.epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        x, y = sample_windows(self.images, self.labels, self.batch_size, self.crop, rng)
        return x, np.eye(len(MORPHOLOGY_CLASSES), dtype=np.float32)[y]


class EpochSync(keras.callbacks.Callback):
    """Tell a :class:`WindowSequence` which epoch runs (also after a resume)."""

    def __init__(self, sequence):
        super().__init__()
        self.sequence = sequence

    def on_epoch_begin(self, epoch, logs=None):
        self.sequence.epoch = epoch
