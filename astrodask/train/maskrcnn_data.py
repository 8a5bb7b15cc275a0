"""Training examples for Mask R-CNN from simulated fields, and their augmentation.

An example is a standardised image (H, W, bands) with the boxes, classes and
boolean masks of its objects. Augmentations follow Burke et al. (2019):
90° rotations, mirrors, Gaussian blur with σ in [2, 6) px and additive
per-band offsets.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..classes import OBJECT_CODE
from ..models.detections import Instances, boxes_from_masks
from ..models.maskrcnn.normalise import band_statistics, normalise_bands
from ..storage import local_file_written_whole

#: Objects with fewer mask pixels than this inside a crop are dropped from it.
MIN_CROP_PIXELS = 4


@dataclass
class Example:
    """One training or test image with its truth."""

    image: np.ndarray       # (H, W, bands) float32, standardised
    boxes: np.ndarray       # (N, 4) float32, (y1, x1, y2, x2) exclusive ends
    class_ids: np.ndarray   # (N,) int64, 1 star / 2 galaxy
    masks: np.ndarray       # (N, H, W) bool
    ids: np.ndarray = None  # (N,) simulator object ids, where known

    def truth(self):
        """The truth as :class:`astrodask.evaluate.Instances`."""
        return Instances(self.boxes, self.class_ids, masks=self.masks)


def _column(table, name):
    """A column of a pyarrow table or a dict of arrays, as a NumPy array."""
    column = table[name]
    if hasattr(column, "to_pylist"):
        column = column.to_pylist()
    return np.asarray(column)


def field_truth(field):
    """Classes (N,) and per-object masks (N, H, W) of a simulated field.

    Uses the field's per-object truth masks (which may overlap:
    ``object_masks()`` of :class:`astrodask.simulation.SimulatedField`, or a
    dense ``masks`` array), so blended objects keep their own masks.
    """
    return _field_objects(field)[1:]


def _field_objects(field):
    """Object ids (N,), classes (N,) and masks (N, H, W) of a simulated field, in one order."""
    ids = _column(field.truth, "id")
    classes = _column(field.truth, "class")
    class_of = {int(i): OBJECT_CODE[str(c)] for i, c in zip(ids, classes)}
    shape = np.asarray(field.label_map).shape
    if hasattr(field, "object_masks"):
        objects = field.object_masks()
        masks = np.zeros((len(objects),) + shape, dtype=bool)
        for k, obj in enumerate(objects):
            y0, x0, y1, x1 = obj.box
            masks[k, y0:y1, x0:x1] = obj.mask
        ids = np.array([int(obj.id) for obj in objects], dtype=np.int64)
    else:
        masks = np.asarray(field.masks, dtype=bool)
        ids = ids.astype(np.int64)
    class_ids = np.array([class_of[int(i)] for i in ids], dtype=np.int64)
    return ids, class_ids, masks


def example_from_field(field, scale=1.0):
    """Standardise a simulated field (eq. 1, whole-field statistics) into an Example.

    Objects without a single mask pixel (too faint to be drawn) are left out.
    """
    images = np.asarray(field.images, dtype=np.float32)
    mean, std = band_statistics(images)
    image = normalise_bands(images, mean, std, scale)
    ids, class_ids, masks = _field_objects(field)
    visible = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
    ids, masks, class_ids = ids[visible], masks[visible], class_ids[visible]
    return Example(image, boxes_from_masks(masks).astype(np.float32), class_ids, masks, ids)


def random_crop(example, size, rng):
    """A ``size`` x ``size`` window at a random position, with the objects it cuts."""
    height, width = example.image.shape[:2]
    y0 = int(rng.integers(0, height - size + 1))
    x0 = int(rng.integers(0, width - size + 1))
    return crop(example, y0, x0, size)


def crop(example, y0, x0, size):
    """The window ``[y0, y0+size) x [x0, x0+size)`` of an example."""
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    image = example.image[window]
    inside = ((example.boxes[:, 0] < y0 + size) & (example.boxes[:, 2] > y0)
              & (example.boxes[:, 1] < x0 + size) & (example.boxes[:, 3] > x0))
    masks = example.masks[inside][:, window[0], window[1]]
    keep = masks.sum(axis=(1, 2)) >= MIN_CROP_PIXELS
    masks = masks[keep]
    return Example(np.ascontiguousarray(image), boxes_from_masks(masks).astype(np.float32),
                   example.class_ids[inside][keep], masks)


def augment(example, rng, blur_probability=0.1, offset_sigma=0.2, gradient_probability=0.0,
            bad_column_probability=0.0):
    """Random 90° rotation, mirror, Gaussian blur (σ in [2, 6) px) and band offsets.

    Geometric changes apply to image and masks alike; blur, offsets, residual
    sky gradients (``gradient_probability`` of crops: a plane per band rising
    by up to ~0.5 sky σ across the crop) and an unflagged bad column
    (``bad_column_probability``: one band, 1 to 10 σ above or below the sky)
    only to the image.
    """
    image, masks = example.image, example.masks
    k = int(rng.integers(0, 4))
    image = np.rot90(image, k, axes=(0, 1))
    masks = np.rot90(masks, k, axes=(1, 2))
    if rng.random() < 0.5:
        image = image[:, ::-1]
        masks = masks[:, :, ::-1]
    if rng.random() < blur_probability:
        sigma = float(rng.uniform(2.0, 6.0))
        image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    image = image + rng.normal(0.0, offset_sigma, size=image.shape[-1]).astype(np.float32)
    if rng.random() < gradient_probability:
        height, width, bands = image.shape
        slopes = rng.normal(0.0, 0.2, size=(2, bands))
        yy = (np.arange(height) / height - 0.5)[:, None, None]
        xx = (np.arange(width) / width - 0.5)[None, :, None]
        image = image + (yy * slopes[0] + xx * slopes[1]).astype(np.float32)
    if rng.random() < bad_column_probability:
        image = np.array(image, dtype=np.float32)
        column, band = int(rng.integers(image.shape[1])), int(rng.integers(image.shape[2]))
        image[:, column, band] += float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 10.0))
    masks = np.ascontiguousarray(masks)
    return Example(np.ascontiguousarray(image, dtype=np.float32),
                   boxes_from_masks(masks).astype(np.float32), example.class_ids, masks)


def simulated_examples(n_fields, size, seed, preset="decam", scale=1.0, star_density=None,
                       randomise=False, workers=1, deep=False, pairs=0.0):
    """Simulate ``n_fields`` square fields (seeds ``seed``, ``seed + 1``, ...) as Examples.

    ``star_density`` (stars per arcmin², default the preset's) lets a
    training pool hold more of the rarer class. ``randomise`` draws each
    field's observing conditions (seeing, PSF family and shape, pixel scale,
    depth, sky, noise correlation, star density, cosmic rays, saturation)
    from :data:`~astrodask.simulation.conditions.TRAINING_RANGES`, seeded by
    the field's seed. ``deep`` makes the fields ultra-deep (the simulator's
    ``deep``: more and fainter galaxies, deeper images). ``workers``
    processes draw the fields (the result does not depend on it).
    """
    from ..simulation.tiles import check_workers, ordered_map

    jobs = ((size, preset, seed + i, star_density, randomise, scale, deep, pairs)
            for i in range(n_fields))
    return list(ordered_map(_simulated_example, jobs, check_workers(workers)))


def _simulated_example(job):
    from ..simulation import simulate_field
    from ..simulation.conditions import draw_conditions

    size, preset, seed, star_density, randomise, scale, deep, pairs = job
    conditions = draw_conditions(seed) if randomise else None
    field = simulate_field(shape=(size, size), preset=preset, seed=seed, star_density=star_density,
                           conditions=conditions, deep=deep, pairs=pairs)
    return example_from_field(field, scale=scale)


def save_examples(path, examples):
    """Store examples in one compressed ``.npz`` (written to a temporary name, then renamed)."""
    arrays = {}
    for i, ex in enumerate(examples):
        arrays[f"image{i}"] = ex.image
        arrays[f"boxes{i}"] = ex.boxes
        arrays[f"classes{i}"] = ex.class_ids
        arrays[f"masks{i}"] = np.packbits(ex.masks, axis=-1)
        arrays[f"shape{i}"] = np.array(ex.masks.shape)
    with local_file_written_whole(path) as tmp:
        np.savez_compressed(tmp, count=len(examples), **arrays)


def load_examples(path):
    """Read examples written by :func:`save_examples`."""
    with np.load(path) as data:
        out = []
        for i in range(int(data["count"])):
            shape = tuple(data[f"shape{i}"])
            masks = np.unpackbits(data[f"masks{i}"], axis=-1, count=shape[-1]).astype(bool)
            out.append(Example(data[f"image{i}"], data[f"boxes{i}"], data[f"classes{i}"],
                               masks.reshape(shape)))
    return out
