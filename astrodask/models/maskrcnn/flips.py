"""Test-time flips: detect on the 8 flips/rotations of an image and fuse the results.

Each pass ``(k, flip)`` of :mod:`astrodask.dihedral` gives detections that
are mapped back to the original frame (boxes here, the box-relative mask
grids with :func:`astrodask.dihedral.untransform`) and the passes are fused:
detections of different passes that overlap (box IoU >= ``FUSE_IOU``) are
one object, whose box is their score-weighted mean and whose score counts
the passes that missed it as 0 (as in weighted boxes fusion). The group of 8
is closed, so the fused detections of a flipped image are the flipped
detections of the original.
"""

import numpy as np

from ..detections import box_iou
from .config import check_flip_score
from .detection import per_class_nms

#: Box IoU above which detections of different passes are the same object.
FUSE_IOU = 0.5


def undo_boxes(boxes, k, flip, shape):
    """Map ``(y1, x1, y2, x2)`` boxes found on a transformed image back to the original.

    Parameters
    ----------
    boxes : ndarray (N, 4)
        Boxes in the transformed image's pixel frame (ends exclusive).
    k, flip
        The pass that made the transformed image.
    shape : (H, W)
        The original image's shape.
    """
    height, width = shape
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    y1, x1, y2, x2 = boxes.T
    # ``rows``: the height of the frame being undone (odd turns swap the sides)
    rows = width if k % 2 else height
    for _ in range(k % 4):
        # a quarter turn takes (y, x) of a frame of width w to (w - x, y), and the
        # turned frame's height is w: so (y', x') came from (x', rows - y')
        y1, x1, y2, x2 = x1, rows - y2, x2, rows - y1
        rows = height + width - rows
    if flip:
        x1, x2 = width - x2, width - x1
    return np.stack([y1, x1, y2, x2], axis=1).astype(np.float32)


def fuse_passes(passes, nms_threshold, max_instances, score="all_passes"):
    """Fuse the detections of several passes over one image (all in its frame).

    Detections are visited by decreasing score; each unvisited one gathers the
    unvisited detections with box IoU >= :data:`FUSE_IOU`, keeping the best of
    each pass. The object's class is the one with the largest summed score,
    its box the score-weighted mean box and its mask grid the score-weighted
    mean grid. Per-class NMS then runs as for a single pass.

    Its score is the sum of that class's scores over the passes divided by
    the number of passes (``score="all_passes"``): a pass that did not find
    it, or found it as another class, counts 0, so an object that a few
    orientations of the image happen to show scores low. This makes the score
    steadier against the window an object falls in (a faint source found by
    3 of 8 passes in one window and 4 in the next moves by 1/8 of a pass's
    score, where the mean of the finding passes jumps about at random) and
    ranks the objects better. ``"any_class"`` sums every pass's score whatever
    class the pass gave, over the number of passes: the score says how sure
    the passes are that a source is there, and a faint source that some
    passes call a star and others a galaxy is not split into two weak
    halves (its class is still the one with the largest summed score).
    ``"finding_passes"`` is the mean over the passes that gave the class (the
    score before session 17; every fused score is then at least the passes'
    ``detection_min_confidence``).

    Parameters
    ----------
    passes : list of (boxes, class_ids, scores, mask_grids)
        Each pass's detections, already mapped back to the image's frame.
    nms_threshold : float
        Per-class NMS threshold applied to the fused objects.
    max_instances : int
        Most objects kept (by score).
    score : {"all_passes", "any_class", "finding_passes"}
        How the fused score is formed (above).

    Returns
    -------
    boxes (M, 4), class_ids (M,), scores (M,), mask_grids (M, S, S)
    """
    check_flip_score(score)
    boxes = np.concatenate([p[0] for p in passes]).astype(np.float64)
    class_ids = np.concatenate([p[1] for p in passes])
    scores = np.concatenate([p[2] for p in passes]).astype(np.float64)
    grids = np.concatenate([p[3] for p in passes]).astype(np.float64)
    pass_ids = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(passes)])
    overlap = box_iou(boxes, boxes) >= FUSE_IOU
    free = np.ones(len(boxes), bool)
    fused = []
    for i in np.argsort(-scores, kind="stable"):
        if not free[i]:
            continue
        near = np.flatnonzero(free & overlap[i])
        # one detection per pass: the best (``near`` is few, so a loop is fine)
        members = np.array([max(near[pass_ids[near] == p], key=lambda j: scores[j])
                            for p in np.unique(pass_ids[near])])
        free[members] = False
        classes = np.unique(class_ids[members])
        sums = [scores[members][class_ids[members] == c].sum() for c in classes]
        best_class = classes[int(np.argmax(sums))]
        weights = scores[members] / scores[members].sum()
        if score == "any_class":
            fused_score = scores[members].sum() / len(passes)
        elif score == "all_passes":
            fused_score = max(sums) / len(passes)
        else:
            fused_score = max(sums) / np.count_nonzero(class_ids[members] == best_class)
        fused.append((weights @ boxes[members], best_class, fused_score,
                      np.tensordot(weights, grids[members], axes=1)))
    if not fused:
        size = passes[0][3].shape[1:] if passes else (0, 0)
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                np.zeros((0,) + tuple(size), np.float32))
    out_boxes, out_classes, out_scores, out_grids = (np.array(v) for v in zip(*fused))
    kept = per_class_nms(out_boxes, out_classes, out_scores, nms_threshold, max_instances)
    return (out_boxes[kept].astype(np.float32), out_classes[kept].astype(np.int64),
            out_scores[kept].astype(np.float32), out_grids[kept].astype(np.float32))
