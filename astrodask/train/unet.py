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


def _callbacks(checkpoint_dir, max_minutes, sequence):
    import keras

    from .unet_data import EpochSync

    class Checkpoint(keras.callbacks.Callback):
        """Write last.keras (weights + optimiser) and state.json after each epoch."""

        def __init__(self):
            super().__init__()
            self.history = []

        def on_epoch_end(self, epoch, logs=None):
            self.history.append({"epoch": epoch + 1,
                                 **{k: float(v) for k, v in (logs or {}).items()}})
            _atomic_save(self.model, checkpoint_dir / "last.keras")
            state = checkpoint_dir / "state.json"
            previous = json.loads(state.read_text())["history"] if state.exists() else []
            put_json(state, {"epochs_done": epoch + 1,
                             "history": previous + self.history[-1:]}, indent=1, sort_keys=False)

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
               checkpoint_dir=None, resume=False, eval_stride=8, architecture=None):
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

    Returns
    -------
    dict
        The model card that was written (``card["metrics"]`` holds the
        held-out metrics).
    """
    import keras

    from ..models.card import write_model_card
    from ..morphology.windows import normalisation_card
    from ..models.unet import build_unet
    from ..simulation.presets import get_preset
    from .unet_data import WindowSequence, sample_windows, simulate_fields
    from .unet_losses import morpheus_loss

    out = Path(out)
    if out.suffix != ".keras":
        raise InputError(f"output {out} must end in .keras")
    factor = 2 ** len((architecture or {}).get("down_filters", (8, 16, 32)))
    if crop % factor:
        raise InputError(f"crop must be a multiple of {factor}, got {crop}")
    if field_size < crop:
        raise InputError(f"field_size {field_size} is smaller than the crop {crop}")
    survey = get_preset(preset)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else \
        out.with_name(out.stem + ".checkpoints")
    if checkpoint_dir.exists() and not resume:
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _configure(seed, threads)

    started = time.monotonic()
    images, labels, bands = simulate_fields(train_fields, field_size, preset, seed * 10_000)
    test_images, test_labels, _ = simulate_fields(
        held_out_fields, field_size, preset, seed * 10_000 + HELD_OUT_SEED_OFFSET)
    val_x, val_y = sample_windows(test_images, test_labels, 256, crop,
                                  np.random.default_rng([seed, 99]))
    val_y = np.eye(len(MORPHOLOGY_CLASSES), dtype=np.float32)[val_y]

    state_path = checkpoint_dir / "state.json"
    initial_epoch = 0
    config = {"n_bands": len(bands), "n_classes": len(MORPHOLOGY_CLASSES),
              "dropout_rate": dropout_rate, **(architecture or {})}
    if resume and state_path.exists():
        model = keras.saving.load_model(checkpoint_dir / "last.keras")
        initial_epoch = json.loads(state_path.read_text())["epochs_done"]
    else:
        model = build_unet(**config, name=out.stem)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=morpheus_loss,
                      metrics=["categorical_accuracy"])
    sequence = WindowSequence(images, labels, batch_size, steps_per_epoch, crop=crop, seed=seed)
    if initial_epoch < epochs:
        model.fit(sequence, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=(val_x, val_y), verbose=2, shuffle=False,
                  callbacks=_callbacks(checkpoint_dir, max_minutes, sequence))
    state = json.loads(state_path.read_text()) if state_path.exists() else \
        {"epochs_done": initial_epoch, "history": []}
    train_seconds = time.monotonic() - started

    # the deployable model: no dropout layers, same weights
    final = build_unet(**{**config, "dropout_rate": 0.0}, name=out.stem)
    final.set_weights(model.get_weights())
    metrics = evaluate_unet(final, test_images, test_labels, stride=eval_stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(final, out)
    card = {
        "name": out.stem,
        "architecture": "morpheus-unet",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "bands": [b.name for b in survey.bands],
        "filters": [b.filter for b in survey.bands],
        "pixel_scale_arcsec": survey.pixel_scale,
        "normalisation": normalisation_card(crop),
        "window": {"size": crop, "counted_inner": crop - 10},
        "classes": list(MORPHOLOGY_CLASSES),
        "training_data": (f"astrodask simulator, preset {survey.name!r}: {train_fields} fields "
                          f"of {field_size}x{field_size} px (seeds {seed * 10_000}..), labels "
                          "from the simulator's morphology map"),
        "training": {
            "epochs": state["epochs_done"], "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size, "crop": crop, "optimizer": "adam",
            "learning_rate": learning_rate, "loss": "weighted cross-entropy + background Dice",
            "augmentation": "random crops (half centred near sources), 90-degree rotations, flips",
            "seed": seed, "threads": threads, "wall_seconds": round(train_seconds, 1),
            "history": state["history"],
        },
        "metrics": {
            "held_out": (f"{held_out_fields} simulated fields of {field_size}x{field_size} px, "
                         "seeds not used in training"),
            **metrics,
        },
    }
    write_model_card(out, card)
    return card
