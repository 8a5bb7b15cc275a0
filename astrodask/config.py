"""Run configuration: dataclasses with YAML in and out.

Every option of ``astrodask run`` lives here, so a run can be described by a
YAML file (``--config run.yaml``) and command-line flags override it. The
resolved configuration is stored beside the outputs.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import InputError, first_line


@dataclass
class UnetOptions:
    """How the U-Net runs on each tile.

    Attributes
    ----------
    mode : {"fast", "faithful"}
        Fully convolutional over the tile, or Morpheus' 40x40 sliding windows.
    stride : int
        Window stride of the faithful mode (1 reproduces Morpheus).
    flips : bool
        Fast mode: average the 8 flips/rotations (adds variance and votes).
    outputs : list of str or str
        Which per-pixel products to keep: ``mean``, ``var``, ``votes`` (a
        list or comma-separated text; default ``mean`` only).
    """

    mode: str = "fast"
    stride: int = 4
    flips: bool = False
    outputs: list = field(default_factory=lambda: ["mean"])

    def __post_init__(self):
        if isinstance(self.outputs, str):
            self.outputs = split_list(self.outputs)


@dataclass
class MaskRCNNOptions:
    """Detection settings of the Mask R-CNN; ``None`` keeps the model card's.

    The engine runs a model as its card says (the settings it was evaluated
    with) unless an option here is given; ``run.json`` records what was used.

    Attributes
    ----------
    min_confidence, nms_threshold : float, optional
        Lowest score kept, and the per-class NMS threshold (card of
        ``maskrcnn_decam``: 0.5 and 0.3, Astro R-CNN's).
    max_detections : int, optional
        Most detections per tile (card: 500).
    flips : bool, optional
        Detect on the 8 flips/rotations of each tile and fuse them (8x the
        work; on for the shipped ``maskrcnn_decam``).
    flips_min_area : int, optional
        With ``flips``: fuse the 8 passes only on windows where one pass
        finds a galaxy whose mask holds at least this many pixels; the other
        windows keep that pass (``None``: the card's
        ``detection_flips_min_area``; 0: the flips on every window).
    psf_classes : {"auto", "on", "off"}
        Star/galaxy from the card's PSF-aware model (each source's
        concentration relative to the mosaic's PSF measured at ingest,
        :mod:`astrodask.star_galaxy`) instead of the network's class:
        ``auto`` where the mosaic's FWHM lies outside the range the network
        was trained on, ``on`` always, ``off`` never (``true`` / ``false``
        are read as on / off). Needs a card with a ``star_galaxy`` model and
        a measured PSF.
    fold_fragments : float, optional
        When a U-Net runs too: a detection that touches a larger one, both
        called irregular by the U-Net, with less than this fraction of its
        area, is a knot of that galaxy and joins it
        (:mod:`astrodask.fragments`); ``None`` keeps the card's
        ``fold_irregular_fragments`` (``maskrcnn_hst``: 0.5, ``maskrcnn_decam``:
        0), 0 turns it off.
    centres : bool, optional
        One detection per centre of the card's centre network
        (:mod:`astrodask.centre_segments`): ``None`` where the card has one,
        ``False`` never (the Mask R-CNN's own instances).
    deblend_contrast : float, optional
        With the centre network: a detection whose light above the saddle to
        a neighbour of brighter peak is under this fraction of its
        footprint's light joins that neighbour
        (:func:`astrodask.centre_segments.merge_low_contrast`; SExtractor's
        ``DEBLEND_MINCONT``, 0.005 by default there). ``None`` keeps the
        card's ``centres.deblend_contrast`` (none for ``maskrcnn_decam``), 0
        turns it off. For real images of large galaxies, whose arms and HII
        regions the network marks as sources.
    reclaim_sigma : float, optional
        With the centre network: a pixel of a detection's watershed basin
        goes to a brighter neighbour when the light at its mirror image
        through that neighbour's centre explains it to within this many noise
        σ (:func:`astrodask.centre_segments.reclaim_host_light`: a faint
        source on a galaxy's disk no longer takes the wedge of the disk behind
        it). ``None`` keeps the card's ``centres.reclaim_sigma``, 0 turns it
        off.
    deblend_snr : float, optional
        Without a centre network: a Mask R-CNN instance over several peaks
        is split where a peak's light above the saddle to a brighter one has
        at least this S/N (:mod:`astrodask.instance_deblend`). ``None``
        keeps the card's ``deblend_instances.min_snr`` (``maskrcnn_hst``:
        10, for the instances the U-Net calls irregular only, split by its
        classes; ``maskrcnn_decam`` has a centre network), 0 turns it off.
    """

    min_confidence: float = None
    nms_threshold: float = None
    max_detections: int = None
    flips: bool = None
    flips_min_area: int = None
    psf_classes: str = "auto"
    fold_fragments: float = None
    centres: bool = None
    deblend_contrast: float = None
    reclaim_sigma: float = None
    deblend_snr: float = None

    def __post_init__(self):
        if self.psf_classes is True or self.psf_classes is False:
            self.psf_classes = "on" if self.psf_classes else "off"

    def overrides(self):
        """The given options as Mask R-CNN detection settings (``detection_*`` names)."""
        names = {"min_confidence": "detection_min_confidence",
                 "nms_threshold": "detection_nms_threshold",
                 "max_detections": "detection_max_instances", "flips": "detection_flips",
                 "flips_min_area": "detection_flips_min_area"}
        return {names[k]: v for k, v in asdict(self).items()
                if v is not None and k in names}


@dataclass
class RunConfig:
    """Everything ``astrodask run`` needs besides the mosaic and the output folder.

    Attributes
    ----------
    models : list of str or str, optional
        A list, or one comma-separated string. ``unet`` / ``maskrcnn`` (the shipped model for the mosaic's bands), a
        shipped model name (``morpheus``, ``morpheus_decam``,
        ``maskrcnn_decam``) or a path to a ``.keras`` file with a model card.
        Default (``None``): every kind of shipped model that takes the
        mosaic's bands (Mask R-CNN for detection and classes, U-Net for
        morphology).
    band_map : dict or str, optional
        Model band → mosaic band, for models whose bands are named otherwise;
        a dict or ``"MODEL=MOSAIC,..."`` text (``"H=f160w,J=f125w"``). Every
        pair needs both names.
    n_workers, threads_per_worker : int, optional
        Local cluster size; default one single-threaded worker per core.
    gpus : list of int or "all", optional
        Run on a dask-cuda ``LocalCUDACluster`` over these GPUs (also as
        text: ``"all"`` or ``"0,1"``).
    scheduler, scheduler_file : str, optional
        Join an existing cluster instead of starting one.
    gpu_workers : bool
        On an existing cluster, send tasks only to workers that advertise the
        ``GPU`` resource (``dask worker --resources GPU=1``), so a cluster with
        CPU and GPU worker groups runs the models on the GPU ones.
    batch_size : int, optional
        Tiles per task. Default 4 when a Mask R-CNN runs (it takes the tiles of
        a task in one model call, which is faster per tile), otherwise 1: the
        U-Net runs one window per call anyway, and one-tile tasks keep every
        worker busy when there are few windows per worker.
    restart : bool
        Ignore done markers and recompute every tile.
    report : str, optional
        Write Dask's performance report HTML to this path (``""``:
        ``report.html`` in the results folder).
    warm_up : bool
        Run each model once on an empty window when a worker loads it, so
        that the run's compute time holds no graph tracing (for timing
        benchmarks). Off by default: it costs about a task's work per worker
        (the Mask R-CNN's 8 flipped views, ~10 s on one CPU core) and the
        first task traces the same graphs anyway.
    """

    models: list = None
    band_map: dict = field(default_factory=dict)
    n_workers: int = None
    threads_per_worker: int = None
    gpus: object = None
    scheduler: str = None
    scheduler_file: str = None
    gpu_workers: bool = False
    batch_size: int = None
    restart: bool = False
    report: str = None
    warm_up: bool = False
    unet: UnetOptions = field(default_factory=UnetOptions)
    maskrcnn: MaskRCNNOptions = field(default_factory=MaskRCNNOptions)

    def __post_init__(self):
        if self.band_map is None:
            self.band_map = {}
        if isinstance(self.models, str):
            self.models = split_list(self.models)
        if isinstance(self.band_map, str):
            self.band_map = parse_band_map(self.band_map)
        if isinstance(self.gpus, str) and self.gpus != "all":
            try:
                self.gpus = [int(g) for g in split_list(self.gpus)]
            except ValueError:
                raise InputError(f"gpus must be all or GPU numbers like 0,1; got {self.gpus!r}") from None

    def validate(self):
        """Check values; raise :class:`~astrodask.errors.InputError` on the first bad one."""
        if self.models is not None and not self.models:
            raise InputError("no models given (e.g. --models unet,maskrcnn)")
        check_band_map(self.band_map)
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        for name in ("n_workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.scheduler and self.scheduler_file:
            raise InputError("give --scheduler or --scheduler-file, not both")
        if self.gpus is not None and (self.scheduler or self.scheduler_file):
            raise InputError("--gpus starts a local GPU cluster; it cannot be combined "
                             "with --scheduler (use --gpu-workers there)")
        if self.unet.mode not in ("fast", "faithful"):
            raise InputError(f"unet mode must be fast or faithful, got {self.unet.mode!r}")
        if self.unet.stride < 1:
            raise InputError(f"unet stride must be at least 1, got {self.unet.stride}")
        unknown = set(self.unet.outputs) - {"mean", "var", "votes"}
        if unknown or not self.unet.outputs:
            raise InputError(f"unet outputs must be among mean, var, votes; got "
                             f"{', '.join(self.unet.outputs)}")
        detection = self.maskrcnn
        if detection.min_confidence is not None and not 0 <= detection.min_confidence <= 1:
            raise InputError("maskrcnn min_confidence must lie in [0, 1]")
        if detection.nms_threshold is not None and not 0 < detection.nms_threshold <= 1:
            raise InputError("maskrcnn nms_threshold must lie in (0, 1]")
        if detection.max_detections is not None and detection.max_detections < 1:
            raise InputError("maskrcnn max_detections must be at least 1")
        if self.maskrcnn.flips not in (None, True, False):
            raise InputError(f"maskrcnn flips must be true or false, got {self.maskrcnn.flips!r}")
        area = detection.flips_min_area
        if area is not None and (isinstance(area, bool) or not isinstance(area, int) or area < 0):
            raise InputError(f"maskrcnn flips_min_area must be a whole number of pixels >= 0, "
                             f"got {area!r}")
        if self.maskrcnn.psf_classes not in ("auto", "on", "off"):
            raise InputError("maskrcnn psf_classes must be auto, on or off, got "
                             f"{self.maskrcnn.psf_classes!r}")
        if detection.centres not in (None, True, False):
            raise InputError(f"maskrcnn centres must be true or false, got {detection.centres!r}")
        for name, within, what in (
                ("deblend_contrast", lambda v: 0 <= v < 1, "lie in [0, 1)"),
                ("reclaim_sigma", lambda v: v >= 0, "be a number >= 0"),
                ("deblend_snr", lambda v: v >= 0, "be a number >= 0"),
                ("fold_fragments", lambda v: 0 <= v <= 1, "lie in [0, 1]")):
            value = getattr(detection, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or not within(value)):
                raise InputError(f"maskrcnn {name} must {what}, got {value!r}")
        return self

    def to_dict(self):
        """Plain-dict form (YAML/JSON ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Build from a dict, rejecting unknown keys with a clear message."""
        data = dict(data or {})
        nested = {"unet": UnetOptions, "maskrcnn": MaskRCNNOptions}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown configuration key(s): {', '.join(unknown)}")
        for key, kind in nested.items():
            if key in data:
                value = data[key] or {}
                sub_known = {f.name for f in fields(kind)}
                bad = sorted(set(value) - sub_known)
                if bad:
                    raise InputError(f"unknown {key} option(s): {', '.join(bad)}")
                data[key] = kind(**value)
        return cls(**data)


def split_list(text):
    """The non-empty, stripped items of comma-separated ``text``."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def parse_band_map(text):
    """``"H=f160w,J=f125w"`` as ``{"H": "f160w", "J": "f125w"}``.

    Raises
    ------
    InputError
        On a pair without ``=`` or with an empty name on either side.
    """
    mapping = {}
    for pair in split_list(text):
        if "=" not in pair:
            raise InputError(f"band map wants MODEL=MOSAIC pairs, got {pair!r}")
        model_band, mosaic_band = (name.strip() for name in pair.split("=", 1))
        mapping[model_band] = mosaic_band
    check_band_map(mapping)
    return mapping


def check_band_map(band_map):
    """Raise :class:`InputError` unless every pair of ``band_map`` names two bands."""
    if not isinstance(band_map, dict):
        raise InputError(f"band map must be a mapping of model band to mosaic band, "
                         f"got {band_map!r}")
    for model_band, mosaic_band in band_map.items():
        if not str(model_band).strip() or not str(mosaic_band or "").strip():
            raise InputError(f"band map pair {model_band}={mosaic_band or ''} needs a model "
                             "band and a mosaic band (MODEL=MOSAIC)")


def load_config(path):
    """Read a :class:`RunConfig` from a YAML file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"configuration file {path} is not valid YAML "
                         f"({first_line(exc)})") from None
    if data is not None and not isinstance(data, dict):
        raise InputError(f"configuration file {path} must hold a mapping of options")
    return RunConfig.from_dict(data).validate()


def dump_config(config):
    """The configuration as YAML text."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=True)
