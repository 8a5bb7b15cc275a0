"""Morpheus Algorithm 1: segmentation from the background class image.

Pixels the network is certain are background (``background >= 1``) seed the
background, pixels with ``background <= threshold`` (or given source
positions) seed the sources; a watershed of the Sobel gradient of the
background image grows them, and connected source regions get unique labels.
"""

import numpy as np
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import watershed

from ..errors import InputError


def segment(background, threshold=0.0, mask=None, positions=None, background_level=1.0):
    """Segment sources from a background-class image (Morpheus Algorithm 1).

    Parameters
    ----------
    background : ndarray, shape (H, W)
        Background class image (mean probability or rank vote), in [0, 1].
    threshold : float
        Pixels with ``background <= threshold`` seed the sources; in [0, 1).
    mask : ndarray of bool, optional
        Pixels to segment (e.g. ``n > 0`` from the classification); the rest
        get label 0.
    positions : array-like of (y, x), optional
        Given source positions; each seeds its own source (instead of the
        threshold), so touching sources are kept apart.
    background_level : float
        Pixels with ``background >= background_level`` seed the background
        (Morpheus: exactly 1).

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 for background, 1..N for sources, numbered in raster order of
        their first pixel (given positions: in the order given, positions
        that fall on background get no label).
    """
    background = np.asarray(background, dtype=np.float64)
    if background.ndim != 2:
        raise InputError(f"background must be a 2-d image, got shape {background.shape}")
    if not 0 <= threshold < 1:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    mask = np.ones(background.shape, bool) if mask is None else np.asarray(mask, bool)
    markers = np.zeros(background.shape, np.int32)
    markers[(background >= background_level) & mask] = 1
    if positions is None:
        markers[(background <= threshold) & mask] = 2
    else:
        ys, xs = _pixel_positions(positions, background.shape)
        markers[ys, xs] = np.arange(2, len(ys) + 2)
    basins = watershed(sobel(background), markers, mask=mask)
    if positions is None:
        labels, _ = ndimage.label(basins == 2)
    else:
        labels = np.where(basins >= 2, basins - 1, 0)
    labels[~mask] = 0
    return labels.astype(np.int32)


def _pixel_positions(positions, shape):
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    ys, xs = np.round(positions).astype(np.int64).T
    outside = (ys < 0) | (xs < 0) | (ys >= shape[0]) | (xs >= shape[1])
    if outside.any():
        raise InputError(f"source position {positions[outside][0].tolist()} lies outside "
                         f"the {shape[0]}x{shape[1]} image")
    return ys, xs
