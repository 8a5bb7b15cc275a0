"""The Mask R-CNN model object, its construction, saving and the ``detect`` entry."""

from functools import lru_cache

import numpy as np

from ...dihedral import DIHEDRAL, transform, untransform
from ..detections import Instances
from ._keras import keras, ops
from .anchors import decode_boxes, generate_anchors
from .backbone import build_backbone
from .config import MaskRCNNConfig
from .detection import nms, paste_masks, select_detections
from .flips import fuse_passes, undo_boxes
from .heads import build_box_head, build_mask_head
from .roi_align import roi_align
from .rpn import build_rpn_head, flatten_rpn_outputs, propose

#: Image sides are padded to a multiple of this (the stride of P6).
SIZE_MULTIPLE = 64


@keras.saving.register_keras_serializable(package="astrodask")
class MaskRCNN(keras.Model):
    """Backbone + FPN, RPN head, box head and mask head, with their settings.

    Calling the model on a batch of standardised images (B, H, W, bands)
    returns ``(pyramid, rpn_logits, rpn_deltas)``: the FPN levels (P2..P6,
    or P1..P6 with ``config.roi_min_level == 1``) and the objectness logits
    (B, N) and deltas (B, N, 4) of all N anchors (the RPN runs on P2..P6).
    The two heads (``box_head``, ``mask_head``) take crops from
    :meth:`pool_rois`; see :func:`detect` for the whole inference path.
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = MaskRCNNConfig.from_dict(config)
        self.config = config or MaskRCNNConfig()
        self.backbone = build_backbone(self.config)
        self.rpn_head = build_rpn_head(self.config)
        self.box_head = build_box_head(self.config)
        self.mask_head = build_mask_head(self.config)

    def call(self, images, training=False):
        pyramid = self.backbone(images, training=training)
        level_outputs = [self.rpn_head(level, training=training) for level in pyramid[-5:]]
        logits, deltas = flatten_rpn_outputs(level_outputs)
        return pyramid, logits, deltas

    def pool_rois(self, pyramid, boxes, batch_index, output_size):
        """ROIAlign crops (N, size, size, C) of ``boxes`` from the levels P_min..P5.

        ``pyramid`` is the first output of calling the model; ``boxes``,
        ``batch_index`` and ``output_size`` are as for
        :func:`astrodask.models.maskrcnn.roi_align.roi_align`, which this
        calls with the model's finest level and sampling ratio.
        """
        return roi_align(pyramid[:-1], boxes, batch_index, output_size,
                         self.config.sampling_ratio, self.config.roi_min_level)

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {"name": self.name, "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_maskrcnn(config=None, **settings):
    """Build a randomly initialised Mask R-CNN.

    Parameters
    ----------
    config : MaskRCNNConfig, optional
        Settings; defaults to the shipped small model.
    **settings
        Individual settings overriding ``config`` (e.g. ``backbone_depth=50``).
    """
    config = config or MaskRCNNConfig()
    if settings:
        config = config.replace(**settings)
    model = MaskRCNN(config, name="maskrcnn")
    model.build()
    return model


def load_maskrcnn(name_or_path="maskrcnn_decam"):
    """Load a shipped Mask R-CNN (``"maskrcnn_decam"``) or one saved as a ``.keras`` file.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped model's name or the path of a file written by
        ``model.save(path)``.

    Returns
    -------
    MaskRCNN
        The model; its card is :func:`astrodask.model_card` of the same name.

    Raises
    ------
    InputError
        If there is no such shipped model or file.
    TypeError
        If the file holds another kind of model.
    """
    from ..card import resolve_model_path

    path = resolve_model_path(name_or_path)
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a Mask R-CNN")
    return model


@lru_cache(maxsize=8)
def cached_anchors(image_shape, scales, ratios, scale_factors=(1.0,)):
    """Anchors for a padded image shape (cached: they depend on nothing else)."""
    anchors = generate_anchors(image_shape, scales, ratios, scale_factors)
    anchors.setflags(write=False)
    return anchors


def pad_images(images):
    """Pad (B, H, W, C) images with zeros (the sky after eq. 1) to multiples of 64."""
    _, height, width, _ = images.shape
    pad_h = -height % SIZE_MULTIPLE
    pad_w = -width % SIZE_MULTIPLE
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return images


#: Head batches are padded to a multiple of this many RoIs, so the compiled
#: head functions see few distinct shapes.
HEAD_BUCKET = 256

#: The mask head's bucket: its convolutions cost ~40x the box head's per RoI, and
#: it sees ~100 detections a block, so padding to 256 would more than double its work.
MASK_HEAD_BUCKET = 64


def run_head(head, rois, bucket=HEAD_BUCKET):
    """Run a head on RoI crops through Keras' compiled predict path.

    Rows are zero-padded to a multiple of ``bucket`` so that XLA (JAX) or
    ``tf.function`` compiles once per bucket, not once per RoI count.
    """
    rois = np.asarray(rois, dtype=np.float32)
    n = len(rois)
    padded = -(-max(n, 1) // bucket) * bucket
    if padded != n:
        rois = np.concatenate([rois, np.zeros((padded - n,) + rois.shape[1:], np.float32)])
    outputs = head.predict_on_batch(rois)
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o)[:n] for o in outputs]
    return np.asarray(outputs)[:n]


def _split(values, counts):
    return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


def detect(model, images, **settings):
    """Detect, classify and segment the sources of standardised images.

    Parameters
    ----------
    model : MaskRCNN
    images : ndarray, shape (B, H, W, bands) or (H, W, bands)
        Images standardised with
        :func:`astrodask.models.maskrcnn.normalise.normalise_bands` (channels last).
    **settings
        Detection settings overriding the model's for this call, e.g.
        ``detection_nms_threshold=0.2`` for dense fields,
        ``detection_min_confidence``, ``detection_flips=False`` for one
        pass instead of the fused 8 flips/rotations, or
        ``detection_flips_min_area`` to fuse them only on the images where
        one pass finds a galaxy at least that large (in mask pixels).

    Returns
    -------
    list of astrodask.evaluate.Instances
        One per image: ``boxes`` (y1, x1, y2, x2; pixel, ends exclusive),
        ``class_ids`` (1 star, 2 galaxy), ``scores`` and boolean ``masks``
        (N, H, W) at image resolution.
    """
    config = model.config.replace(**settings) if settings else model.config
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != len(config.bands):
        raise ValueError(f"expected images (B, H, W, {len(config.bands)}), got {images.shape}")
    shape = images.shape[1:3]
    if config.detection_flips and config.detection_flips_min_area:
        found = _detect_flipped_where_large(model, images, config)
    elif config.detection_flips:
        found = _detect_flipped(model, images, config)
    else:
        found = detect_once(model, images, config)
    if config.detection_cross_class_iou < 1.0:
        found = [_one_class_per_object(f, config.detection_cross_class_iou) for f in found]
    return [Instances(boxes, class_ids, scores,
                      paste_masks(grids, boxes, shape, config.mask_threshold))
            for boxes, class_ids, scores, grids in found]


def _one_class_per_object(found, iou_threshold):
    """Drop detections that overlap a better-scored one of another class (box IoU)."""
    boxes, class_ids, scores, grids = found
    keep = nms(boxes, scores, iou_threshold, len(boxes))
    keep = np.sort(keep)  # keep the per-class NMS order (decreasing score)
    return boxes[keep], class_ids[keep], scores[keep], grids[keep]


#: Most transformed images per network call with ``detection_flips`` (bounds memory).
FLIPS_BATCH = 8


def _detect_flipped(model, images, config):
    """Detections fused over the 8 flips/rotations (see :mod:`.flips`), per image.

    The (pass, image) views of one shape (all 8 passes for square images)
    share network calls of ``FLIPS_BATCH`` views, so the calls keep one batch
    shape whatever the number of images (each new shape is a new trace).
    """
    n_images, height, width, _ = images.shape
    by_shape = {}
    for k, flip in DIHEDRAL:
        for i in range(n_images):
            by_shape.setdefault(k % 2 if height != width else 0, []).append((k, flip, i))
    per_pass = {p: [None] * n_images for p in DIHEDRAL}
    for views in by_shape.values():
        for start in range(0, len(views), FLIPS_BATCH):
            chunk = views[start:start + FLIPS_BATCH]
            found = detect_once(model, np.stack([transform(images[i], k, flip)
                                                 for k, flip, i in chunk]), config)
            for (k, flip, i), (b, c, s, m) in zip(chunk, found):
                per_pass[k, flip][i] = (undo_boxes(b, k, flip, (height, width)), c, s,
                                        untransform(m, k, flip, axes=(1, 2)))
    return [fuse_passes([per_pass[p][i] for p in DIHEDRAL],
                        config.detection_nms_threshold, config.detection_max_instances,
                        score=config.detection_flips_score)
            for i in range(n_images)]


def _detect_flipped_where_large(model, images, config):
    """One pass on every image; the 8 fused flips on those where it finds a galaxy
    whose mask holds at least ``config.detection_flips_min_area`` pixels.

    A single pass reports pieces of large galaxies (spiral arms, HII regions)
    as sources of their own that the fused flips score low; elsewhere it gives
    the fused catalog at an eighth of the work (BENCHMARKS.md, session 43).
    """
    found = detect_once(model, images, config)
    galaxy = config.classes.index("galaxy")
    large = [i for i, (boxes, class_ids, _, grids) in enumerate(found)
             if _holds_mask_of(grids[class_ids == galaxy], boxes[class_ids == galaxy],
                               images.shape[1:3], config.mask_threshold,
                               config.detection_flips_min_area)]
    if large:
        for i, fused in zip(large, _detect_flipped(model, images[large], config)):
            found[i] = fused
    return found


def _holds_mask_of(grids, boxes, shape, threshold, min_area):
    """Whether one of these masks, pasted onto an image of ``shape``, holds ``min_area`` pixels.

    A mask holds only pixels whose centres lie in its box, at most
    ``(y2 - y1 + 1) * (x2 - x1 + 1)`` of them, so only boxes that large are
    pasted (the masks of the images that keep this pass are pasted by
    :func:`detect` anyway).
    """
    y1, x1, y2, x2 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    could = (y2 - y1 + 1) * (x2 - x1 + 1) >= min_area
    if not could.any():
        return False
    pasted = paste_masks(grids[could], boxes[could], shape, threshold)
    return bool(pasted.sum(axis=(1, 2)).max() >= min_area)


def detect_once(model, images, config):
    """One forward pass and detection, masks left as box-relative grids.

    Returns, per image, ``(boxes, class_ids, scores, mask_grids)`` with the
    grids (N, mask_size, mask_size) of the detected class' mask probability.
    """
    n_images, height, width, _ = images.shape
    padded = pad_images(images)
    pyramid, logits, deltas = model.predict_on_batch(padded)
    # once here, not in every ROIAlign gather (each would copy the whole level)
    pyramid = [ops.convert_to_tensor(level) for level in pyramid]
    anchors = cached_anchors(padded.shape[1:3], config.anchor_scales, config.anchor_ratios,
                             config.anchor_scale_factors)

    proposals = [propose(logits[i], deltas[i], anchors, (height, width), config,
                         config.rpn_post_nms_inference) for i in range(n_images)]
    counts = [len(p) for p in proposals]
    all_proposals = np.concatenate(proposals) if proposals else np.zeros((0, 4), np.float32)
    batch_index = np.repeat(np.arange(n_images), counts)
    if len(all_proposals):
        pooled = model.pool_rois(pyramid, all_proposals, batch_index, config.pool_size)
        class_logits, box_deltas = run_head(model.box_head, pooled)
        probs = ops.convert_to_numpy(ops.softmax(class_logits, axis=-1))
        refined = ops.convert_to_numpy(decode_boxes(
            ops, box_deltas, ops.convert_to_tensor(all_proposals[:, None, :]), config.box_std))
    else:
        probs = np.zeros((0, config.n_classes), np.float32)
        refined = np.zeros((0, config.n_classes, 4), np.float32)

    picked = []
    for i, (props, prob, boxes) in enumerate(zip(proposals, _split(probs, counts),
                                                 _split(refined, counts))):
        picked.append(select_detections(props, prob, boxes, config, (height, width)))
    det_counts = [len(p[0]) for p in picked]
    det_boxes = np.concatenate([p[0] for p in picked])
    det_classes = np.concatenate([p[1] for p in picked])
    if len(det_boxes):
        mask_rois = model.pool_rois(pyramid, det_boxes,
                                    np.repeat(np.arange(n_images), det_counts),
                                    config.mask_pool_size)
        mask_logits = run_head(model.mask_head, mask_rois, MASK_HEAD_BUCKET)
        mask_probs = ops.convert_to_numpy(ops.sigmoid(mask_logits))
        mask_probs = mask_probs[np.arange(len(det_classes)), :, :, det_classes]
    else:
        mask_probs = np.zeros((0, config.mask_size, config.mask_size), np.float32)
    return [found + (grids,) for found, grids in zip(picked, _split(mask_probs, det_counts))]
