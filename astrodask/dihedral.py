"""The 8 flips/rotations of an image (the dihedral group D4) and their inverses.

A pass ``(k, flip)`` mirrors the image left-right when ``flip`` is set, then
turns it by ``k`` quarter turns (``numpy.rot90``, counter-clockwise). Both the
U-Net's fast mode and the Mask R-CNN's fused detection average over them.
"""

import numpy as np

#: The 8 passes ``(k, flip)``: quarter turns, mirror first.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def transform(array, k, flip, axes=(0, 1)):
    """Apply pass ``(k, flip)`` to the image plane ``axes`` (rows, columns) of ``array``.

    Returns a C-contiguous copy, ready for a model call.
    """
    if flip:
        array = np.flip(array, axis=axes[1])
    return np.ascontiguousarray(np.rot90(array, k, axes=axes))


def untransform(array, k, flip, axes=(0, 1)):
    """Undo pass ``(k, flip)`` on ``array`` (a view: rotate back, then mirror)."""
    array = np.rot90(array, -k, axes=axes)
    return np.flip(array, axis=axes[1]) if flip else array
