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
(:func:`astrodask.residual_pass`).

:func:`residual_section` computes any rectangle of the residual from reads
of the image around it, so a mosaic's residual is written block by block;
:func:`symmetric_residual` is the whole-array form. Pixel coordinates are
0-based ``(y, x)`` of the arrays given.
"""

import math

import numpy as np

#: σ (px) of the Gaussian that smooths the image for the templates.
TEMPLATE_SIGMA = 1.5

#: scipy's default reach of a Gaussian filter, in σ.
_TRUNCATE = 4.0


def residual_section(read, segmap, objects, rows, cols, shape, sigma=TEMPLATE_SIGMA):
    """The residual over the rectangle ``rows`` x ``cols`` of an image of ``shape``.

    Parameters
    ----------
    read : callable
        ``read(rows, cols)`` → float array of the image over those slices
        (any rectangle inside ``shape``), flagged pixels as 0.
    segmap : ndarray of int, shape of the rectangle
        Object ids over the rectangle (0: sky).
    objects : sequence of (int, float, float, (int, int, int, int))
        ``(id, y, x, (y0, x0, y1, x1))`` of the objects to take out: centre
        and half-open bounding box of the segment, in image pixels.
    rows, cols : slice
        The rectangle (steps of 1, inside ``shape``).
    shape : (int, int)
        The whole image's shape.
    sigma : float
        σ (px) of the smoothing of the template.

    Returns
    -------
    residual : ndarray of float64
        ``read(rows, cols)`` outside the objects' segments; inside,
        ``image - min(G(x), G(2p - x))`` where the mirrored pixel lies in the
        image, else ``image - G(x)``. ``G`` is the Gaussian smoothing of the
        whole image (reflected at its edges), the same whatever the rectangle.
    region : ndarray of bool
        The pixels changed.
    """
    from scipy import ndimage

    height, width = shape
    residual = np.asarray(read(rows, cols), dtype=np.float64).copy()
    region = np.zeros(residual.shape, dtype=bool)
    margin = int(_TRUNCATE * sigma + 0.5) + 1
    for label, y, x, (by0, bx0, by1, bx1) in objects:
        y0, y1 = max(by0, rows.start), min(by1, rows.stop)
        x0, x1 = max(bx0, cols.start), min(bx1, cols.stop)
        if y0 >= y1 or x0 >= x1:
            continue
        ys, xs = np.nonzero(segmap[y0 - rows.start:y1 - rows.start,
                                   x0 - cols.start:x1 - cols.start] == label)
        if not len(ys):
            continue
        ys, xs = ys + y0, xs + x0
        # The mirror of a pixel about the (sub-pixel) centre, read by bilinear
        # interpolation of the smoothed image: mirroring about the nearest
        # pixel instead leaves a dipole at a bright object's core.
        my, mx = 2 * y - ys, 2 * x - xs
        inside = (my >= 0) & (my <= height - 1) & (mx >= 0) & (mx <= width - 1)
        # One smoothed read covers the pixels and their mirrors; its margin
        # makes the filter's result there the whole image's.
        wy0 = max(min(y0, math.floor(2 * y - y1 + 1)) - margin, 0)
        wy1 = min(max(y1, math.ceil(2 * y - y0) + 1) + margin, height)
        wx0 = max(min(x0, math.floor(2 * x - x1 + 1)) - margin, 0)
        wx1 = min(max(x1, math.ceil(2 * x - x0) + 1) + margin, width)
        smooth = ndimage.gaussian_filter(
            np.asarray(read(slice(wy0, wy1), slice(wx0, wx1)), dtype=np.float64), sigma,
            truncate=_TRUNCATE)
        own = smooth[ys - wy0, xs - wx0]
        mirrored = ndimage.map_coordinates(
            smooth, [np.clip(my, wy0, wy1 - 1) - wy0, np.clip(mx, wx0, wx1 - 1) - wx0], order=1)
        local = (ys - rows.start, xs - cols.start)
        residual[local] -= np.where(inside, np.minimum(own, mirrored), own)
        region[local] = True
    return residual, region


def symmetric_residual(image, segmap, objects, sigma=TEMPLATE_SIGMA):
    """``image`` with each object's symmetric template subtracted inside its segment.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        One band (NaN counts as 0 in the templates and stays NaN).
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
        See :func:`residual_section`.
    region : ndarray of bool, shape (H, W)
        The pixels changed (the objects' segments).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    segmap = np.asarray(segmap)
    if image.shape != segmap.shape:
        raise ValueError(f"image {image.shape} and segmap {segmap.shape} differ in shape")
    boxes = ndimage.find_objects(segmap) if segmap.size else []
    wanted = []
    for label, y, x in objects:
        label = int(label)
        if 1 <= label <= len(boxes) and boxes[label - 1] is not None:
            box = boxes[label - 1]
            wanted.append((label, float(y), float(x),
                           (box[0].start, box[1].start, box[0].stop, box[1].stop)))
    filled = np.nan_to_num(image)
    residual, region = residual_section(lambda r, c: filled[r, c], segmap, wanted,
                                        slice(0, image.shape[0]), slice(0, image.shape[1]),
                                        image.shape, sigma)
    residual[np.isnan(image)] = np.nan
    return residual, region

