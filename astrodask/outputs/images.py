"""Quick-look pictures: the mosaic with object outlines, and the Morpheus colour image.

Large mosaics are shown downsampled (every k-th pixel) so a picture stays a
few megapixels. Pictures are drawn with y increasing upwards, as FITS viewers
show images.
"""

import math

import numpy as np

#: Longest side of a quick-look picture, in pixels.
MAX_SIDE = 2048

#: Outline colour of each detector class (0 unclassified, 1 star, 2 galaxy).
CLASS_COLOURS = np.array([[255, 0, 255], [0, 255, 255], [255, 210, 0]], dtype=np.uint8)


def preview_step(height, width, max_side=MAX_SIDE):
    """Pixel step that brings the longer side down to at most ``max_side``."""
    return max(1, math.ceil(max(height, width) / max_side))


def asinh_grey(image):
    """Asinh-stretched 8-bit grey image of a 2-D array (robust black and white points)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(finite, [50, 99.8])
    noise = max(np.percentile(finite, 84) - low, 1e-12)
    scaled = np.arcsinh(np.clip(np.nan_to_num(image, nan=low) - low, 0, None) / noise)
    top = max(np.arcsinh(max(high - low, 0) / noise), 1e-12)
    return np.round(np.clip(scaled / top, 0, 1) * 255).astype(np.uint8)


def overview_rgb(image, labels, class_of_label):
    """RGB overview: grey image with each object's outline coloured by its class.

    Parameters
    ----------
    image : ndarray (h, w)
        Detection image (e.g. the sum of the bands), already downsampled.
    labels : ndarray of int (h, w)
        Segmentation map at the same sampling.
    class_of_label : ndarray of int
        Class code of each object ID (index 0 unused).
    """
    from skimage.segmentation import find_boundaries

    grey = asinh_grey(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    rgb[edges] = CLASS_COLOURS[np.clip(class_of_label[labels[edges]], 0, 2)]
    return rgb


def save_png(location, rgb):
    """Write an (h, w, 3) uint8 array as PNG, y upwards, whole (local path or URL)."""
    import io

    from PIL import Image

    from .. import storage

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[::-1])).save(buffer, format="PNG")
    storage.put_bytes(location, buffer.getvalue())
    return location
