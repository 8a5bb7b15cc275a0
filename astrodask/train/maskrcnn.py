"""Fit loop of Mask R-CNN: batches of augmented crops, checkpoints, resume.

Training runs eagerly with a TensorFlow ``GradientTape`` (the forward pass
is the same Keras/``keras.ops`` code as inference; target sampling and
proposal NMS are NumPy in between), or with ``jax.value_and_grad`` on the
JAX backend (``KERAS_BACKEND=jax``: the machines with GPUs lent here have
JAX, not TensorFlow), where the targets are drawn first from a forward pass
of their own and the same random choices are made. A run directory holds everything needed
to resume: the latest weights, the optimizer's slots (with the moving average
of the weights when ``ema_momentum`` is set), the step and the loss history;
the random choices of step ``k`` depend only on ``(seed, k)``, so a resumed
run draws the same batches as an uninterrupted one.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..models.maskrcnn import MaskRCNNConfig, build_maskrcnn
from ..models.maskrcnn.model import cached_anchors
from ..models.maskrcnn.rpn import propose, rpn_targets
from ..storage import local_file_written_whole, put_json
from .maskrcnn_data import augment, random_crop
from .maskrcnn_losses import head_losses, rpn_losses
from .maskrcnn_targets import roi_targets

LOSS_NAMES = ("rpn_class", "rpn_box", "class", "box", "mask")
WEIGHTS_FILE = "checkpoint.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
#: Classification loss weight per true class when a run is given none.
DEFAULT_CLASS_WEIGHTS = (1.0, 1.0, 1.0)


@dataclass
class TrainSettings:
    """How a run trains (the model itself is set by MaskRCNNConfig).

    Bad values raise :class:`~astrodask.errors.InputError`; ``class_weights``
    (background, star, galaxy) may be given as text (``"1,4,1"``).
    """

    steps: int = 20000
    batch_size: int = 4
    crop_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    clip_norm: float = 5.0
    blur_probability: float = 0.1
    offset_sigma: float = 0.2
    # share of crops given a residual sky gradient, and an unflagged bad column
    gradient_probability: float = 0.0
    bad_column_probability: float = 0.0
    seed: int = 0
    checkpoint_every_s: float = 300.0
    log_every: int = 20
    # compile the network calls (tf.function on TensorFlow; on JAX, jax.jit of the backbone
    # and RPN); False: eager, for tiny runs
    compiled: bool = True
    # classification loss weight per true class; None: not given (a new run takes
    # DEFAULT_CLASS_WEIGHTS, a resumed one keeps its own)
    class_weights: tuple = None
    # > 0: keep an exponential moving average of the weights (this momentum per
    # step) and save it as the run's model; smooths the step-to-step jitter of
    # the last weights
    ema_momentum: float = 0.0

    def __post_init__(self):
        check_settings(self)


def check_settings(settings):
    """Raise :class:`~astrodask.errors.InputError` on the first bad value of ``settings``."""
    from ..errors import InputError
    from ..models.maskrcnn.config import positive_numbers

    if settings.class_weights is not None:
        settings.class_weights = positive_numbers(settings.class_weights, "class_weights", 3)
    if settings.crop_size < 64 or settings.crop_size % 64:
        raise InputError(f"crop size must be a multiple of 64, got {settings.crop_size}")
    if settings.steps < 1 or settings.batch_size < 1:
        raise InputError("steps and batch size must be positive")
    for name in ("gradient_probability", "bad_column_probability", "blur_probability"):
        if not 0 <= getattr(settings, name) <= 1:
            raise InputError(f"{name} must be in [0, 1], got {getattr(settings, name)}")
    if not 0 <= settings.ema_momentum < 1:
        raise InputError(f"ema_momentum must be in [0, 1), got {settings.ema_momentum}")


def learning_rate_at(step, settings):
    """Linear warm-up, then cosine decay to 5% of the base rate at ``settings.steps``."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps))
    return settings.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_batch(pool, step, settings):
    """The augmented crops of step ``step`` (a function of seed and step only)."""
    rng = np.random.default_rng([settings.seed, step])
    batch = []
    for _ in range(settings.batch_size):
        example = pool[int(rng.integers(len(pool)))]
        example = random_crop(example, settings.crop_size, rng)
        batch.append(augment(example, rng, settings.blur_probability, settings.offset_sigma,
                             settings.gradient_probability, settings.bad_column_probability))
    return batch, rng


def compute_losses(model, batch, rng, training=True, runners=None, class_weights=None,
                   targets=None):
    """Forward pass and the five losses of one batch (call under a GradientTape).

    ``runners`` optionally replaces the three network calls (backbone + RPN,
    box head, mask head) with compiled versions, see :func:`compiled_runners`.
    ``targets`` (:class:`BatchTargets`) gives the anchors' and RoIs' targets
    already drawn (see :func:`draw_targets`); by default they are drawn here,
    from ``rng`` and this pass's RPN outputs.
    """
    config = model.config
    forward, box_head, mask_head = runners or (
        lambda x: model(x, training=training),
        lambda r: model.box_head(r, training=training),
        lambda r: model.mask_head(r, training=training))
    images = np.stack([ex.image for ex in batch])
    anchors = None
    if targets is None:
        anchors, labels, anchor_deltas = anchor_targets(model, batch, rng)
    else:
        labels, anchor_deltas = targets.labels, targets.anchor_deltas

    pyramid, logits, deltas = forward(images)
    rpn_class, rpn_box = rpn_losses(logits, deltas, labels, anchor_deltas)
    if targets is None:
        targets = BatchTargets(labels, anchor_deltas,
                               *roi_sample(model, batch, rng, anchors, logits, deltas))
    rois, classes, box_targets = targets.rois, targets.classes, targets.box_targets
    batch_index, mask_targets = targets.batch_index, targets.mask_targets
    n_pos = len(mask_targets)

    pooled = model.pool_rois(pyramid, rois, batch_index, config.pool_size)
    class_logits, box_deltas = box_head(pooled)
    mask_logits = None
    if n_pos:  # never call a head on an empty batch (oneDNN convolutions break on it)
        mask_pooled = model.pool_rois(pyramid, rois[:n_pos], batch_index[:n_pos],
                                      config.mask_pool_size)
        mask_logits = mask_head(mask_pooled)
    head = head_losses(class_logits, box_deltas, mask_logits, classes, box_targets, mask_targets,
                       class_weights, n_rois=targets.n_rois, n_positives=targets.n_positives)
    return dict(zip(LOSS_NAMES, (rpn_class, rpn_box) + tuple(head)))


@dataclass(frozen=True)
class BatchTargets:
    """What one batch's losses are measured against (NumPy, no gradient).

    ``labels`` (B, A) and ``anchor_deltas`` (B, A, 4) of the anchors; the
    sampled RoIs (positives first), their ``classes``, ``box_targets``,
    ``batch_index`` and the positives' ``mask_targets``.
    """

    labels: np.ndarray
    anchor_deltas: np.ndarray
    rois: np.ndarray
    classes: np.ndarray
    box_targets: np.ndarray
    batch_index: np.ndarray
    mask_targets: np.ndarray
    # padded targets (pad_targets): how many RoIs and positives are real
    n_rois: int = None
    n_positives: int = None


#: Padded targets hold a multiple of this many RoIs, and of ``POSITIVE_BUCKET`` positives.
ROI_BUCKET = 64
POSITIVE_BUCKET = 16


def pad_targets(targets, roi_bucket=ROI_BUCKET, positive_bucket=POSITIVE_BUCKET):
    """``targets`` with the positives and the RoIs padded up to multiples of the buckets.

    JAX compiles every operation anew for each new shape, and the number of
    sampled RoIs and positives changes from batch to batch: padded, the heads
    see a few shapes only. Padding rows (an 8x8 box in the corner of the
    first image, background, empty mask) carry no loss (``n_rois`` and
    ``n_positives`` tell :func:`~astrodask.train.maskrcnn_losses.head_losses`
    which rows are real), so the losses and gradients are those of the
    unpadded targets.
    """
    n_pos, n_rois = len(targets.mask_targets), len(targets.rois)
    slots = -(-max(n_pos, 1) // positive_bucket) * positive_bucket
    total = -(-(slots + n_rois - n_pos) // roi_bucket) * roi_bucket

    def padded(values, fill):
        rows = np.full((total,) + values.shape[1:], fill, dtype=values.dtype)
        rows[:n_pos] = values[:n_pos]
        rows[slots:slots + n_rois - n_pos] = values[n_pos:]
        return rows

    masks = np.zeros((slots,) + targets.mask_targets.shape[1:], targets.mask_targets.dtype)
    masks[:n_pos] = targets.mask_targets
    rois = padded(targets.rois, np.nan)
    rois[np.isnan(rois).any(axis=1)] = (0.0, 0.0, 8.0, 8.0)
    return replace(targets, rois=rois, classes=padded(targets.classes, 0),
                   box_targets=padded(targets.box_targets, 0.0),
                   batch_index=padded(targets.batch_index, 0), mask_targets=masks,
                   n_rois=n_rois, n_positives=n_pos)


def anchor_targets(model, batch, rng):
    """The anchors of the batch's crop size and each anchor's label and box target."""
    config = model.config
    shape = batch[0].image.shape[:2]
    anchors = cached_anchors(shape, config.anchor_scales, config.anchor_ratios,
                             config.anchor_scale_factors)
    targets = [rpn_targets(anchors, ex.boxes, config, rng) for ex in batch]
    return anchors, np.stack([t[0] for t in targets]), np.stack([t[1] for t in targets])


def roi_sample(model, batch, rng, anchors, logits, deltas):
    """Proposals from the RPN's outputs, then the RoIs sampled from them with their targets.

    Returns ``rois, classes, box_targets, batch_index, mask_targets`` with
    every positive first (the mask loss takes the leading RoIs).
    """
    config = model.config
    shape = batch[0].image.shape[:2]
    positives, negatives = [], []
    for i, ex in enumerate(batch):
        proposals = propose(logits[i], deltas[i], anchors, shape, config,
                            config.rpn_post_nms_train, config.rpn_pre_nms_train)
        rois, classes, box_targets, masks = roi_targets(proposals, ex.boxes, ex.class_ids,
                                                        ex.masks, config, rng)
        n_pos = len(masks)
        index = np.full(len(rois), i)
        positives.append((rois[:n_pos], classes[:n_pos], box_targets[:n_pos], masks, index[:n_pos]))
        negatives.append((rois[n_pos:], classes[n_pos:], box_targets[n_pos:], index[n_pos:]))
    return (np.concatenate([p[0] for p in positives] + [n[0] for n in negatives]),
            np.concatenate([p[1] for p in positives] + [n[1] for n in negatives]),
            np.concatenate([p[2] for p in positives] + [n[2] for n in negatives]),
            np.concatenate([p[4] for p in positives] + [n[3] for n in negatives]),
            np.concatenate([p[3] for p in positives]))


def draw_targets(model, batch, rng):
    """A batch's :class:`BatchTargets`, drawn as :func:`compute_losses` draws them.

    The RoIs come from the proposals of one training-mode forward pass whose
    state changes (batch-norm statistics) are thrown away; ``rng`` is used in
    the same order as in :func:`compute_losses`, so both draw the same.
    """
    import keras

    anchors, labels, anchor_deltas = anchor_targets(model, batch, rng)
    images = np.stack([ex.image for ex in batch])
    with keras.StatelessScope():
        _, logits, deltas = model(images, training=True)
        logits, deltas = np.asarray(logits), np.asarray(deltas)
    return BatchTargets(labels, anchor_deltas, *roi_sample(model, batch, rng, anchors,
                                                           logits, deltas))


def save_checkpoint(run_dir, model, optimizer, state):
    """Write weights, optimizer slots and state; each file replaced whole."""
    run_dir = Path(run_dir)
    with local_file_written_whole(run_dir / WEIGHTS_FILE) as tmp:
        model.save_weights(tmp)
    with local_file_written_whole(run_dir / OPTIMIZER_FILE) as tmp:
        np.savez(tmp, *[np.asarray(v.numpy()) for v in optimizer.variables])
    put_json(run_dir / STATE_FILE, state, indent=1, sort_keys=False)


def _restore(run_dir, model, optimizer):
    """Load a checkpoint's weights and optimizer slots into ``model`` and ``optimizer``."""
    run_dir = Path(run_dir)
    model.load_weights(run_dir / WEIGHTS_FILE)
    optimizer.build(model.trainable_variables)
    with np.load(run_dir / OPTIMIZER_FILE) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError("optimizer checkpoint does not match the model")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)


def warm_start(model, source):
    """Copy the weights of ``source`` into ``model`` layer by layer (by name).

    Layers of ``model`` with no same-named, same-shaped layer in ``source``
    stay as initialised, except a stem for another number of bands (see
    :func:`spread_input_channels`), a new P1 level (``roi_min_level=1`` grown
    from a model without it): its output convolution starts as a copy of
    P2's and its stem lateral at zero, so P1 starts as P2's top-down map
    upsampled and the heads see familiar features from the first step; and
    an RPN with more anchor scale factors than the source's one, whose new
    anchors start by proposing what the source's did (see ``_grow_rpn_anchors``).

    Parameters
    ----------
    model, source : MaskRCNN

    Returns
    -------
    list of str
        Names of the layers that were not copied (``model.backbone`` etc.
        prefixes included).
    """
    fresh = []
    if _grow_rpn_anchors(model, source):
        parts = ("backbone", "box_head", "mask_head")
    else:
        parts = ("backbone", "rpn_head", "box_head", "mask_head")
    for part in parts:
        target_part, source_part = getattr(model, part), getattr(source, part)
        source_layers = {layer.name: layer for layer in source_part.layers}
        for layer in target_part.layers:
            if not layer.weights:
                continue
            match = source_layers.get(layer.name)
            values = match.get_weights() if match is not None else None
            shapes = [tuple(w.shape) for w in layer.weights]
            if values is not None and [v.shape for v in values] == shapes:
                layer.set_weights(values)
            elif layer.name == "stem_conv" and values is not None \
                    and values[0].shape[:2] + values[0].shape[3:] == shapes[0][:2] + shapes[0][3:]:
                layer.set_weights([spread_input_channels(values[0], shapes[0][2])])
            else:
                fresh.append(f"{part}/{layer.name}")
    names = {layer.name for layer in source.backbone.layers}
    if "backbone/fpn_p1" in fresh and "fpn_p2" in names:
        model.backbone.get_layer("fpn_p1").set_weights(
            source.backbone.get_layer("fpn_p2").get_weights())
        lateral = model.backbone.get_layer("fpn_lateral1")
        lateral.set_weights([np.zeros(tuple(w.shape), np.float32) for w in lateral.weights])
    return fresh


def spread_input_channels(kernel, n_new):
    """A first-layer kernel for ``n_new`` input bands from one for ``kernel.shape[2]`` bands.

    New band ``i`` (in wavelength order, as the bands are) takes the weights of
    the source band at the same relative position, divided among the new bands
    that share it, so (with at least as many new bands as old) an image
    identical in every band gives the same response
    as before: a model trained on g, r, z starts on four HST bands with the
    features it learned rather than from scratch.

    Parameters
    ----------
    kernel : ndarray, shape (kh, kw, n_old, filters)
    n_new : int

    Returns
    -------
    ndarray, shape (kh, kw, n_new, filters)
    """
    n_old = kernel.shape[2]
    source = (np.arange(n_new) * n_old) // n_new
    shares = np.bincount(source, minlength=n_old).astype(kernel.dtype)
    return kernel[:, :, source, :] / shares[source][None, None, :, None]


def _grow_rpn_anchors(model, source):
    """Start an RPN with more anchor scale factors from one with a single factor.

    Every new anchor (factor ``f``, ratio ``r``) takes the source's outputs for
    ratio ``r`` with the deltas rescaled to the new anchor size, so the grown
    RPN first proposes exactly what the source did. Returns whether it applied.
    """
    old, new = source.config, model.config
    if (old.anchor_scale_factors == new.anchor_scale_factors or len(old.anchor_scale_factors) != 1
            or old.anchor_ratios != new.anchor_ratios or old.box_std != new.box_std):
        return False
    for layer in source.rpn_head.layers:
        if layer.weights and layer.name not in ("rpn_class", "rpn_bbox"):
            model.rpn_head.get_layer(layer.name).set_weights(layer.get_weights())
    kernel_c, bias_c = source.rpn_head.get_layer("rpn_class").get_weights()
    kernel_b, bias_b = source.rpn_head.get_layer("rpn_bbox").get_weights()
    n_ratios = len(old.anchor_ratios)
    kernel_b = kernel_b.reshape(kernel_b.shape[:-1] + (n_ratios, 4))
    bias_b = bias_b.reshape(n_ratios, 4)
    std = np.asarray(old.box_std, dtype=np.float32)
    kernels, biases = [], []
    for factor in new.anchor_scale_factors:
        q = factor / old.anchor_scale_factors[0]
        # centre deltas are in anchor sizes; size deltas are log(size / anchor)
        scale = np.array([1 / q, 1 / q, 1, 1], np.float32)
        shift = np.array([0, 0, -np.log(q) / std[2], -np.log(q) / std[3]], np.float32)
        kernels.append((kernel_b * scale).reshape(kernel_b.shape[:-2] + (-1,)))
        biases.append((bias_b * scale + shift).reshape(-1))
    factors = len(new.anchor_scale_factors)
    model.rpn_head.get_layer("rpn_class").set_weights(
        [np.concatenate([kernel_c] * factors, axis=-1), np.concatenate([bias_c] * factors)])
    model.rpn_head.get_layer("rpn_bbox").set_weights(
        [np.concatenate(kernels, axis=-1), np.concatenate(biases)])
    return True


def load_checkpoint(run_dir):
    """The model of a run directory's latest checkpoint (a run may still be going).

    A run that keeps a moving average of its weights gives that average, as
    the run's finished model would be.
    """
    run_dir = Path(run_dir)
    state = json.loads((run_dir / STATE_FILE).read_text())
    model = build_maskrcnn(MaskRCNNConfig.from_dict(state["config"]))
    settings = settings_of(state)
    if settings.ema_momentum > 0:
        optimizer = _make_optimizer(settings)
        _restore(run_dir, model, optimizer)
        optimizer.finalize_variable_values(model.trainable_variables)
    else:
        model.load_weights(run_dir / WEIGHTS_FILE)
    return model, state


def _make_optimizer(settings):
    """AdamW of a run, with the moving average of the weights when the run keeps one."""
    import keras

    return keras.optimizers.AdamW(learning_rate=settings.learning_rate,
                                  weight_decay=settings.weight_decay,
                                  global_clipnorm=settings.clip_norm,
                                  use_ema=settings.ema_momentum > 0,
                                  ema_momentum=settings.ema_momentum or 0.99)


def train_maskrcnn(pool, run_dir, config=None, settings=None, max_seconds=None, log=print,
                   init_from=None):
    """Train (or resume training) a Mask R-CNN on a pool of examples.

    Parameters
    ----------
    pool : list of Example
        Standardised images with truth; crops are drawn from them.
    run_dir : str or Path
        Run directory; a checkpoint there is resumed (its model settings
        win over ``config``).
    config : MaskRCNNConfig, optional
    settings : TrainSettings, optional
        A resumed run takes only ``steps`` and, when given, ``class_weights``
        from these (see :func:`apply_options`); the rest are its own.
    max_seconds : float, optional
        Stop (after checkpointing) once this much wall time has passed.
    log : callable
        Receives one line of progress at a time.
    init_from : str or Path, optional
        A saved model (``.keras`` path or shipped model name) whose weights
        start a new run (see :func:`warm_start`); ignored when resuming.

    Returns
    -------
    model : MaskRCNN
        The trained model (also saved as ``run_dir/model.keras``).
    state : dict
        The run's one record (``state.json``): step, training seconds, loss
        history, model config, settings (:func:`settings_of`) and changes.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or TrainSettings()
    resuming = (run_dir / STATE_FILE).exists()
    if resuming:
        state = json.loads((run_dir / STATE_FILE).read_text())
        apply_options(state, settings, log)
    else:
        config = config or MaskRCNNConfig()
        if init_from is not None:
            config = detection_settings_from(config, init_from, log)
        state = new_state(config, settings)
    model, optimizer = _build(state, run_dir if resuming else None, init_from, log)
    _fit(pool, run_dir, model, optimizer, state, max_seconds, log)
    _finish(run_dir, model, optimizer, state)
    return model, state


def detection_settings_from(config, model, log=print):
    """``config`` with the detection settings of ``model``'s card.

    A model trained from another one is compared with it, through ``evaluate``
    and the whole pipeline; both must then detect the same way (8 fused flips
    or one pass, the fused score, confidence, NMS), or the comparison measures
    the settings rather than the weights. The card's
    :data:`~astrodask.models.maskrcnn.config.DETECTION_SETTINGS` therefore
    replace ``config``'s; a model without a card leaves ``config`` as it is.

    Parameters
    ----------
    config : MaskRCNNConfig
    model : str or Path
        The model the run starts from (a shipped name or a ``.keras`` path).
    log : callable

    Returns
    -------
    MaskRCNNConfig
    """
    from ..errors import InputError
    from ..models.card import read_model_card, resolve_model_path
    from ..models.maskrcnn.config import DETECTION_SETTINGS

    try:
        card = read_model_card(resolve_model_path(model))
    except InputError:
        return config
    own = card.get("config") or {}
    changes = {k: own[k] for k in DETECTION_SETTINGS
               if k in own and own[k] != getattr(config, k)}
    if changes:
        log(f"detection settings from {model}'s card: "
            + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
    return config.replace(**changes)


def settings_of(state):
    """The :class:`TrainSettings` a run's state holds (the one record of them).

    Runs saved before class weights existed trained with the default ones.
    """
    return TrainSettings(**{"class_weights": DEFAULT_CLASS_WEIGHTS, **state["settings"]})


def new_state(config, settings):
    """State of a run that starts: step 0, the model and training settings."""
    if settings.class_weights is None:
        settings = replace(settings, class_weights=DEFAULT_CLASS_WEIGHTS)
    return {"step": 0, "train_seconds": 0.0, "history": [],
            "config": config.to_dict(), "settings": asdict(settings)}


def apply_options(state, settings, log=print):
    """Apply the options a resumed run is given to its saved ``state`` (in place).

    The model and the other settings stay the saved ones. ``steps`` is always
    the caller's; ``class_weights`` when given (not None), also when equal to
    the defaults, and the change is recorded with the step it starts at.
    """
    saved = state["settings"]
    saved["steps"] = settings.steps
    if settings.class_weights is None:
        return
    weights = list(settings.class_weights)
    if list(saved.get("class_weights", DEFAULT_CLASS_WEIGHTS)) != weights:
        state.setdefault("changes", []).append({"step": state["step"], "class_weights": weights})
        log(f"class weights from step {state['step']}: {weights}")
    saved["class_weights"] = weights


def _build(state, checkpoint, init_from, log):
    """Model and optimizer of a run: restored from ``checkpoint`` (a run directory) or new."""
    import keras

    settings = settings_of(state)
    keras.utils.set_random_seed(settings.seed)  # the initial weights
    model = build_maskrcnn(MaskRCNNConfig.from_dict(state["config"]))
    optimizer = _make_optimizer(settings)
    if checkpoint is not None:
        _restore(checkpoint, model, optimizer)
        log(f"resumed at step {state['step']}")
    elif init_from is not None:
        from ..models.card import resolve_model_path
        from ..models.maskrcnn import load_maskrcnn

        source_path = resolve_model_path(init_from)
        fresh = warm_start(model, load_maskrcnn(source_path))
        state["initialised_from"] = {"model": str(init_from), "fresh_layers": fresh}
        log(f"started from the weights of {source_path}; new layers: {fresh or 'none'}")
    return model, optimizer


class _RunningLosses:
    """Mean of the losses since the last log line."""

    def __init__(self):
        self.sums = np.zeros(len(LOSS_NAMES))
        self.count = 0

    def add(self, losses):
        self.sums += [float(losses[name]) for name in LOSS_NAMES]
        self.count += 1

    def take(self):
        mean = self.sums / self.count
        self.sums[:] = 0
        self.count = 0
        return {name: round(float(v), 4) for name, v in zip(LOSS_NAMES, mean)}


def _fit(pool, run_dir, model, optimizer, state, max_seconds, log):
    """Train from ``state["step"]`` to the last step or the time limit, checkpointing."""
    import keras

    settings = settings_of(state)
    if keras.backend.backend() == "jax":
        network = JaxNetwork(model, optimizer) if settings.compiled else None

        def train_step(batch, rng):
            return _jax_train_step(model, optimizer, batch, rng, settings.class_weights,
                                   network)
    elif keras.backend.backend() == "tensorflow":
        if settings.compiled:
            runners, apply = compiled_runners(model, optimizer)
        else:
            variables = model.trainable_variables
            runners, apply = None, lambda grads: optimizer.apply_gradients(zip(grads, variables))

        def train_step(batch, rng):
            return _train_step(model, runners, apply, batch, rng, settings.class_weights)
    else:
        from ..errors import InputError

        raise InputError(f"training runs on the tensorflow or jax Keras backend, not "
                         f"{keras.backend.backend()!r} (set KERAS_BACKEND)")
    start = time.monotonic()
    last_save = start
    running = _RunningLosses()
    step_start_total = state["train_seconds"]
    while state["step"] < settings.steps:
        step = state["step"]
        batch, rng = make_batch(pool, step, settings)
        optimizer.learning_rate.assign(learning_rate_at(step, settings))
        losses, _ = train_step(batch, rng)
        running.add(losses)
        state["step"] = step + 1
        state["train_seconds"] = step_start_total + time.monotonic() - start
        if state["step"] % settings.log_every == 0 or state["step"] == settings.steps:
            entry = {"step": state["step"], "seconds": round(state["train_seconds"], 1),
                     **running.take()}
            state["history"].append(entry)
            log(" ".join(f"{k}={v}" for k, v in entry.items()))
        now = time.monotonic()
        out_of_time = max_seconds is not None and now - start >= max_seconds
        if now - last_save >= settings.checkpoint_every_s or out_of_time \
                or state["step"] == settings.steps:
            save_checkpoint(run_dir, model, optimizer, state)
            last_save = now
        if out_of_time:
            log(f"time limit reached at step {state['step']}")
            break


def _finish(run_dir, model, optimizer, state):
    """Save the last checkpoint if none was, and the run's model (the average, with EMA)."""
    if state["step"] == 0 or not (run_dir / STATE_FILE).exists():
        save_checkpoint(run_dir, model, optimizer, state)
    if settings_of(state).ema_momentum > 0 and state["step"] > 0:
        # the checkpoint keeps the last weights (to resume); the model is the average
        optimizer.finalize_variable_values(model.trainable_variables)
    with local_file_written_whole(run_dir / "model.keras") as tmp:
        model.save(tmp)


def compiled_runners(model, optimizer):
    """TensorFlow-compiled network calls and optimizer update for training.

    Eager TensorFlow spends most of a CPU step dispatching small ops; the
    compiled functions run the same Keras layers as one graph each.
    """
    import tensorflow as tf

    variables = model.trainable_variables
    config = model.config
    forward = tf.function(lambda x: model(x, training=True))
    box_head = tf.function(
        lambda r: model.box_head(r, training=True),
        input_signature=[tf.TensorSpec([None, config.pool_size, config.pool_size,
                                        config.fpn_channels], tf.float32)])
    mask_head = tf.function(
        lambda r: model.mask_head(r, training=True),
        input_signature=[tf.TensorSpec([None, config.mask_pool_size, config.mask_pool_size,
                                        config.fpn_channels], tf.float32)])
    apply = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    return (forward, box_head, mask_head), apply


def _train_step(model, runners, apply, batch, rng, class_weights):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        losses = compute_losses(model, batch, rng, training=True, runners=runners,
                                class_weights=class_weights)
        total = sum(losses.values())
    variables = model.trainable_variables
    grads = tape.gradient(total, variables)
    grads = [g if g is not None else tf.zeros_like(v) for g, v in zip(grads, variables)]
    apply(grads)
    return losses, total


class JaxNetwork:
    """A model's training computations as XLA-compiled JAX functions of the weights.

    ``forward`` returns the backbone, pyramid and RPN outputs and the new
    batch-norm statistics; ``backward`` the weights' gradient given the
    outputs' cotangents (it computes the forward again inside one compiled
    function). Both take every trainable and non-trainable value of the
    model, in the order of its variable lists (the heads' values are not
    used; ``heads`` lists their positions). ``losses`` runs both heads on
    pooled RoIs and returns the five losses with their gradient with
    respect to the pooled RoIs, the RPN's outputs and the heads' weights
    (see :func:`_jax_train_step`); it compiles once per crop size and
    padded target shape (:func:`pad_targets`), so a few times per run.
    ROIAlign runs between the two, outside: its sample positions are
    computed in NumPy from the boxes, whose number per pyramid level
    changes every batch (its window products compile per shape, see
    :mod:`astrodask.models.maskrcnn.roi_align`).
    ``apply`` is ``optimizer``'s update (weight decay, clipping, moving
    average) as one compiled function of the optimizer's and the weights'
    values (:meth:`update`).
    """

    def __init__(self, model, optimizer):
        import jax
        import keras

        from .maskrcnn_losses import weighted_head_losses, weighted_rpn_losses

        head_ids = {id(v) for v in model.box_head.trainable_variables
                    + model.mask_head.trainable_variables}
        self.heads = [k for k, v in enumerate(model.trainable_variables) if id(v) in head_ids]
        trainable = model.trainable_variables

        def outputs(values, frozen, images):
            return model.stateless_call(values, frozen, images, training=True)

        def backward(values, frozen, images, cotangents):
            _, pullback = jax.vjp(lambda v: outputs(v, frozen, images)[0], values)
            return pullback(cotangents)[0]

        def total_loss(pooled, mask_pooled, logits, deltas, head_values, arrays):
            mapping = [(trainable[k], v) for k, v in zip(self.heads, head_values)]
            with keras.StatelessScope(state_mapping=mapping):
                class_logits, box_deltas = model.box_head(pooled, training=True)
                mask_logits = model.mask_head(mask_pooled, training=True)
            rpn = weighted_rpn_losses(logits, deltas, arrays["anchor_deltas"],
                                      *arrays["rpn_weights"])
            head = weighted_head_losses(class_logits, box_deltas, mask_logits, arrays["classes"],
                                        arrays["box_targets"], arrays["mask_targets"],
                                        **arrays["head_weights"])
            losses = dict(zip(LOSS_NAMES, rpn + head))
            return sum(losses.values()), losses

        self.forward = jax.jit(outputs)
        self.backward = jax.jit(backward)
        self.losses = jax.jit(jax.value_and_grad(total_loss, argnums=(0, 1, 2, 3, 4),
                                                 has_aux=True))
        if not optimizer.built:
            optimizer.build(trainable)
        self.optimizer = optimizer
        self.apply = jax.jit(optimizer.stateless_apply)

    def update(self, variables, grads):
        """Apply ``grads`` to ``variables`` (the model's trainable ones) with :attr:`apply`."""
        state = self.optimizer.variables
        values, slots = self.apply([v.value for v in state], grads,
                                   [v.value for v in variables])
        for variable, value in zip(variables, values):
            variable.assign(value)
        for variable, value in zip(state, slots):
            variable.assign(value)

    @staticmethod
    def loss_arrays(targets, n_classes, class_weights):
        """What :attr:`losses` takes of padded ``targets`` (NumPy, no Python numbers)."""
        from .maskrcnn_losses import head_weights, rpn_weights

        n_slots = len(targets.mask_targets)
        return {"anchor_deltas": targets.anchor_deltas.astype(np.float32),
                "rpn_weights": rpn_weights(targets.labels),
                "classes": targets.classes.astype("int32"),
                "box_targets": targets.box_targets[:n_slots].astype(np.float32),
                "mask_targets": targets.mask_targets.astype(np.float32),
                "head_weights": head_weights(targets.classes, n_slots, n_classes,
                                             class_weights, targets.n_rois,
                                             targets.n_positives)}


def _jax_train_step(model, optimizer, batch, rng, class_weights, network=None):
    """One step on the JAX backend (a lent GPU has JAX, not TensorFlow).

    A traced value cannot become NumPy inside ``jax.value_and_grad``, so the
    targets (RoIs sampled from the proposals, which carry no gradient anyway)
    are drawn first from a forward pass of their own (:func:`draw_targets`);
    the losses are then differentiated with the weights as explicit inputs
    (a ``keras.StatelessScope``), and the batch-norm statistics of that pass
    are kept, as under TensorFlow. With ``network`` (:class:`JaxNetwork`)
    the backbone and RPN run compiled, then ROIAlign, then the heads and
    losses compiled; the gradient goes back the same way (the pooled
    RoIs' through ROIAlign's ``jax.vjp``, the outputs' through
    ``network.backward``).
    """
    import jax
    import keras

    trainable, frozen = model.trainable_variables, model.non_trainable_variables
    values, frozen_values = [v.value for v in trainable], [v.value for v in frozen]
    if network is None:
        targets = pad_targets(draw_targets(model, batch, rng))

        def total_loss(values, frozen_values):
            mapping = list(zip(trainable, values)) + list(zip(frozen, frozen_values))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                losses = compute_losses(model, batch, None, training=True,
                                        class_weights=class_weights, targets=targets)
            updated = [scope.get_current_value(v) for v in frozen]
            return sum(losses.values()), (losses, updated)

        (total, (losses, updated)), grads = jax.value_and_grad(total_loss, has_aux=True)(
            values, frozen_values)
    else:
        config = model.config
        images = np.stack([ex.image for ex in batch])
        anchors, labels, anchor_deltas = anchor_targets(model, batch, rng)
        outputs, updated = network.forward(values, frozen_values, images)
        pyramid, logits, deltas = outputs
        targets = pad_targets(BatchTargets(labels, anchor_deltas, *roi_sample(
            model, batch, rng, anchors, np.asarray(logits), np.asarray(deltas))))
        n_slots = len(targets.mask_targets)

        def pool(pyramid):
            return (model.pool_rois(pyramid, targets.rois, targets.batch_index,
                                    config.pool_size),
                    model.pool_rois(pyramid, targets.rois[:n_slots],
                                    targets.batch_index[:n_slots], config.mask_pool_size))

        (pooled, mask_pooled), pool_pullback = jax.vjp(pool, pyramid)
        arrays = network.loss_arrays(targets, config.n_classes, class_weights)
        heads = network.heads
        (total, losses), (g_pooled, g_mask, g_logits, g_deltas, head_grads) = network.losses(
            pooled, mask_pooled, logits, deltas, [values[k] for k in heads], arrays)
        (g_pyramid,) = pool_pullback((g_pooled, g_mask))
        cotangents = type(outputs)((g_pyramid, g_logits, g_deltas))
        grads = list(network.backward(values, frozen_values, images, cotangents))
        for k, grad in zip(heads, head_grads):
            grads[k] = grads[k] + grad
    for variable, value in zip(frozen, updated):
        variable.assign(value)
    if network is None:
        optimizer.apply_gradients(zip(grads, trainable))
    else:
        network.update(trainable, grads)
    return losses, total


POOL_FILE = "pool.npz"
POOL_INFO_FILE = "pool.json"


def train_from_simulations(run_dir, n_fields=160, field_size=256, seed=0, preset="decam",
                           star_density=None, config=None, settings=None, max_seconds=None,
                           log=print, init_from=None, pool_from=None, randomised=0, workers=1,
                           deep=0, pairs=0.0):
    """Simulate a training pool (cached in ``run_dir``) and train on it.

    The pool is ``n_fields`` fields of ``field_size``² pixels with seeds
    ``seed .. seed + n_fields - 1`` (``star_density`` stars per arcmin²,
    default the preset's); it is written once to ``run_dir/pool.npz`` (with
    its description in ``pool.json``) and reused when the run resumes. Keep
    evaluation seeds outside that range. The model's bands are the preset's.
    ``pool_from`` (another run directory) starts the pool from that run's
    cached fields instead; only the fields still missing up to ``n_fields``
    are simulated, with the seeds that follow the source's last one (see
    :func:`build_pool`); ``randomised`` of the new fields draw their
    observing conditions at random (domain randomisation), ``deep`` of
    them are ultra-deep and ``pairs`` of the galaxies of every new field
    sit next to another one (see :func:`build_pool`). ``init_from`` starts a new run from a saved model's
    weights (see :func:`train_maskrcnn`). When training ends,
    ``run_dir/model.keras`` gets a model card (see :func:`training_card`).

    Returns the same as :func:`train_maskrcnn`.
    """
    from ..simulation.presets import get_preset
    from .maskrcnn_data import load_examples

    from ..errors import InputError

    crop = (settings or TrainSettings()).crop_size
    if n_fields < 1 or crop > field_size:
        raise InputError(f"need at least one field, at least as large as the crop "
                         f"({crop} px); got {n_fields} of {field_size} px")
    run_dir = Path(run_dir)
    survey = get_preset(preset)
    config = (config or MaskRCNNConfig()).replace(bands=survey.band_names)
    pool_path = run_dir / POOL_FILE
    if pool_path.exists():
        pool = load_examples(pool_path)
        log(f"loaded {len(pool)} cached fields from {pool_path}")
    else:
        pool = build_pool(run_dir, n_fields, field_size, seed, preset=preset,
                          star_density=star_density, scale=config.normalisation_scale,
                          pool_from=pool_from, randomised=randomised, workers=workers, log=log,
                          deep=deep, pairs=pairs)
    model, state = train_maskrcnn(pool, run_dir, config=config, settings=settings,
                                  max_seconds=max_seconds, log=log, init_from=init_from)
    if state["step"] >= state["settings"]["steps"] and (run_dir / POOL_INFO_FILE).exists():
        from ..models.card import write_model_card

        write_model_card(run_dir / "model.keras", training_card(run_dir, model, state))
    return model, state


def pool_parts(info):
    """Seed ranges and star densities of a pool from its ``pool.json`` description.

    Pools described before parts were recorded are one part.
    """
    if "parts" in info:
        return [dict(part) for part in info["parts"]]
    return [{"seeds": list(info["seeds"]),
             "star_density_per_arcmin2": info["star_density_per_arcmin2"]}]


def build_pool(run_dir, n_fields, field_size, seed, preset="decam", star_density=None,
               scale=1.0, pool_from=None, randomised=0, workers=1, log=print, deep=0,
               pairs=0.0):
    """Simulate a training pool into ``run_dir/pool.npz`` and describe it in ``pool.json``.

    Parameters
    ----------
    run_dir : str or Path
    n_fields, field_size : int
        Fields in the pool and their side (pixels).
    seed : int
        Seed of the first simulated field; ignored with ``pool_from``.
    star_density : float, optional
        Stars per arcmin² of the simulated fields (default the preset's).
    pool_from : str or Path, optional
        A run directory whose cached pool (same preset and field size, at
        most ``n_fields`` fields) becomes the start of this one; the missing
        fields get the seeds after its last. ``pool.json`` lists every part
        (seed range, star density, conditions), so mixed pools stay
        reproducible.
    randomised : int
        How many of the new fields (the last ones) draw their observing
        conditions from :data:`~astrodask.simulation.conditions.TRAINING_RANGES`
        (seeing, PSF family, pixel scale, depth, noise, stars, cosmic rays,
        saturation); the others are drawn as the preset says.
    deep : int
        How many of the new fields (the first ones) are ultra-deep (the
        simulator's ``deep``: more and fainter galaxies, deeper images).
    pairs : float
        Share of the galaxies of every new field placed next to another
        galaxy (the simulator's ``pairs``: blends the detector must split).
    workers : int
        Processes that simulate (the pool does not depend on it).

    Returns
    -------
    list of Example
    """
    from ..errors import InputError
    from ..simulation.population import check_pair_fraction
    from ..simulation.presets import get_preset
    from .maskrcnn_data import load_examples, save_examples, simulated_examples

    check_pair_fraction(pairs)  # before anything is written
    run_dir = Path(run_dir)
    survey = get_preset(preset)
    pool, parts = [], []
    if pool_from is not None:
        source = Path(pool_from)
        if not (source / POOL_FILE).exists() or not (source / POOL_INFO_FILE).exists():
            raise InputError(f"{source} has no cached training pool ({POOL_FILE} + {POOL_INFO_FILE})")
        info = json.loads((source / POOL_INFO_FILE).read_text())
        if (info["preset"], info["field_size"]) != (survey.name, field_size):
            raise InputError(f"the pool of {source} holds {info['preset']} fields of "
                             f"{info['field_size']} px, not {survey.name} fields of {field_size} px")
        if info["n_fields"] > n_fields:
            raise InputError(f"the pool of {source} holds {info['n_fields']} fields, more than "
                             f"the {n_fields} asked for")
        pool = load_examples(source / POOL_FILE)
        parts = pool_parts(info)
        seed = parts[-1]["seeds"][1] + 1
        log(f"pool starts from the {len(pool)} fields of {source}")
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    n_new = n_fields - len(pool)
    density = star_density if star_density is not None else survey.star_density
    if not 0 <= randomised <= n_new:
        raise InputError(f"randomised fields must be between 0 and the {n_new} new ones, "
                         f"got {randomised}")
    if not 0 <= deep <= n_new - randomised:
        raise InputError(f"deep fields must be between 0 and the {n_new - randomised} new ones "
                         f"that are not randomised, got {deep}")
    paired = {"pair_fraction": float(pairs)} if pairs else {}
    if deep:
        pool += simulated_examples(deep, field_size, seed, preset=preset, scale=scale,
                                   star_density=star_density, workers=workers, deep=True,
                                   pairs=pairs)
        parts.append({"seeds": [seed, seed + deep - 1], "star_density_per_arcmin2": density,
                      "deep": True, **paired})
        seed += deep
    plain = n_new - randomised - deep
    if plain:
        pool += simulated_examples(plain, field_size, seed, preset=preset, scale=scale,
                                   star_density=star_density, workers=workers, pairs=pairs)
        parts.append({"seeds": [seed, seed + plain - 1], "star_density_per_arcmin2": density,
                      **paired})
    if randomised:
        from ..simulation.conditions import TRAINING_RANGES

        first = seed + plain
        pool += simulated_examples(randomised, field_size, first, preset=preset, scale=scale,
                                   randomise=True, workers=workers, pairs=pairs)
        parts.append({"seeds": [first, first + randomised - 1], "star_density_per_arcmin2": None,
                      "conditions": "astrodask.simulation.conditions.draw_conditions(seed)",
                      "condition_ranges": json.loads(json.dumps(TRAINING_RANGES)), **paired})
    densities = {part["star_density_per_arcmin2"] for part in parts}
    info = {"preset": survey.name, "n_fields": len(pool), "field_size": field_size,
            "seeds": [parts[0]["seeds"][0], parts[-1]["seeds"][1]]}
    if len(densities) == 1:
        info["star_density_per_arcmin2"] = densities.pop()
    info.update({"parts": parts, "galaxy_density_per_arcmin2": survey.galaxy_density,
                 "pixel_scale_arcsec": survey.pixel_scale})
    put_json(run_dir / POOL_INFO_FILE, info)
    save_examples(run_dir / POOL_FILE, pool)  # last: a pool.npz is always described
    log(f"simulated {n_new} {preset} fields of {field_size}x{field_size} in "
        f"{time.monotonic() - start:.0f} s; pool of {len(pool)} fields")
    return pool


def training_card(run_dir, model, state, name=None):
    """Model card of a finished run: bands, normalisation, training data and time.

    Metrics are added by ``astrodask evaluate --update-card``.
    """
    pool = json.loads((Path(run_dir) / POOL_INFO_FILE).read_text())
    config = model.config
    settings = state["settings"]
    return {
        "name": name or f"maskrcnn_{pool['preset']}",
        "architecture": f"Mask R-CNN (ResNet-{config.backbone_depth} FPN, Keras 3)",
        "bands": list(config.bands),
        "pixel_scale_arcsec": pool["pixel_scale_arcsec"],
        "normalisation": {
            "method": "Astro R-CNN eq. 1: A * (x - mean_b) / std_b, then asinh inside the "
                      "network",
            "scale_A": config.normalisation_scale,
            "statistics": "sigma-clipped (3 sigma) mean and std of each band over the whole "
                          "mosaic (astrodask.band_statistics)",
        },
        "classes": list(config.classes),
        "config": config.to_dict(),
        "parameters": int(model.count_params()),
        "training": {
            "data": {**pool, "simulator": "astrodask.simulation.simulate_field"},
            "steps": state["step"],
            "batch_size": settings["batch_size"],
            "crop_size": settings["crop_size"],
            "learning_rate": settings["learning_rate"],
            "class_weights": list(settings.get("class_weights", DEFAULT_CLASS_WEIGHTS)),
            # > 0: the weights are this exponential moving average of the steps' weights
            "ema_momentum": settings.get("ema_momentum", 0.0),
            "setting_changes": state.get("changes", []),
            "initialised_from": state.get("initialised_from"),
            "augmentation": "90-degree rotations, mirrors, Gaussian blur sigma in [2, 6) px on "
                            f"{settings['blur_probability']:.0%} of crops, per-band additive "
                            f"offsets (sigma {settings['offset_sigma']}); residual sky gradients "
                            f"on {settings.get('gradient_probability', 0.0):.0%} and an unflagged "
                            f"bad column on {settings.get('bad_column_probability', 0.0):.0%} of "
                            "crops",
            "train_seconds": round(state["train_seconds"], 1),
            "final_losses": state["history"][-1] if state["history"] else None,
        },
    }
