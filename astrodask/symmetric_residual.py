"""Bright objects taken out of an image by their symmetric templates, for a second detection pass.

A faint source on the flank of a bright galaxy often lies inside the bright
galaxy's segment and is never detected on its own (the ``hst`` deep fields'
main loss; ``benchmarks/mosaic_quality.py`` counts such misses). The SDSS
deblender's idea removes the bright object's light: a galaxy is close to
symmetric under a rotation by 180° about its centre ``p``, a companion is
not, so ``min(G(x), G(2p - x))`` (``G`` the image smoothed by a Gaussian)
is a template of the galaxy without the companion, and the residual
``I - template`` holds the companion on a flat, noisy sky. A detector run
on that residual finds what the bright object's light hid
(``benchmarks/residual_pass.py``).

Pixel coordinates are 0-based ``(y, x)`` of the arrays given.
"""

import numpy as np

#: σ (px) of the Gaussian that smooths the image for the templates.
TEMPLATE_SIGMA = 1.5


def symmetric_residual(image, segmap, objects, sigma=TEMPLATE_SIGMA):
    """``image`` with each object's symmetric template subtracted inside its segment.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        One band.
    segmap : ndarray of int, shape (H, W)
        Object ids per pixel (0: sky), as the merge's ``segmap.fits``.
    objects : iterable of (int, float, float)
        ``(id, y, x)`` of the objects to take out: their segments in
        ``segmap`` and their centres (0-based pixels).
    sigma : float
        σ (px) of the smoothing of the template.

    Returns
    -------
    residual : ndarray of float64, shape (H, W)
        ``image`` outside those segments; inside, ``image - min(G(x), G(2p - x))``
        where the mirrored pixel lies in the image, else ``image - G(x)``.
    region : ndarray of bool, shape (H, W)
        The pixels changed (the objects' segments).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    segmap = np.asarray(segmap)
    if image.shape != segmap.shape:
        raise ValueError(f"image {image.shape} and segmap {segmap.shape} differ in shape")
    smooth = ndimage.gaussian_filter(np.nan_to_num(image), sigma)
    residual = image.copy()
    region = np.zeros(image.shape, dtype=bool)
    height, width = image.shape
    wanted = {int(i): (float(y), float(x)) for i, y, x in objects}
    if not wanted:
        return residual, region
    boxes = ndimage.find_objects(segmap)
    for label, (y, x) in wanted.items():
        if label < 1 or label > len(boxes) or boxes[label - 1] is None:
            continue
        box = boxes[label - 1]
        ys, xs = np.nonzero(segmap[box] == label)
        ys, xs = ys + box[0].start, xs + box[1].start
        my, mx = 2 * int(round(y)) - ys, 2 * int(round(x)) - xs
        inside = (my >= 0) & (my < height) & (mx >= 0) & (mx < width)
        mirrored = smooth[np.clip(my, 0, height - 1), np.clip(mx, 0, width - 1)]
        template = np.where(inside, np.minimum(smooth[ys, xs], mirrored), smooth[ys, xs])
        residual[ys, xs] = image[ys, xs] - template
        region[ys, xs] = True
    return residual, region
