"""Train the Morpheus U-Net on simulated fields (for bands Morpheus never saw).

``train_unet`` simulates training and held-out fields with the simulator's
morphology label images, trains on augmented 40x40 windows (rotations,
flips, crops) with Morpheus' loss (weighted cross-entropy + background Dice)
and Adam, checkpoints after every epoch (``last.keras`` + ``state.json``; a
rerun with ``resume=True`` continues from there), and writes the model with
a card holding the held-out metrics (pixel accuracy per class, IoU(B)).

Training uses TensorFlow (the Keras backend of this package); the result is
an ordinary ``.keras`` file that runs anywhere :func:`load_unet` does.
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..classes import MORPHOLOGY_CLASSES
from ..errors import InputError
from ..framework import configure_framework
from ..storage import local_file_written_whole, put_json
from .unet_metrics import pixel_metrics

#: Seed offset of the held-out fields (never used for training).
HELD_OUT_SEED_OFFSET = 1_000_000


def _configure(seed, threads):
    if threads:
        configure_framework(threads)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _atomic_save(model, path):
    with local_file_written_whole(path) as tmp:
        model.save(tmp)


STATE_FILE = "state.json"


def _load_state(checkpoint_dir):
    """A run's one record of its progress (epochs done, history); empty when it has none."""
    path = checkpoint_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {"epochs_done": 0, "history": []}


def _callbacks(checkpoint_dir, state, max_minutes, sequence):
    import keras

    from .unet_data import EpochSync

    class Checkpoint(keras.callbacks.Callback):
        """Write last.keras (weights + optimiser) and the run's ``state`` after each epoch."""

        def on_epoch_end(self, epoch, logs=None):
            state["history"].append({"epoch": epoch + 1,
                                     **{k: float(v) for k, v in (logs or {}).items()}})
            state["epochs_done"] = epoch + 1
            _atomic_save(self.model, checkpoint_dir / "last.keras")
            put_json(checkpoint_dir / STATE_FILE, state, indent=1, sort_keys=False)

    class TimeLimit(keras.callbacks.Callback):
        """Stop at the end of the first epoch that ends past the time budget."""

        def __init__(self):
            super().__init__()
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            if max_minutes and time.monotonic() - self.start > 60 * max_minutes:
                self.model.stop_training = True

    return [EpochSync(sequence), Checkpoint(), TimeLimit()]


def evaluate_unet(model, images, labels, stride=8, modes=("faithful", "fast")):
    """Held-out pixel metrics of ``model`` on whole fields.

    Parameters
    ----------
    images : ndarray, shape (fields, bands, H, W)
    labels : ndarray of int, shape (fields, H, W)
    stride : int
        Window stride of the faithful mode.
    modes : sequence of str
        Inference modes to score (see :func:`classify_image`).

    Returns
    -------
    dict
        Mode -> :func:`pixel_metrics` over the pixels the mode classified.
    """
    from ..morphology.windows import classify_image

    out = {}
    for mode in modes:
        probs, truth, valid = [], [], []
        for image, label in zip(images, labels):
            result = classify_image(model, image, mode=mode, stride=stride)
            probs.append(result["mean"])
            truth.append(label)
            valid.append(result["n"] > 0)
        out[mode] = pixel_metrics(np.stack(probs, axis=1), np.stack(truth), np.stack(valid))
        if mode == "faithful":
            out[mode]["stride"] = stride
    return out


def train_unet(out, preset="decam", epochs=50, steps_per_epoch=100, batch_size=32, crop=40,
               train_fields=24, held_out_fields=4, field_size=256, seed=0,
               learning_rate=1e-3, dropout_rate=0.1, max_minutes=None, threads=2,
               checkpoint_dir=None, resume=False, eval_stride=8, architecture=None,
               init_from=None, star_density=None, deep_fraction=0.0):
    """Train a U-Net on simulated fields of a survey preset and write it with its card.

    Parameters
    ----------
    out : path
        Output ``.keras`` file; the card goes beside it.
    preset : str
        Simulator preset (its bands become the model's input bands).
    epochs, steps_per_epoch, batch_size : int
        Training length; each step is one batch of ``crop`` x ``crop`` windows.
    crop : int
        Window side (Morpheus: 40; a multiple of 2 ** contraction levels).
    train_fields, held_out_fields, field_size : int
        Simulated ``field_size``-square fields for training and for the
        held-out metrics (different seeds).
    seed : int
        Seeds the fields, the windows and the weights.
    learning_rate : float
        Adam learning rate.
    dropout_rate : float
        Dropout after every block while training.
    max_minutes : float, optional
        Stop after the first epoch that ends past this budget.
    threads : int
        TensorFlow threads.
    checkpoint_dir : path, optional
        Default ``<out without .keras>.checkpoints``.
    resume : bool
        Continue from the checkpoint instead of starting over.
    eval_stride : int
        Stride of the faithful mode for the held-out metrics.
    architecture : dict, optional
        Overrides of :func:`build_unet` arguments (filters, blocks).
    init_from : str or Path, optional
        Fine-tune: start from this U-Net's weights (a shipped name such as
        ``"morpheus"``, or a ``.keras`` file) instead of random ones. Its
        bands must be the preset's (in any order: the training images follow
        the source's order) and its architecture replaces ``architecture``.
    star_density : float, optional
        Stars per arcmin² in the training and held-out fields (default: the
        preset's; ``hst`` has 1.5, too few point sources to learn from).
    deep_fraction : float
        Fraction of the training and held-out fields simulated ultra-deep.

    Returns
    -------
    dict
        The model card that was written (``card["metrics"]`` holds the
        held-out metrics).
    """
    from ..models.card import write_model_card
    from ..simulation.presets import get_preset

    out = Path(out)
    survey = get_preset(preset)
    source = _init_source(init_from, survey)
    if source is not None:
        architecture = source["architecture"]
    _check_options(out, crop, field_size, architecture)
    checkpoint_dir = _checkpoint_dir(out, checkpoint_dir, resume)
    _configure(seed, threads)

    started = time.monotonic()
    band_order = source["bands"] if source else [b.name for b in survey.bands]
    data = _training_data(preset, train_fields, held_out_fields, field_size, crop, seed,
                          band_order, star_density, deep_fraction)
    config = {"n_bands": len(band_order), "n_classes": len(MORPHOLOGY_CLASSES),
              "dropout_rate": dropout_rate, **(architecture or {})}
    state = _load_state(checkpoint_dir)  # empty unless resuming
    model = _open_model(checkpoint_dir, config, learning_rate, out.stem, source)
    if source is not None:
        state.setdefault("initialised_from", source["name"])
    _fit(model, data, state, checkpoint_dir, epochs, steps_per_epoch, batch_size, crop, seed,
         max_minutes)
    train_seconds = time.monotonic() - started

    final = _deployable(model, config, out.stem)
    metrics = evaluate_unet(final, data["test_images"], data["test_labels"], stride=eval_stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(final, out)
    card = _card(out.stem, survey, band_order, config, crop, state, metrics, dict(
        train_fields=train_fields, held_out_fields=held_out_fields, field_size=field_size,
        seed=seed, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        star_density=star_density, deep_fraction=deep_fraction,
        learning_rate=learning_rate, threads=threads, train_seconds=train_seconds))
    write_model_card(out, card)
    return card


def _check_options(out, crop, field_size, architecture):
    if out.suffix != ".keras":
        raise InputError(f"output {out} must end in .keras")
    factor = 2 ** len((architecture or {}).get("down_filters", (8, 16, 32)))
    if crop % factor:
        raise InputError(f"crop must be a multiple of {factor}, got {crop}")
    if field_size < crop:
        raise InputError(f"field_size {field_size} is smaller than the crop {crop}")


def _checkpoint_dir(out, checkpoint_dir, resume):
    """The run's checkpoint folder, emptied unless resuming."""
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else \
        out.with_name(out.stem + ".checkpoints")
    if checkpoint_dir.exists() and not resume:
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return checkpoint_dir


def _init_source(init_from, survey):
    """The U-Net a fine-tuning run starts from: its weights, bands and architecture."""
    if init_from is None:
        return None
    from ..models.unet import load_unet

    model, card = load_unet(init_from)
    preset_bands = {b.name.lower(): b.name for b in survey.bands}
    # band names match case-insensitively, as in the engine (Morpheus says V, the preset v)
    bands = [preset_bands.get(b.lower(), b) for b in card["bands"]]
    if sorted(bands) != sorted(preset_bands.values()):
        raise InputError(f"cannot fine-tune {init_from} (bands {', '.join(bands)}) on preset "
                         f"{survey.name!r} (bands {', '.join(b.name for b in survey.bands)})")
    architecture = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in card["config"].items()
                    if k not in ("n_bands", "n_classes", "dropout_rate")}
    return {"name": str(init_from), "weights": model.get_weights(), "bands": bands,
            "architecture": architecture}


def _in_band_order(images, bands, order):
    """``images`` (fields, bands, H, W) with the bands rearranged into ``order``."""
    return images[:, [list(bands).index(b) for b in order]]


def _training_data(preset, train_fields, held_out_fields, field_size, crop, seed, band_order,
                   star_density=None, deep_fraction=0.0):
    """Training fields, held-out fields and the validation windows cut from the latter."""
    from .unet_data import sample_windows, simulate_fields

    images, labels, bands = simulate_fields(train_fields, field_size, preset, seed * 10_000,
                                            star_density, deep_fraction)
    test_images, test_labels, _ = simulate_fields(
        held_out_fields, field_size, preset, seed * 10_000 + HELD_OUT_SEED_OFFSET, star_density,
        deep_fraction)
    images = _in_band_order(images, bands, band_order)
    test_images = _in_band_order(test_images, bands, band_order)
    val_x, val_y = sample_windows(test_images, test_labels, 256, crop,
                                  np.random.default_rng([seed, 99]))
    val_y = np.eye(len(MORPHOLOGY_CLASSES), dtype=np.float32)[val_y]
    return dict(images=images, labels=labels, bands=bands, test_images=test_images,
                test_labels=test_labels, val_x=val_x, val_y=val_y)


def _open_model(checkpoint_dir, config, learning_rate, name, source=None):
    """The checkpoint's model when there is one, else a new compiled one (``source``'s weights)."""
    import keras

    from ..models.unet import build_unet
    from .unet_losses import morpheus_loss

    if (checkpoint_dir / STATE_FILE).exists():
        return keras.saving.load_model(checkpoint_dir / "last.keras")
    model = build_unet(**config, name=name)
    if source is not None:
        model.set_weights(source["weights"])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=morpheus_loss,
                  metrics=["categorical_accuracy"])
    return model


def _fit(model, data, state, checkpoint_dir, epochs, steps_per_epoch, batch_size, crop, seed,
         max_minutes):
    """Train from ``state["epochs_done"]`` to ``epochs``; ``state`` follows every epoch."""
    from .unet_data import WindowSequence

    sequence = WindowSequence(data["images"], data["labels"], batch_size, steps_per_epoch,
                              crop=crop, seed=seed)
    if state["epochs_done"] < epochs:
        model.fit(sequence, epochs=epochs, initial_epoch=state["epochs_done"],
                  validation_data=(data["val_x"], data["val_y"]), verbose=2, shuffle=False,
                  callbacks=_callbacks(checkpoint_dir, state, max_minutes, sequence))


def _deployable(model, config, name):
    """The model without dropout layers, with the same weights."""
    from ..models.unet import build_unet

    final = build_unet(**{**config, "dropout_rate": 0.0}, name=name)
    final.set_weights(model.get_weights())
    return final


def _card(name, survey, bands, config, crop, state, metrics, run):
    """Model card of a trained U-Net; ``run`` holds the training options and wall time."""
    from ..morphology.windows import normalisation_card

    filters = {b.name: b.filter for b in survey.bands}
    card = {
        "name": name,
        "architecture": "morpheus-unet",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "bands": list(bands),
        "filters": [filters[b] for b in bands],
        "pixel_scale_arcsec": survey.pixel_scale,
        "normalisation": normalisation_card(crop),
        "window": {"size": crop, "counted_inner": crop - 10},
        "classes": list(MORPHOLOGY_CLASSES),
        "training_data": (f"astrodask simulator, preset {survey.name!r}: {run['train_fields']} "
                          f"fields of {run['field_size']}x{run['field_size']} px (seeds "
                          f"{run['seed'] * 10_000}..), labels from the simulator's morphology map"
                          + ("" if run["star_density"] is None else
                             f"; {run['star_density']:g} stars per arcmin²")
                          + (f"; {run['deep_fraction']:g} of them ultra-deep"
                             if run["deep_fraction"] else "")),
        "training": {
            "epochs": state["epochs_done"], "steps_per_epoch": run["steps_per_epoch"],
            "batch_size": run["batch_size"], "crop": crop, "optimizer": "adam",
            "learning_rate": run["learning_rate"],
            "loss": "weighted cross-entropy + background Dice",
            "augmentation": "random crops (half centred near sources), 90-degree rotations, flips",
            "seed": run["seed"], "threads": run["threads"],
            "wall_seconds": round(run["train_seconds"], 1), "history": state["history"],
        },
        "metrics": {
            "held_out": (f"{run['held_out_fields']} simulated fields of {run['field_size']}x"
                         f"{run['field_size']} px, seeds not used in training"),
            **metrics,
        },
    }
    if "initialised_from" in state:
        card["training"]["initialised_from"] = state["initialised_from"]
    return card
