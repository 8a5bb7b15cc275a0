"""A tiny stand-in for a simulated field: Gaussian stars and elliptical galaxies."""

from dataclasses import dataclass

import numpy as np


@dataclass
class FakeField:
    images: np.ndarray
    truth: dict
    masks: np.ndarray
    label_map: np.ndarray


def fake_field(shape=(128, 128), n_stars=6, n_galaxies=6, seed=0, bands=3):
    """Noise + round point sources (stars) + larger elliptical blobs (galaxies)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    images = rng.normal(0.0, 1.0, size=(bands, height, width)).astype(np.float32)
    masks, classes = [], []
    for kind, count in (("star", n_stars), ("galaxy", n_galaxies)):
        for _ in range(count):
            cy, cx = rng.uniform(8, height - 8), rng.uniform(8, width - 8)
            if kind == "star":
                sy = sx = 1.2
                angle = 0.0
            else:
                sy, sx = rng.uniform(2.5, 5.0), rng.uniform(1.2, 2.5)
                angle = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = dy * np.cos(angle) + dx * np.sin(angle)
            v = -dy * np.sin(angle) + dx * np.cos(angle)
            profile = np.exp(-0.5 * ((u / sy) ** 2 + (v / sx) ** 2))
            flux = rng.uniform(30, 80)
            images += (flux * profile)[None].astype(np.float32)
            masks.append(profile * flux > 3.0)
            classes.append(kind)
    masks = np.array(masks)
    label_map = np.zeros(shape, dtype=np.int32)
    for i, mask in enumerate(masks):
        label_map[mask & (label_map == 0)] = i + 1
    truth = {"id": np.arange(1, len(classes) + 1), "class": np.array(classes)}
    return FakeField(images, truth, masks, label_map)
