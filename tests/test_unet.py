"""The Keras Morpheus U-Net against the original TF1 graph, on TF and JAX."""

import os
import subprocess
import sys

import numpy as np
import pytest

from astrodask.cli import main
from astrodask.models import morpheus_weights
from astrodask.models.card import read_model_card
from astrodask.models.morpheus_weights import check_inputs, run_original_graph
from astrodask.morphology.windows import receptive_field_radius
from astrodask.models.unet import (LegacyBicubicUpsampling2D, build_unet, load_unet,
                                   logits_model, with_sampling)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def shipped():
    return load_unet("morpheus")


@pytest.fixture(scope="module")
def reference():
    batch = check_inputs(seed=7)
    return batch, run_original_graph(batch)


def test_shipped_model_matches_original_graph(shipped, reference):
    model, card = shipped
    batch, logits = reference
    ours = np.asarray(model.predict_on_batch(batch))
    assert ours.shape == (9, 40, 40, 5)
    assert np.abs(ours - _softmax(logits)).max() <= 1e-4
    assert np.abs(np.asarray(logits_model(model).predict_on_batch(batch)) - logits).max() <= 1e-3
    # the structured windows are not all classified alike: the check has teeth
    assert len(np.unique(ours.argmax(-1))) >= 2
    assert card["bands"] == ["H", "J", "V", "Z"]
    assert card["classes"] == ["spheroid", "disk", "irregular", "point_source", "background"]
    assert card["pixel_scale_arcsec"] == 0.06


def test_untrained_model_does_not_match(reference):
    batch, logits = reference
    fresh = build_unet()
    assert np.abs(np.asarray(fresh.predict_on_batch(batch)) - _softmax(logits)).max() > 1e-2


def test_class_order_matches_morpheus_package():
    # the package's own list, read as text: its modules cannot be imported (TF1)
    helpers = morpheus_weights.find_morpheus_checkpoint().parents[1] / "helpers.py"
    source = helpers.read_text()
    assert 'MORPHOLOGIES = ["spheroid", "disk", "irregular", "point_source", "background"]' in source


def test_import_morpheus_writes_model_and_card(tmp_path, reference):
    out = tmp_path / "m.keras"
    assert main(["models", "import-morpheus", "--out", str(out)]) == 0
    card = read_model_card(out)
    assert card["metrics"]["conversion_check"]["max_abs_softmax_diff_vs_original_graph"] <= 1e-4
    assert card["normalisation"]["kind"] == "per_window_standardisation"
    model, _ = load_unet(out)
    batch, logits = reference
    assert np.abs(np.asarray(model.predict_on_batch(batch)) - _softmax(logits)).max() <= 1e-4


def test_import_morpheus_without_package(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(morpheus_weights.importlib.util, "find_spec", lambda name: None)
    assert main(["models", "import-morpheus", "--out", str(tmp_path / "m.keras")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astrodask: error: morpheus-astro is not installed")
    assert "pip install" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("size", [(5, 5), (10, 20), (7, 33)])
def test_bicubic_layer_matches_tf1_resize(size):
    import tensorflow as tf

    x = np.random.default_rng(3).normal(size=(2, *size, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bicubic(x, (2 * size[0], 2 * size[1]),
                                                 align_corners=True).numpy()
    got = np.asarray(LegacyBicubicUpsampling2D()(x))
    assert np.abs(got - expected).max() < 1e-5


def test_half_pixel_sampling_is_translation_equivariant(shipped):
    model, _ = shipped
    r = receptive_field_radius(model)
    side = 8 * (2 * r // 8 + 3)
    x = np.random.default_rng(4).normal(size=(1, side + 8, side, 4)).astype(np.float32)
    for sampling, equivariant in [("half_pixel", True), ("align_corners", False)]:
        net = with_sampling(model, sampling)
        whole = np.asarray(net.predict_on_batch(x))
        shifted = np.asarray(net.predict_on_batch(x[:, 8:]))
        # beyond the receptive field from the borders, a shift by one coarse step
        # (8 pixels) only shifts the output
        diff = np.abs(whole[:, 8 + r:-r, r:-r] - shifted[:, r:-r, r:-r]).max()
        assert (diff < 1e-4) == equivariant, (sampling, diff)


def test_configurable_bands_and_classes():
    model = build_unet(n_bands=3, n_classes=4, down_filters=(4, 8), up_filters=(4, 8),
                       down_blocks=1, mid_filters=4, up_blocks=1)
    out = np.asarray(model.predict_on_batch(np.zeros((2, 16, 24, 3), np.float32)))
    assert out.shape == (2, 16, 24, 4)
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)


def test_jax_backend_matches_tensorflow(shipped, tmp_path):
    model, _ = shipped
    batch = check_inputs(seed=11)
    tile = np.random.default_rng(5).normal(size=(1, 64, 48, 4)).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    np.save(tmp_path / "tile.npy", tile)
    script = (
        "import sys, numpy as np, keras\n"
        "from astrodask.models.unet import load_unet\n"
        "assert keras.backend.backend() == 'jax'\n"
        "m, _ = load_unet('morpheus')\n"
        "d = sys.argv[1]\n"
        "np.save(d + '/jax_batch.npy', np.asarray(m.predict_on_batch(np.load(d + '/batch.npy'))))\n"
        "np.save(d + '/jax_tile.npy', np.asarray(m.predict_on_batch(np.load(d + '/tile.npy'))))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, check=True,
                   capture_output=True, timeout=300)
    for name, x in [("batch", batch), ("tile", tile)]:
        tf_out = np.asarray(model.predict_on_batch(x))
        jax_out = np.load(tmp_path / f"jax_{name}.npy")
        assert np.abs(tf_out - jax_out).max() <= 1e-4
