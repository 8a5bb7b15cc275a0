"""Object morphology: flux-weighted mean of the pixel classes (Morpheus eq. 16)."""

import numpy as np
from scipy import ndimage

from ..classes import MORPHOLOGY_CLASSES
from ..errors import InputError


def dominant_class(probabilities, names):
    """Name of the most probable class of each row; None where a probability is not finite.

    Parameters
    ----------
    probabilities : array_like, shape (n, len(names))
    names : sequence of str

    Returns
    -------
    ndarray of object, shape (n,)
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    names = np.asarray(names, dtype=object)
    best = names[np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1)]
    return np.where(np.isfinite(probabilities).all(axis=1), best, None)


def object_morphology(labels, flux, class_images, ids=None, classes=MORPHOLOGY_CLASSES):
    """Flux-weighted class probabilities of every labelled object.

    For object O and class k: ``sum_{i in O} f_i p_ik / sum_{i in O} f_i``
    (eq. 16), with negative fluxes counted as 0 (a flux-weighted mean with
    negative weights is meaningless). ``morphology`` renormalises the
    non-background classes to sum to 1, as Morpheus' catalog does.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Objects, 0 = none.
    flux : ndarray, shape (H, W)
        Flux image used as weights.
    class_images : ndarray, shape (classes, H, W)
        Per-pixel class probabilities (e.g. ``mean`` from classify_image).
    ids : array-like of int, optional
        Objects to measure; default every id present.
    classes : sequence of str
        Class names; ``"background"`` (if present) is left out of
        ``morphology``.

    Returns
    -------
    dict of ndarray
        ``id``; ``y``, ``x`` of the brightest pixel; ``flux`` (sum of the
        positive flux); ``weighted`` (n, classes): eq. 16 over all classes;
        ``morphology`` (n, non-background classes) renormalised;
        ``dominant``: name of the largest non-background class; and
        ``class_names`` for the ``morphology`` columns.
    """
    labels = np.asarray(labels)
    class_images = np.asarray(class_images, dtype=np.float64)
    weights = np.clip(np.asarray(flux, dtype=np.float64), 0.0, None)
    if class_images.shape[1:] != labels.shape or weights.shape != labels.shape:
        raise InputError("labels, flux and class images must cover the same pixels")
    if class_images.shape[0] != len(classes):
        raise InputError(f"{class_images.shape[0]} class images for {len(classes)} classes")
    ids = np.unique(labels[labels > 0]) if ids is None else np.asarray(ids)
    total = ndimage.sum_labels(weights, labels, ids)
    weighted = np.stack([ndimage.sum_labels(weights * image, labels, ids)
                         for image in class_images], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = weighted / total[:, None]
    keep = [k for k, name in enumerate(classes) if name != "background"]
    morph = weighted[:, keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        morph = morph / morph.sum(axis=1, keepdims=True)
    peaks = ndimage.maximum_position(np.asarray(flux, np.float64), labels, ids)
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1, 2)
    names = np.asarray([classes[k] for k in keep])
    dominant = np.where(np.isfinite(morph).all(axis=1),
                        names[np.nan_to_num(morph, nan=-1).argmax(axis=1)], "")
    return {"id": ids.astype(np.int64), "y": peaks[:, 0], "x": peaks[:, 1], "flux": total,
            "weighted": weighted, "morphology": morph, "dominant": dominant,
            "class_names": names}
