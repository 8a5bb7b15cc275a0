"""What a detector returns for one image, and the geometry of its boxes and masks.

:class:`Instances` is the result type of the Mask R-CNN (and the form truth
takes in evaluation). Boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``,
``x2`` exclusive, so the box of a mask covering rows ``r0..r1`` is
``(r0, c0, r1 + 1, c1 + 1)``. Class ids follow
:data:`astrodask.classes.OBJECT_CLASSES` (0 is background).
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Instances:
    """Objects of one image: truth (``scores`` None) or detections.

    Attributes
    ----------
    boxes : ndarray, shape (N, 4)
        ``(y1, x1, y2, x2)`` pixel boxes, ``y2``/``x2`` exclusive.
    class_ids : ndarray, shape (N,)
        Integer classes (1 star, 2 galaxy).
    scores : ndarray, shape (N,), optional
        Confidence of each detection; absent for truth.
    masks : ndarray, shape (N, H, W), optional
        Boolean instance masks, needed only for ``iou_type="mask"``.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray = None
    masks: np.ndarray = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(self.class_ids) != len(self.boxes):
            raise ValueError("boxes and class_ids differ in length")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(self.scores) != len(self.boxes):
                raise ValueError("boxes and scores differ in length")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)

    def __len__(self):
        return len(self.boxes)

    def select(self, keep):
        """Return the instances picked by the boolean or integer index ``keep``."""
        return Instances(self.boxes[keep], self.class_ids[keep],
                         None if self.scores is None else self.scores[keep],
                         None if self.masks is None else self.masks[keep])


def boxes_from_masks(masks):
    """Tight ``(y1, x1, y2, x2)`` boxes (exclusive ends) of boolean masks (N, H, W)."""
    masks = np.asarray(masks, dtype=bool)
    boxes = np.zeros((len(masks), 4))
    for i, mask in enumerate(masks):
        box = mask_box(mask)
        if box is not None:
            boxes[i] = box[0].start, box[1].start, box[0].stop, box[1].stop
    return boxes


def mask_box(mask):
    """``(rows, cols)`` slices of a boolean mask's tight box; None where it is empty.

    Per-object work on a window (a core, a class, an anchor) reads the box,
    not the whole window: a row-major scan of the box meets the mask's
    pixels in the same order as one of the window, so argmax ties and sums
    come out the same.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def box_area(boxes):
    """Area of ``(y1, x1, y2, x2)`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a, b):
    """Pairwise IoU of box sets ``a`` (N, 4) and ``b`` (M, 4); returns (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def mask_iou(a_masks, a_boxes, b_masks, b_boxes):
    """Pairwise IoU of boolean masks, computed only where the boxes overlap."""
    iou = np.zeros((len(a_masks), len(b_masks)))
    overlap = box_iou(a_boxes, b_boxes) > 0
    a_sums = a_masks.reshape(len(a_masks), -1).sum(axis=1)
    b_sums = b_masks.reshape(len(b_masks), -1).sum(axis=1)
    for i, j in zip(*np.nonzero(overlap)):
        y1 = int(min(a_boxes[i, 0], b_boxes[j, 0]))
        x1 = int(min(a_boxes[i, 1], b_boxes[j, 1]))
        y2 = int(np.ceil(max(a_boxes[i, 2], b_boxes[j, 2])))
        x2 = int(np.ceil(max(a_boxes[i, 3], b_boxes[j, 3])))
        inter = np.count_nonzero(a_masks[i, y1:y2, x1:x2] & b_masks[j, y1:y2, x1:x2])
        union = a_sums[i] + b_sums[j] - inter
        iou[i, j] = inter / union if union else 0.0
    return iou
