"""The Morpheus colour image: one RGB picture of the pixel classes.

Hue is the dominant non-background class (spheroid red, disk blue, irregular
green, point source yellow), saturation the margin between the top two
classes (white where the network hesitates), value 1 - background (black
where it sees sky).
"""

import colorsys
from pathlib import Path

import numpy as np

from ..classes import MORPHOLOGY_CLASSES
from ..errors import InputError
from ..storage import local_file_written_whole

#: HSV hue of each class in the picture.
CLASS_HUES = {"spheroid": 0.0, "disk": 0.7, "irregular": 0.3, "point_source": 0.18}


def colour_image(class_images, n=None, classes=MORPHOLOGY_CLASSES, sources=None):
    """RGB image (H, W, 3) in [0, 1] from (classes, H, W) probabilities.

    Pixels with ``n == 0`` (never classified) are black, and so are pixels
    outside ``sources`` (bool (H, W), e.g. the segmentation map's objects)
    when it is given: the sky is then black rather than speckled with the
    network's low source probabilities, and the normalisation boxes around
    bright stars do not show.
    """
    class_images = np.asarray(class_images, dtype=np.float64)
    if class_images.ndim != 3 or class_images.shape[0] != len(classes):
        raise InputError(f"class images must be ({len(classes)}, H, W), "
                         f"got {class_images.shape}")
    names = list(classes)
    if "background" not in names or not set(CLASS_HUES) <= set(names):
        raise InputError("the colour image needs the five Morpheus classes")
    source = np.stack([class_images[names.index(c)] for c in CLASS_HUES])
    ordered = np.sort(source, axis=0)
    saturation = np.clip(ordered[-1] - ordered[-2], 0, 1)
    value = 1.0 - class_images[names.index("background")]
    if n is not None:
        value = np.where(np.asarray(n) > 0, value, 0.0)
    if sources is not None:
        value = np.where(np.asarray(sources, dtype=bool), value, 0.0)
    value = np.clip(value, 0, 1)
    # HSV -> RGB for a hue among CLASS_HUES: v (1 - s + s rgb(hue at full s and v)), the
    # conversion's closed form once the hue is fixed (skimage's hsv2rgb to ~1e-16, and
    # several times faster on a mosaic's picture)
    full = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in CLASS_HUES.values()])
    pure = full[source.argmax(axis=0)]
    return value[..., None] * (1.0 - saturation[..., None] + saturation[..., None] * pure)


def write_colour_png(path, class_images, n=None, classes=MORPHOLOGY_CLASSES, sources=None):
    """Write :func:`colour_image` as an 8-bit PNG (row 0 at the top); returns the path."""
    from PIL import Image

    rgb = np.round(colour_image(class_images, n, classes, sources) * 255).astype(np.uint8)
    path = Path(path)
    with local_file_written_whole(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path
