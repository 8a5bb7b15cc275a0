"""Settings of an Astro R-CNN model (architecture, anchors, detection)."""

from dataclasses import asdict, dataclass, fields

from ...classes import OBJECT_CLASSES
from ...errors import InputError

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

#: The settings of :class:`MaskRCNNConfig` that say how a trained model detects (not what it
#: is): a model's card holds the ones it was evaluated with, the engine runs it with them, and
#: a training run started from a model inherits them.
DETECTION_SETTINGS = ("detection_min_confidence", "detection_nms_threshold",
                      "detection_max_instances", "detection_flips", "detection_flips_score",
                      "detection_flips_min_area", "detection_cross_class_iou")

#: How the score of an object fused over flipped passes is formed (see ``flips.fuse_passes``).
FLIP_SCORES = ("all_passes", "any_class", "finding_passes")


def check_flip_score(value):
    """Raise :class:`~astrodask.errors.InputError` unless ``value`` is one of :data:`FLIP_SCORES`."""
    if value not in FLIP_SCORES:
        raise InputError(f"detection_flips_score must be one of {', '.join(FLIP_SCORES)}, "
                         f"got {value!r}")


def check_min_area(value):
    """``value`` as a pixel count >= 0; :class:`~astrodask.errors.InputError` otherwise."""
    try:
        area = int(value)
    except (TypeError, ValueError):
        area = None
    if area is None or area != value or area < 0 or isinstance(value, bool):
        raise InputError(f"detection_flips_min_area must be a whole number of pixels >= 0, "
                         f"got {value!r}")
    return area


@dataclass
class MaskRCNNConfig:
    """Everything that defines a Mask R-CNN and how it detects.

    Bad values raise :class:`~astrodask.errors.InputError`. The anchor
    scale factors may be given as text (``"1,0.5"``).

    The defaults are the shipped small model: a ResNet-18 layout with reduced
    widths, which trains on a 2-core CPU. Depth 50/101 use bottleneck blocks
    (output width 4x the stage width), as in He et al. (2016).
    """

    bands: tuple = ("g", "r", "z")
    classes: tuple = OBJECT_CLASSES
    backbone_depth: int = 18
    stem_width: int = 32
    stage_widths: tuple = (32, 64, 96, 128)
    fpn_channels: int = 64
    # finest pyramid level read by ROIAlign: 2 (P2, stride 4) or 1 (adds P1 at
    # stride 2, built from the stem before its max-pool, for the smallest RoIs;
    # the RPN always runs on P2..P6)
    roi_min_level: int = 2
    # anchors: one scale per pyramid level P2..P6 (strides 4..64)
    anchor_scales: tuple = (8, 16, 32, 64, 128)
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    # each level's scale times each factor: (1.0, 0.5) adds 4 px anchors on P2
    # (and half-size ones on every level) for faint sources a few pixels across
    anchor_scale_factors: tuple = (1.0,)
    # region proposal network
    rpn_nms_threshold: float = 0.7
    rpn_pre_nms: int = 3000
    rpn_pre_nms_train: int = 1000
    rpn_post_nms_train: int = 300
    rpn_post_nms_inference: int = 1000
    rpn_anchors_per_image: int = 256
    rpn_positive_iou: float = 0.6
    rpn_negative_iou: float = 0.3
    # heads
    rois_per_image: int = 96
    roi_positive_fraction: float = 0.33
    pool_size: int = 7
    mask_pool_size: int = 14
    mask_size: int = 28
    sampling_ratio: int = 2
    head_units: int = 256
    mask_channels: int = 64
    box_std: tuple = (0.1, 0.1, 0.2, 0.2)
    # detection (Astro R-CNN settings)
    detection_min_confidence: float = 0.5
    detection_nms_threshold: float = 0.3
    detection_max_instances: int = 500
    mask_threshold: float = 0.5
    # after the per-class NMS, detections of *different* classes whose boxes
    # overlap by more than this IoU are one object seen twice (a star and a
    # galaxy on the same pixels): the lower-scored one goes. 1.0 = off.
    detection_cross_class_iou: float = 1.0
    # also detect on the 7 other flips/rotations and fuse (8x the work; see flips.py)
    detection_flips: bool = False
    # a fused object's score: its class's scores summed over all passes / the number
    # of passes ("all_passes": a pass that missed it counts 0), every pass's score
    # whatever class it gave ("any_class"), or the mean over the passes that found it
    # as its class ("finding_passes", before session 17); see flips.fuse_passes
    detection_flips_score: str = "all_passes"
    # with detection_flips: fuse the 8 passes only on images where one pass finds a
    # galaxy whose mask holds at least this many pixels, the rest keep that one pass
    # (the flips mostly matter for the pieces of large galaxies; 0: flips everywhere)
    detection_flips_min_area: int = 0
    # input: eq. 1 scale A
    normalisation_scale: float = 1.0

    def __post_init__(self):
        self.bands = tuple(self.bands)
        self.classes = tuple(self.classes)
        self.stage_widths = tuple(self.stage_widths)
        self.anchor_scales = tuple(self.anchor_scales)
        self.anchor_ratios = tuple(float(r) for r in self.anchor_ratios)
        self.anchor_scale_factors = positive_numbers(self.anchor_scale_factors,
                                                     "anchor_scale_factors")
        self.box_std = tuple(float(s) for s in self.box_std)
        self.detection_flips = bool(self.detection_flips)
        self.detection_flips_min_area = check_min_area(self.detection_flips_min_area)
        check_flip_score(self.detection_flips_score)
        if self.backbone_depth not in RESNET_BLOCKS:
            raise InputError(f"backbone_depth must be one of {sorted(RESNET_BLOCKS)}, "
                             f"got {self.backbone_depth}")
        if len(self.stage_widths) != 4:
            raise InputError("stage_widths needs 4 values (ResNet stages C2..C5)")
        if self.roi_min_level not in (1, 2):
            raise InputError(f"roi_min_level must be 1 or 2, got {self.roi_min_level}")
        if len(self.anchor_scales) != 5:
            raise InputError("anchor_scales needs 5 values (pyramid levels P2..P6)")

    @property
    def n_classes(self):
        return len(self.classes)

    @property
    def n_anchors(self):
        """Anchors per feature-map position."""
        return len(self.anchor_ratios) * len(self.anchor_scale_factors)

    def to_dict(self):
        """JSON-ready dict (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values):
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown Mask R-CNN settings: {', '.join(sorted(unknown))}")
        return cls(**values)

    def replace(self, **changes):
        """A copy with some settings changed."""
        values = asdict(self)
        values.update(changes)
        return type(self)(**values)


def positive_numbers(values, name, count=None):
    """``values`` (a sequence or comma-separated text) as a tuple of positive floats.

    Raises :class:`~astrodask.errors.InputError` unless there are numbers,
    ``count`` of them if given, all positive.
    """
    text = values if isinstance(values, str) else ",".join(str(v) for v in values)
    try:
        numbers = tuple(float(v) for v in text.split(","))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) <= 0 or (count is not None and len(numbers) != count):
        wanted = f"{count} positive numbers" if count else "positive numbers"
        raise InputError(f"{name} needs {wanted}, got {values!r}")
    return numbers
