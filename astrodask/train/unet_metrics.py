"""Pixel metrics of Morpheus Table 3: accuracy per class and background IoU(B)."""

import numpy as np

from ..classes import MORPHOLOGY_CLASSES

#: Background thresholds B of the IoU(B) metric.
IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def pixel_metrics(probabilities, labels, valid=None, classes=MORPHOLOGY_CLASSES):
    """Accuracy per class and IoU(B) of the background.

    Parameters
    ----------
    probabilities : ndarray, shape (classes, ...) 
        Class probabilities per pixel (class axis first).
    labels : ndarray of int, shape (...)
        True class code per pixel.
    valid : ndarray of bool, optional
        Pixels to count (e.g. ``n > 0``).

    Returns
    -------
    dict
        ``accuracy``: overall pixel accuracy; ``accuracy_<class>``: fraction
        of that class's pixels given it as top class (None if it has none);
        ``iou_<B>``: mean over {background, source} of the IoU between
        ``p_background >= B`` and the true background, as Morpheus computes
        it; ``pixels_<class>``: pixel counts.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
    top = probabilities.argmax(axis=0)[valid]
    truth = labels[valid]
    out = {"accuracy": float((top == truth).mean()), "pixels": int(truth.size)}
    for code, name in enumerate(classes):
        mine = truth == code
        out[f"pixels_{name}"] = int(mine.sum())
        out[f"accuracy_{name}"] = float((top[mine] == code).mean()) if mine.any() else None
    background = classes.index("background")
    true_bkg = truth == background
    p_bkg = probabilities[background][valid]
    for threshold in IOU_THRESHOLDS:
        pred_bkg = p_bkg >= threshold
        ious = []
        for pred, true in ((pred_bkg, true_bkg), (~pred_bkg, ~true_bkg)):
            union = (pred | true).sum()
            ious.append((pred & true).sum() / union if union else 1.0)
        out[f"iou_{threshold}"] = float(np.mean(ious))
    return out
