"""The inference path gives the same detections on JAX as on TensorFlow."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from astrodask.models.maskrcnn import build_maskrcnn, detect

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from astrodask.models.maskrcnn import detect, load_maskrcnn
    model = load_maskrcnn(sys.argv[1])
    images = np.load(sys.argv[2])
    results = detect(model, images)
    out = {}
    for i, r in enumerate(results):
        out[f"boxes{i}"] = r.boxes
        out[f"classes{i}"] = r.class_ids
        out[f"scores{i}"] = r.scores
        out[f"masks{i}"] = r.masks
    np.savez(sys.argv[3], **out)
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.parametrize("roi_min_level, flips", [(2, False), (1, True)])
def test_jax_backend_gives_the_same_detections(tmp_path, roi_min_level, flips):
    import keras

    # Untrained weights: seeded, so that the model surely detects something to compare.
    keras.utils.set_random_seed(0)
    model = build_maskrcnn(stem_width=8, stage_widths=(8, 8, 16, 16), fpn_channels=8,
                           head_units=16, mask_channels=8, detection_min_confidence=0.0,
                           detection_max_instances=30, rpn_post_nms_inference=200,
                           roi_min_level=roi_min_level, detection_flips=flips)
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    images[:, 20:26, 30:36] += 20.0  # a bright source to detect
    expected = detect(model, images)
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(model_path),
                    str(tmp_path / "images.npy"), str(tmp_path / "jax.npz")],
                   env=env, check=True, capture_output=True, timeout=300)
    got = np.load(tmp_path / "jax.npz")
    for i, ref in enumerate(expected):
        assert len(ref) > 0
        np.testing.assert_array_equal(got[f"classes{i}"], ref.class_ids)
        np.testing.assert_allclose(got[f"boxes{i}"], ref.boxes, atol=1e-3)
        np.testing.assert_allclose(got[f"scores{i}"], ref.scores, atol=1e-4)
        # masks may differ only where a probability sits on the threshold
        differ = np.count_nonzero(got[f"masks{i}"] != ref.masks)
        assert differ <= 0.001 * ref.masks.size
