"""Train the centre network (:mod:`astrodask.models.centres`) on simulated fields.

The pool mixes kinds of field, in turn: the preset's own, with 30% of
the galaxies placed next to another one (blended pairs), crowded (``decam``:
120 galaxies/arcmin²; ``hst``: the simulator's ultra-deep fields; 20%
pairs), star-rich with saturation and cosmic rays, and (``decam``) fields
with large, bright galaxies added, most of them spirals with star-forming
knots along their arms, which must give one centre each. With ``randomise``
f > 0, a share f of the fields (picked by each field's seed) also draw their
observing conditions (seeing, PSF family and shape, pixel scale, depth, sky,
noise correlation; :func:`astrodask.simulation.conditions.draw_conditions`),
so the network meets seeing and pixel scales other than the preset's.
Each field is standardised with its own sigma-clipped statistics (eq. 1, as
the engine standardises a mosaic) and kept with the true centres of its
sources above ``snr_min``. Training draws random crops, rotated and mirrored,
with small per-band offsets, and minimises CenterNet's focal loss with AdamW
on a cosine schedule. With ``binning`` b > 1 the fields are binned b x b
after standardisation (:func:`~astrodask.models.centres.bin_images`, as the
engine bins a window for such a network) and crops are in binned pixels.
``run_dir`` holds the pool, the weights, the optimizer
state and ``state.json``; a rerun resumes from them and gives the same
weights as an uninterrupted run on the same machine.
"""

import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..models.centres import (TARGET_SIGMA, WIDTHS, bin_images, binned_positions,
                              build_centre_net, load_centre_net, render_target,
                              widen_centre_net)
from ..storage import local_file_written_whole, put_json
from .maskrcnn_data import _column

POOL_FILE = "pool.npz"
STATE_FILE = "state.json"
WEIGHTS_FILE = "centres.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
#: Kinds of field in each preset's pool, in turn (arguments of ``simulate_field``).
FIELD_KINDS = {
    "decam": ({}, {"pairs": 0.3}, {"density": 120.0, "pairs": 0.2},
              {"star_density": 8.0, "saturate": True, "cosmic_rays": 20.0},
              {"large_galaxies": 1.5, "pairs": 0.1}),
    "hst": ({}, {"pairs": 0.3}, {"deep": True, "pairs": 0.2},
            {"star_density": 30.0, "saturate": True, "cosmic_rays": 20.0}),
}
#: Seeds the choice of the fields whose conditions are randomised.
_RANDOMISE_TAG = 11
DEFAULTS = dict(steps=5000, batch_size=8, crop=96, learning_rate=1e-3, warmup_steps=100,
                weight_decay=1e-4, offset_sigma=0.1, snr_min=2.0, widths=WIDTHS,
                sigma=TARGET_SIGMA, damage=0.0, binning=1)


def _simulated_field(job):
    from ..models.maskrcnn.normalise import band_statistics, normalise_bands
    from ..simulation import simulate_field

    size, preset, seed, kind, snr_min, randomise = job
    field = simulate_field(shape=(size, size), preset=preset, seed=seed,
                           conditions=drawn_conditions(seed, randomise),
                           **FIELD_KINDS[preset][kind])
    mean, std = band_statistics(field.images)
    # clipped to float16's range: a saturated star's core can lie 10^5 sigma above the sky,
    # and asinh maps the clipped value (65504) and the true one to within 3%
    image = np.clip(normalise_bands(field.images, mean, std), -65504, 65504).astype(np.float16)
    columns = [_column(field.truth, name).astype(np.float64) for name in ("y", "x", "snr")]
    bright = columns[2] >= snr_min
    return image, np.stack(columns[:2], axis=1)[bright].astype(np.float32)


def drawn_conditions(seed, randomise):
    """The observing conditions of the pool's field of ``seed``, or None (the preset's).

    The field draws its conditions (:func:`~astrodask.simulation.conditions.draw_conditions`)
    with probability ``randomise``, decided by its seed alone.
    """
    from ..simulation.conditions import draw_conditions

    if not randomise > 0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _RANDOMISE_TAG]))
    return draw_conditions(seed) if rng.uniform() < randomise else None


def build_pool(path, n_fields, field_size, seed, preset="decam", snr_min=2.0, workers=1,
               log=print, randomise=0.0):
    """Simulate ``n_fields`` fields (seeds ``seed ..``) into one ``.npz`` at ``path``.

    ``randomise``: the share of fields that draw their observing conditions
    (:func:`drawn_conditions`).

    Returns
    -------
    images : ndarray of float16, shape (n, size, size, band)
    centres : list of ndarray (N_i, 2)
        ``(y, x)`` of each field's sources with S/N >= ``snr_min``.
    """
    from ..simulation.tiles import ordered_map

    if preset not in FIELD_KINDS:
        raise InputError(f"no centre-training pool for preset {preset!r}; "
                         f"known: {', '.join(sorted(FIELD_KINDS))}")
    if not 0 <= randomise <= 1:
        raise InputError(f"the randomised share of fields must lie in [0, 1], got {randomise}")
    jobs = [(field_size, preset, seed + i, i % len(FIELD_KINDS[preset]), snr_min, randomise)
            for i in range(n_fields)]
    images, centres = [], []
    for i, (image, found) in enumerate(ordered_map(_simulated_field, jobs, workers)):
        images.append(image)
        centres.append(found)
        if (i + 1) % 100 == 0:
            log(f"simulated {i + 1}/{n_fields} fields")
    images = np.stack(images)
    arrays = {f"centres{i}": c for i, c in enumerate(centres)}
    with local_file_written_whole(path) as tmp:
        np.savez(tmp, images=images, count=len(centres), **arrays)
    return images, centres


def load_pool(path):
    """Read a pool written by :func:`build_pool`."""
    with np.load(path) as data:
        return data["images"], [data[f"centres{i}"] for i in range(int(data["count"]))]


def flag_region(crop, rng):
    """A random flagged region of a ``crop`` x ``crop`` image, as surveys have them.

    One of: a bad column 1-3 px wide; a stripe 8-40 px wide (a zero-weight
    strip, a chip gap); a block 16 px to half the crop on a side, which may
    reach past the crop's edge (a missing chip, the mosaic's padding). Rows
    come from the rotations applied afterwards.

    Returns
    -------
    ndarray of bool, shape (crop, crop)
    """
    region = np.zeros((crop, crop), dtype=bool)
    kind = int(rng.integers(3))
    if kind < 2:
        width = int(rng.integers(1, 4)) if kind == 0 else int(rng.integers(8, 41))
        x0 = int(rng.integers(-width + 1, crop))
        region[:, max(x0, 0):x0 + width] = True
    else:
        h, w = (int(v) for v in rng.integers(16, crop // 2 + 1, size=2))
        y0, x0 = int(rng.integers(-h + 1, crop)), int(rng.integers(-w + 1, crop))
        region[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True
    return region


def make_batch(images, targets, rng, batch_size, crop, offset_sigma, damage=0.0):
    """Random crops (rotated, mirrored, offset per band) of the pool and their targets.

    With probability ``damage`` a crop gets a flagged region (:func:`flag_region`)
    filled as the engine fills flagged pixels, with sky noise (σ 1 in
    standardised units); the target there is 0, since the engine never
    reports a centre on a flagged pixel.
    """
    n, height, width, bands = images.shape
    xs, ys = [], []
    for _ in range(batch_size):
        i = int(rng.integers(n))
        y0, x0 = int(rng.integers(height - crop + 1)), int(rng.integers(width - crop + 1))
        image = images[i, y0:y0 + crop, x0:x0 + crop].astype(np.float32)
        target = targets[i, y0:y0 + crop, x0:x0 + crop]
        if damage and rng.random() < damage:
            region = flag_region(crop, rng)
            image[region] = rng.standard_normal((int(region.sum()), bands), dtype=np.float32)
            target = np.where(region, np.float32(0.0), target)
        k = int(rng.integers(4))
        image, target = np.rot90(image, k), np.rot90(target, k)
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        xs.append(image + rng.normal(0.0, offset_sigma, bands).astype(np.float32))
        ys.append(target)
    return np.stack(xs).astype(np.float32), np.stack(ys)[..., None].astype(np.float32)


def focal_loss(target, logits):
    """CenterNet's focal loss (α 2, β 4), summed and divided by the number of centres."""
    from keras import ops

    p = ops.clip(ops.sigmoid(logits), 1e-4, 1.0 - 1e-4)
    centre = ops.cast(target >= 0.999, "float32")
    positive = -centre * (1.0 - p) ** 2 * ops.log(p)
    negative = -(1.0 - centre) * (1.0 - target) ** 4 * p ** 2 * ops.log(1.0 - p)
    return (ops.sum(positive) + ops.sum(negative)) / ops.maximum(ops.sum(centre), 1.0)


def learning_rate_at(step, settings):
    """Linear warm-up, then cosine decay to 0 at ``steps``."""
    warm = min(1.0, (step + 1) / max(settings["warmup_steps"], 1))
    return settings["learning_rate"] * warm * 0.5 * (1.0 + np.cos(np.pi * step
                                                                 / settings["steps"]))


def _save(run_dir, model, optimizer, state):
    with local_file_written_whole(run_dir / WEIGHTS_FILE) as tmp:
        model.save_weights(str(tmp))
    values = {f"v{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
    with local_file_written_whole(run_dir / OPTIMIZER_FILE) as tmp:
        np.savez(tmp, **values)
    put_json(run_dir / STATE_FILE, state)


def train_centres(run_dir, preset="decam", n_fields=800, field_size=256, seed=4_000_000,
                  max_seconds=None, workers=1, log=print, init_weights=None, init_widths=None,
                  randomise=0.0, **options):
    """Simulate a pool (once) and train the centre network on it, resumably.

    Parameters
    ----------
    run_dir : str or Path
        Holds the pool, checkpoints and ``state.json``; rerun to resume.
    preset : str
        Simulator preset; the network takes its bands.
    n_fields, field_size, seed : int
        The pool: ``n_fields`` fields of ``field_size``² px, seeds ``seed ..``.
    max_seconds : float, optional
        Stop (after a checkpoint) when this much time has passed.
    workers : int
        Processes that simulate the pool.
    randomise : float
        Share of the pool's fields that draw their observing conditions
        (:func:`drawn_conditions`); recorded with the pool.
    init_weights : str or Path, optional
        Weights of a centre network of the same widths (e.g. a shipped
        ``*.centres.weights.h5``) to start from instead of a random
        initialisation: fine-tuning. Read only when the run starts; a resumed
        run continues from its own checkpoint.
    init_widths : sequence of int, optional
        The widths of ``init_weights`` where they are narrower than this
        run's ``widths``: the network starts as their widened copy
        (:func:`~astrodask.models.centres.widen_centre_net`), which computes
        the same heatmap.
    **options
        Any of :data:`DEFAULTS` (steps, batch_size, crop, learning_rate, ...).

    Returns
    -------
    model : keras.Model
    state : dict
        ``step``, ``settings``, ``losses`` (running mean every 100 steps), ``pool``.
    """
    import keras
    import tensorflow as tf

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise InputError(f"unknown centre-training options: {', '.join(sorted(unknown))}")
    if init_weights and not Path(init_weights).is_file():
        raise InputError(f"no such weights file: {init_weights}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        state["settings"]["steps"] = options.get("steps", state["settings"]["steps"])
    else:
        settings = dict(DEFAULTS, **options)
        settings["widths"] = [int(w) for w in settings["widths"]]
        binning = settings["binning"] = int(settings["binning"])
        if binning < 1 or field_size % binning:
            raise InputError(f"binning must be a positive divisor of the field size "
                             f"({field_size}), got {binning}")
        if settings["crop"] % 8 or settings["crop"] > field_size // binning:
            raise InputError(f"crop must be a multiple of 8 and at most the (binned) field "
                             f"size ({field_size // binning}), got {settings['crop']}")
        state = {"step": 0, "settings": settings, "losses": [],
                 "init_weights": Path(init_weights).name if init_weights else None,
                 "init_widths": [int(w) for w in init_widths] if init_widths else None,
                 "pool": {"preset": preset, "fields": n_fields, "field_size": field_size,
                          "seeds": [seed, seed + n_fields - 1], "snr_min": settings["snr_min"],
                          "kinds": [dict(k) for k in FIELD_KINDS.get(preset, ())],
                          "randomise": float(randomise)}}
    settings, pool = state["settings"], state["pool"]
    pool_path = run_dir / POOL_FILE
    if pool_path.exists():
        images, centres = load_pool(pool_path)
    else:
        images, centres = build_pool(pool_path, pool["fields"], pool["field_size"],
                                     pool["seeds"][0], pool["preset"], pool["snr_min"],
                                     workers, log, randomise=pool.get("randomise", 0.0))
    binning = settings.get("binning", 1)
    if binning > 1:
        images = bin_images(images, binning).astype(np.float16)
        centres = [binned_positions(c, binning) for c in centres]
    targets = np.stack([render_target(c, images.shape[1:3], settings["sigma"])
                        for c in centres])
    keras.utils.set_random_seed(pool["seeds"][0])
    model = build_centre_net(images.shape[-1], tuple(settings["widths"]))
    optimizer = keras.optimizers.AdamW(settings["learning_rate"],
                                       weight_decay=settings["weight_decay"])
    optimizer.build(model.trainable_variables)
    if state["step"]:
        model.load_weights(str(run_dir / WEIGHTS_FILE))
        with np.load(run_dir / OPTIMIZER_FILE) as saved:
            for i, variable in enumerate(optimizer.variables):
                variable.assign(saved[f"v{i}"])
        log(f"resumed at step {state['step']}")
    elif init_weights:
        widths = list(state.get("init_widths") or settings["widths"])
        try:
            start_net = load_centre_net(init_weights, images.shape[-1], tuple(widths))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot start from {init_weights}: not the weights of a centre "
                             f"network of widths {widths} ({exc})") from None
        if widths == settings["widths"]:
            model.set_weights(start_net.get_weights())
            log(f"starting from {init_weights}")
        else:
            try:
                widen_centre_net(start_net, model, seed=pool["seeds"][0])
            except ValueError as exc:
                raise InputError(f"cannot start from {init_weights}: {exc}") from None
            log(f"starting from {init_weights}, widened from widths {widths}")

    @tf.function
    def train_step(x, y, rate):
        optimizer.learning_rate.assign(rate)
        with tf.GradientTape() as tape:
            loss = focal_loss(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    start, running, last_save = time.time(), [], time.time()
    while state["step"] < settings["steps"]:
        step = state["step"]
        # One stream per step: a resumed run draws the batches an uninterrupted one would.
        rng = np.random.default_rng([pool["seeds"][0], step])
        x, y = make_batch(images, targets, rng, settings["batch_size"], settings["crop"],
                          settings["offset_sigma"], settings.get("damage", 0.0))
        rate = np.float32(learning_rate_at(step, settings))
        running.append(float(train_step(tf.constant(x), tf.constant(y), tf.constant(rate))))
        state["step"] = step + 1
        if state["step"] % 100 == 0:
            state["losses"].append([state["step"], float(np.mean(running))])
            log(f"step {state['step']}/{settings['steps']} loss {np.mean(running):.4f}")
            running = []
        out_of_time = max_seconds is not None and time.time() - start > max_seconds
        if out_of_time or state["step"] == settings["steps"] or time.time() - last_save > 300:
            _save(run_dir, model, optimizer, state)
            last_save = time.time()
        if out_of_time:
            log(f"stopped by the time limit at step {state['step']}")
            break
    if state["step"] == settings["steps"]:
        _save(run_dir, model, optimizer, state)
    return model, state


def centres_section(state, weights_name, threshold, flips=True):
    """The ``centres`` section of a Mask R-CNN card for a finished run."""
    settings = state["settings"]
    training = {"steps": state["step"], "batch_size": settings["batch_size"],
                "crop": settings["crop"], "learning_rate": settings["learning_rate"],
                "target_sigma_px": settings["sigma"], "damage": settings.get("damage", 0.0),
                "pool": state["pool"], "initialised_from": state.get("init_weights"),
                "final_loss": state["losses"][-1][1] if state["losses"] else None}
    if state.get("init_widths") and state["init_widths"] != list(settings["widths"]):
        training["widened_from_widths"] = state["init_widths"]
    return {"weights": weights_name, "widths": list(settings["widths"]),
            "threshold": float(threshold), "flips": bool(flips),
            "binning": int(settings.get("binning", 1)),
            "training": training}


def attach_centres(run_dir, maskrcnn_path, threshold, flips=True):
    """Copy a finished run's weights beside a Mask R-CNN and record them in its card.

    The weights become ``<model>.centres.weights.h5``; the card gets a
    ``centres`` section (:func:`centres_section`), so the engine runs the
    network with that model; the section's other settings (the rules chosen
    around the network, e.g. ``confirm_instances``) are kept.
    """
    import shutil

    from ..models.card import read_model_card, write_model_card

    run_dir, maskrcnn_path = Path(run_dir), Path(maskrcnn_path)
    state = json.loads((run_dir / STATE_FILE).read_text())
    if state["step"] < state["settings"]["steps"]:
        raise InputError(f"{run_dir} has not finished training "
                         f"({state['step']}/{state['settings']['steps']} steps)")
    card = read_model_card(maskrcnn_path)
    from ..simulation.presets import get_preset

    if tuple(card["bands"]) != get_preset(state["pool"]["preset"]).band_names:
        raise InputError(f"{run_dir} was trained on other bands than {maskrcnn_path}'s")
    name = maskrcnn_path.name.removesuffix(".keras") + ".centres.weights.h5"
    with local_file_written_whole(maskrcnn_path.with_name(name)) as tmp:
        shutil.copyfile(run_dir / WEIGHTS_FILE, tmp)
    section = centres_section(state, name, threshold, flips)
    card["centres"] = {**(card.get("centres") or {}), **section}
    write_model_card(maskrcnn_path, card)
    return card
