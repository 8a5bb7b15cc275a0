"""Morpheus' training loss (section 3.3): weighted cross-entropy + background Dice."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="astrodask")
def morpheus_loss(y_true, y_pred):
    """Class-weighted cross-entropy plus (1 - Dice) of the background class.

    Each pixel's cross-entropy is divided by the share of the batch's pixels
    whose (dominant) class is its own, weighted by the label's strength, as
    Morpheus does; the Dice term compares the background probability with
    the background label over each window. ``y_true`` is one-hot (or soft)
    ``(n, h, w, classes)``, ``y_pred`` the softmax probabilities, with the
    background class last.
    """
    eps = 1e-7
    n_classes = ops.shape(y_true)[-1]
    flat_true = ops.reshape(y_true, (-1, n_classes))
    flat_pred = ops.clip(ops.reshape(y_pred, (-1, n_classes)), eps, 1.0)
    xent = -ops.sum(flat_true * ops.log(flat_pred), axis=-1)
    dominant = ops.one_hot(ops.argmax(flat_true, axis=-1), n_classes)
    strength = ops.max(flat_true, axis=-1, keepdims=True)
    share = ops.mean(dominant * strength, axis=0)            # per class
    coefficient = ops.sum(dominant * share[None, :], axis=-1)
    weighted = ops.mean(xent / ops.maximum(coefficient, eps))
    bkg_true, bkg_pred = y_true[..., -1], y_pred[..., -1]
    numerator = ops.sum(bkg_true * bkg_pred, axis=(1, 2))
    denominator = ops.sum(bkg_true + bkg_pred, axis=(1, 2))
    dice = ops.mean(2.0 * numerator / ops.maximum(denominator, eps))
    return weighted + (1.0 - dice)
