"""Convert the published Morpheus checkpoint (TF1) into the Keras U-Net.

The ``morpheus-astro`` wheel ships the trained model as a TensorFlow 1
checkpoint in ``morpheus/core/model_weights/`` (``model-440``). The package's
own code needs TF1-era libraries, so it is never imported here: its location
is found with :func:`importlib.util.find_spec`, the variables are read with
``tf.train.load_checkpoint`` and copied into :func:`build_morpheus_unet`.

Conversion (not inference) uses TensorFlow directly; so does
:func:`run_original_graph`, which restores the original meta graph and is the
reference the converted model is checked against.
"""

import importlib.util
from pathlib import Path

import numpy as np

from ..classes import MORPHOLOGY_CLASSES
from ..errors import DependencyError, InputError
from ..hashing import file_sha256
from ..storage import local_file_written_whole
from .card import WEIGHTS_DIR, write_model_card

#: Name of the checkpoint inside ``morpheus/core/model_weights``.
CHECKPOINT_NAME = "model-440"
#: The inference copy of the network inside the meta graph.
ORIGINAL_INPUT = "IteratorGetNext_1:0"
ORIGINAL_LOGITS = "final_conv_1/conv/BiasAdd:0"

#: Morpheus bands in input channel order, and the HST filters they are.
MORPHEUS_BANDS = ("H", "J", "V", "Z")
MORPHEUS_FILTERS = ("F160W", "F125W", "F606W", "F850LP")

INSTALL_HINT = ("the published Morpheus weights come with the morpheus-astro package: "
                "pip install 'astrodask[morpheus]' (or: pip install --no-deps morpheus-astro==0.5.1)")


#: Algorithm 1 levels of the published weights in U-Net-only runs (see its ``choice``).
SEGMENTATION = {
    "threshold": 0.99,
    "background_level": 0.9995,
    "choice": (
        "Algorithm 1 levels of U-Net-only runs, chosen on two validation 2048x2048 hst mosaics "
        "(seeds 3000100 standard and 3000101 deep, never reported; "
        "benchmarks/catalog_threshold.py --preset hst --models morpheus --segmentation) as the "
        "pair that maximises the summed harmonic mean of completeness (S/N >= 10) and purity (2"
        " px one-to-one). From 0.1/0.9: standard 0.238/0.639 -> 0.769/0.722, deep 0.314/0.677 "
        "-> 0.549/0.683. The published network's background probability stays high on faint "
        "sources in these simulations, so only near-certain sky counts as sky."
    ),
}


def find_morpheus_checkpoint():
    """Return the checkpoint prefix (``.../model_weights/model-440``) of the installed package.

    Raises
    ------
    DependencyError
        If ``morpheus-astro`` is not installed or its weights are missing.
    """
    spec = importlib.util.find_spec("morpheus")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"morpheus-astro is not installed; {INSTALL_HINT}")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    prefix = package_dir / "core" / "model_weights" / CHECKPOINT_NAME
    if not Path(str(prefix) + ".index").exists():
        raise DependencyError(f"no Morpheus checkpoint at {prefix}; {INSTALL_HINT}")
    return prefix


def _keras_to_tf_scope(layer_name):
    """Map a Keras block name (``down1_block2``) to its TF1 variable scope."""
    if layer_name == "mid":
        return "intermediate-conv"
    path, block = layer_name.split("_block")
    direction, level = ("downconv", path[4:]) if path.startswith("down") else ("upconv", path[2:])
    return f"{direction}-{level}/conv-{block}"


def checkpoint_weights(prefix):
    """Read the trained variables of a Morpheus checkpoint.

    Returns
    -------
    dict
        Variable name -> ndarray, without the optimiser slots.
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    names = reader.get_variable_to_shape_map()
    return {name: reader.get_tensor(name) for name in names
            if "Adam" not in name and not name.startswith("beta")}


def load_checkpoint_into(model, variables):
    """Copy checkpoint ``variables`` into a model built by ``build_morpheus_unet``."""
    used = set()
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            scope = _keras_to_tf_scope(layer.name.removesuffix("_bn")) + "/batch_normalization/"
            keys = [scope + k for k in ("gamma", "beta", "moving_mean", "moving_variance")]
        elif layer.name.endswith("_conv") or layer.name == "logits":
            scope = ("final_conv" if layer.name == "logits"
                     else _keras_to_tf_scope(layer.name.removesuffix("_conv"))) + "/conv/"
            keys = [scope + "kernel", scope + "bias"]
        else:
            continue
        missing = [k for k in keys if k not in variables]
        if missing:
            raise InputError(f"checkpoint lacks {missing[0]}: not a Morpheus checkpoint")
        layer.set_weights([variables[k] for k in keys])
        used.update(keys)
    unused = sorted(set(variables) - used)
    if unused:
        raise InputError(f"checkpoint variable {unused[0]} has no place in the Keras model")


def run_original_graph(batch, prefix=None):
    """Logits of the original Morpheus graph (inference copy) for ``batch``.

    Parameters
    ----------
    batch : ndarray, shape (n, 40, 40, 4)
        Standardised windows, bands H, J, V, Z.
    prefix : path, optional
        Checkpoint prefix; the installed package's by default.

    Returns
    -------
    ndarray, shape (n, 40, 40, 5)
    """
    import tensorflow as tf

    prefix = str(prefix or find_morpheus_checkpoint())
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, prefix)
            return session.run(ORIGINAL_LOGITS,
                               feed_dict={ORIGINAL_INPUT: np.asarray(batch, np.float32)})


def check_inputs(seed=0):
    """Random and structured 40x40x4 windows, standardised as Morpheus does."""
    from ..morphology.windows import standardise_windows

    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(4, 40, 40, 4))
    yy, xx = np.mgrid[:40, :40]
    structured = []
    for k, (cy, cx, r) in enumerate([(20, 20, 3), (12, 27, 6), (30, 10, 1.5), (20, 20, 12)]):
        profile = np.exp(-np.hypot(yy - cy, xx - cx) / r)
        bands = np.stack([profile * (1 + 0.3 * b) for b in range(4)], axis=-1)
        structured.append(bands * 50 + 0.1 * rng.normal(size=bands.shape))
    structured.append(np.zeros((40, 40, 4)))
    batch = np.concatenate([noise, np.stack(structured)]).astype(np.float32)
    return standardise_windows(batch)


def _package_version(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def import_morpheus(out=None, verify=True):
    """Convert the installed Morpheus checkpoint to ``.keras`` + model card.

    Parameters
    ----------
    out : path, optional
        Output ``.keras`` file; default the shipped ``weights/morpheus.keras``.
    verify : bool
        Run the original TF1 graph on random and structured windows and
        record the largest softmax difference in the card (fails above 1e-4).

    Returns
    -------
    Path
        The written ``.keras`` file.
    """
    import keras

    from ..morphology.windows import normalisation_card
    from .unet import MORPHEUS_CONFIG, build_morpheus_unet, logits_model

    prefix = find_morpheus_checkpoint()
    out = Path(out) if out else WEIGHTS_DIR / "morpheus.keras"
    if out.suffix != ".keras":
        raise InputError(f"output {out} must end in .keras")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = build_morpheus_unet()
    load_checkpoint_into(model, checkpoint_weights(prefix))

    check = {}
    if verify:
        batch = check_inputs()
        reference = keras.ops.convert_to_numpy(keras.ops.softmax(run_original_graph(batch, prefix)))
        ours = np.asarray(model.predict_on_batch(batch))
        ours_logits = np.asarray(logits_model(model).predict_on_batch(batch))
        max_diff = float(np.abs(ours - reference).max())
        if max_diff > 1e-4:
            raise InputError(f"converted model differs from the original graph by {max_diff:.2e}")
        check = {"max_abs_softmax_diff_vs_original_graph": max_diff,
                 "max_abs_logit_diff_vs_original_graph":
                     float(np.abs(ours_logits - run_original_graph(batch, prefix)).max()),
                 "windows_checked": int(batch.shape[0])}

    with local_file_written_whole(out) as tmp:
        model.save(tmp)
    card = {
        "name": out.stem,
        "architecture": "morpheus-unet",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in MORPHEUS_CONFIG.items()},
        "bands": list(MORPHEUS_BANDS),
        "filters": list(MORPHEUS_FILTERS),
        "instrument": "HST ACS/WFC3 (CANDELS)",
        "pixel_scale_arcsec": 0.06,
        "normalisation": normalisation_card(40),
        "window": {"size": 40, "counted_inner": 30},
        "classes": list(MORPHOLOGY_CLASSES),
        "training_data": "CANDELS GOODS-S 5-band HST images with visual classifications "
                         "(Kartaltepe et al. 2015), Hausen & Robertson 2020",
        "source": {
            "package": f"morpheus-astro {_package_version('morpheus-astro')}",
            "checkpoint": f"morpheus/core/model_weights/{CHECKPOINT_NAME}",
            "checkpoint_data_sha256": file_sha256(str(prefix) + ".data-00000-of-00001"),
            "paper": "Hausen & Robertson 2020, ApJS 248, 20 (arXiv:1906.11248)",
            "licence": "MIT (morpheus-astro)",
        },
        "metrics": {"conversion_check": check} if check else {},
        "segmentation": dict(SEGMENTATION),
    }
    write_model_card(out, card)
    return out
