"""Mask R-CNN training: data from fields, augmentation, targets, losses, resume."""

import importlib.util
import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from astrodask.cli import main
from astrodask.evaluate import boxes_from_masks
from astrodask.models.maskrcnn import MaskRCNNConfig
from astrodask.models.maskrcnn.anchors import generate_anchors
from astrodask.models.maskrcnn.detection import box_iou
from astrodask.models.maskrcnn.rpn import rpn_targets
from astrodask.train.maskrcnn import TrainSettings, load_checkpoint, train_maskrcnn
from astrodask.train.maskrcnn_data import (
    augment, crop, example_from_field, field_truth, load_examples, save_examples,
)
from astrodask.train.maskrcnn_targets import roi_targets
from maskrcnn_fake_field import fake_field

ROOT = Path(__file__).resolve().parents[1]

TINY = MaskRCNNConfig(stem_width=8, stage_widths=(8, 8, 16, 16), fpn_channels=8, head_units=16,
                      mask_channels=8, rois_per_image=16, rpn_anchors_per_image=64,
                      rpn_pre_nms_train=200, rpn_post_nms_train=50)


def test_example_from_field_keeps_classes_and_masks():
    field = fake_field((64, 64), n_stars=3, n_galaxies=2, seed=1)
    example = example_from_field(field)
    assert example.image.shape == (64, 64, 3) and example.image.dtype == np.float32
    assert list(example.class_ids) == [1, 1, 1, 2, 2]
    np.testing.assert_array_equal(example.boxes, boxes_from_masks(field.masks))


def test_field_truth_reads_simulator_object_masks():
    ObjectMask = namedtuple("ObjectMask", ["id", "box", "mask"])

    class Field:
        truth = {"id": np.array([7, 9]), "class": np.array(["galaxy", "star"])}
        label_map = np.zeros((10, 12), np.int32)

        def object_masks(self):
            return [ObjectMask(9, (1, 2, 3, 5), np.ones((2, 3), bool)),
                    ObjectMask(7, (4, 4, 6, 6), np.array([[1, 0], [1, 1]], bool))]

    classes, masks = field_truth(Field())
    assert list(classes) == [1, 2]
    assert masks.shape == (2, 10, 12)
    assert masks[0, 1:3, 2:5].all() and masks[0].sum() == 6
    assert masks[1].sum() == 3 and masks[1, 4, 4]


def test_crop_and_augment_keep_masks_on_their_objects():
    example = example_from_field(fake_field((128, 128), 8, 8, seed=2))
    window = crop(example, 32, 16, 64)
    assert window.image.shape == (64, 64, 3)
    np.testing.assert_array_equal(window.boxes, boxes_from_masks(window.masks))
    rng = np.random.default_rng(0)
    for _ in range(6):
        out = augment(window, rng, blur_probability=0.0, offset_sigma=0.0)
        np.testing.assert_array_equal(out.boxes, boxes_from_masks(out.masks))
        # each object's mask covers the same (rotated/mirrored) pixel values
        for mask_before, mask_after in zip(window.masks, out.masks):
            assert np.isclose(window.image[mask_before].sum(), out.image[mask_after].sum(),
                              rtol=1e-5)
    blurred = augment(window, np.random.default_rng(1), blur_probability=1.0, offset_sigma=0.0)
    assert blurred.image.std() < window.image.std()


def test_crop_of_a_window_without_objects():
    example = example_from_field(fake_field((128, 128), 1, 0, seed=2))
    y, x = example.boxes[0, :2].astype(int)
    window = crop(example, 64 if y < 64 else 0, 64 if x < 64 else 0, 64)   # the other corner
    assert window.masks.shape == (0, 64, 64) and window.boxes.shape == (0, 4)
    assert window.class_ids.shape == (0,)


def test_examples_round_trip_through_npz(tmp_path):
    examples = [example_from_field(fake_field((64, 64), 2, 2, seed=s)) for s in range(2)]
    save_examples(tmp_path / "pool.npz", examples)
    again = load_examples(tmp_path / "pool.npz")
    for a, b in zip(examples, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_rpn_targets_give_every_object_an_anchor():
    config = MaskRCNNConfig()
    anchors = generate_anchors((64, 64), config.anchor_scales, config.anchor_ratios)
    gt = np.array([[10, 10, 13, 12], [30, 30, 60, 50]], np.float32)  # a 3x2 px source too
    labels, deltas = rpn_targets(anchors, gt, config, np.random.default_rng(0))
    positives = np.flatnonzero(labels == 1)
    assert np.count_nonzero(labels >= 0) == config.rpn_anchors_per_image
    matched = box_iou(anchors[positives], gt).argmax(axis=1)
    assert set(matched) == {0, 1}
    assert np.abs(deltas[labels != 1]).sum() == 0


def test_roi_targets_include_truth_boxes():
    config = MaskRCNNConfig(rois_per_image=8)
    gt = np.array([[4, 4, 12, 12]], np.float32)
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 4:12, 4:12] = True
    proposals = np.array([[20, 20, 30, 30]], np.float32)
    rois, classes, deltas, mask_targets = roi_targets(proposals, gt, np.array([2]), masks,
                                                      config, np.random.default_rng(0))
    assert list(classes) == [2, 0]
    np.testing.assert_allclose(rois[0], gt[0])
    np.testing.assert_allclose(deltas[0], 0, atol=1e-6)
    # the box is the mask's own box: all of it is object (bilinear resampling
    # only rounds off the four corner samples)
    assert mask_targets.shape == (1, 28, 28)
    assert mask_targets[0, 1:-1].all() and mask_targets[0, :, 1:-1].all()


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_training_resumes_where_it_stopped(tmp_path):
    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
    settings = TrainSettings(steps=1, batch_size=2, crop_size=64, warmup_steps=1, log_every=1,
                             checkpoint_every_s=1e9, compiled=False)
    _, state = train_maskrcnn(pool, tmp_path / "a", config=TINY, settings=settings, log=lambda _: None)
    assert state["step"] == 1 and len(state["history"]) == 1
    settings.steps = 2
    resumed, state = train_maskrcnn(pool, tmp_path / "a", settings=settings, log=lambda _: None)
    assert state["step"] == 2
    straight, _ = train_maskrcnn(pool, tmp_path / "b", config=TINY, settings=settings,
                                 log=lambda _: None)
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    saved = json.loads((tmp_path / "a" / "state.json").read_text())
    assert saved["step"] == 2 and all(np.isfinite(list(h.values())).all()
                                      for h in saved["history"])


def test_explicit_class_weights_win_on_resume_and_none_keeps_the_saved(tmp_path, monkeypatch):
    import astrodask.train.maskrcnn as fit

    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
    options = dict(batch_size=2, crop_size=64, warmup_steps=1, log_every=1,
                   checkpoint_every_s=1e9, compiled=False)
    train_maskrcnn(pool, tmp_path, config=TINY, log=lambda _: None,
                   settings=TrainSettings(steps=1, class_weights=(1.0, 4.0, 1.0), **options))
    used = []
    step = fit._train_step

    def recording_step(model, runners, apply, batch, rng, class_weights):
        used.append(list(class_weights))
        return step(model, runners, apply, batch, rng, class_weights)

    monkeypatch.setattr(fit, "_train_step", recording_step)
    _, state = train_maskrcnn(pool, tmp_path, log=lambda _: None,
                              settings=TrainSettings(steps=2, **options))
    assert used == [[1.0, 4.0, 1.0]] and "changes" not in state
    _, state = train_maskrcnn(pool, tmp_path, log=lambda _: None,
                              settings=TrainSettings(steps=3, class_weights=(1, 1, 1), **options))
    assert used[1:] == [[1, 1, 1]]
    assert state["changes"] == [{"step": 2, "class_weights": [1, 1, 1]}]
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["settings"]["class_weights"] == [1, 1, 1]


def test_cli_rejects_bad_crop(capsys):
    assert main(["train", "maskrcnn", "unused", "--crop", "100"]) == 2
    assert "multiple of 64" in capsys.readouterr().err


def test_cli_evaluate_unknown_model(capsys):
    assert main(["evaluate", "no_such_model", "--fields", "1"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_train_on_simulations_then_evaluate_into_the_card(tmp_path, capsys):
    from astrodask.models.card import read_model_card
    from astrodask.train.maskrcnn import train_from_simulations

    # batch 2: TensorFlow 2.21's oneDNN kernels corrupt the heap on the backward
    # pass of this tiny-width model at batch 1 (the shipped widths are fine)
    settings = TrainSettings(steps=1, batch_size=2, crop_size=64, warmup_steps=1,
                             compiled=False, ema_momentum=0.9)
    train_from_simulations(tmp_path, n_fields=2, field_size=64, seed=5, config=TINY,
                           settings=settings, log=lambda _: None)
    card = read_model_card(tmp_path / "model.keras")
    assert card["bands"] == ["g", "r", "z"] and card["pixel_scale_arcsec"] == 0.262
    assert card["training"]["data"]["seeds"] == [5, 6] and card["training"]["steps"] == 1
    assert card["training"]["ema_momentum"] == 0.9
    code = main(["evaluate", str(tmp_path / "model.keras"), "--fields", "1", "--size", "64",
                 "--iou", "bbox", "--update-card", "--out", str(tmp_path / "report.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| SEP | galaxy |" in out and "| ≥ 100 |" in out
    evaluation = read_model_card(tmp_path / "model.keras")["evaluation"]
    assert set(evaluation) == {"test_set", "maskrcnn", "sep", "completeness_by_snr"}
    assert set(evaluation["maskrcnn"]["bbox"]["metrics"]) == {"star", "galaxy", "combined"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["seed"] == 1_000_000
    # every truth object of the field sits in one S/N bin
    bins = report["completeness_by_snr"]["maskrcnn"]
    assert sum(b["n"] for b in bins) == report["maskrcnn"]["bbox"]["n_truth"] > 0
    assert bins[-1]["high"] is None and [b["n"] for b in report["completeness_by_snr"]["sep"]] \
        == [b["n"] for b in bins]
    assert report["settings"]["detection_flips"] is False
    # with the flips the model does not use by default, the metrics go beside the card's own
    assert main(["evaluate", str(tmp_path / "model.keras"), "--fields", "1", "--size", "64",
                 "--iou", "bbox", "--no-baseline", "--flips", "--update-card"]) == 0
    card = read_model_card(tmp_path / "model.keras")
    assert card["evaluation"] == evaluation
    assert card["evaluation_with_flips"]["test_set"]["detection_flips"] is True


def test_class_weights_make_a_weighted_mean():
    from astrodask.train.maskrcnn_losses import head_losses

    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    classes = np.array([0, 1])
    ce = -np.log(np.exp(logits[[0, 1], classes]) / np.exp(logits).sum(axis=1))
    deltas = np.zeros((2, 3, 4), np.float32)
    empty = np.zeros((0, 28, 28), np.float32)
    plain = head_losses(logits, deltas, None, classes, np.zeros((2, 4), np.float32), empty)
    weighted = head_losses(logits, deltas, None, classes, np.zeros((2, 4), np.float32), empty,
                           class_weights=(1.0, 4.0, 1.0))
    assert float(plain[0]) == pytest.approx(ce.mean(), rel=1e-5)
    assert float(weighted[0]) == pytest.approx((ce[0] + 4 * ce[1]) / 5, rel=1e-5)
    assert float(weighted[2]) == 0.0  # no positives, no mask loss


def test_warm_start_copies_shared_layers_and_starts_p1_from_p2():
    from astrodask.models.maskrcnn import build_maskrcnn
    from astrodask.train.maskrcnn import warm_start

    source = build_maskrcnn(TINY)
    model = build_maskrcnn(TINY.replace(roi_min_level=1))
    fresh = warm_start(model, source)
    assert fresh == ["backbone/fpn_lateral1", "backbone/fpn_p1"]
    for layer in source.backbone.layers:
        for a, b in zip(layer.get_weights(), model.backbone.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for part in ("rpn_head", "box_head", "mask_head"):
        for a, b in zip(_weights(getattr(source, part)), _weights(getattr(model, part))):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(model.backbone.get_layer("fpn_p1").get_weights(),
                    source.backbone.get_layer("fpn_p2").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not any(w.any() for w in model.backbone.get_layer("fpn_lateral1").get_weights())
    # P2..P6 and the RPN outputs are the source's exactly
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    new_pyramid, new_logits, _ = model(images)
    old_pyramid, old_logits, _ = source(images)
    for a, b in zip(new_pyramid[1:], old_pyramid):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_logits), np.asarray(old_logits), atol=1e-5)


def test_warm_start_spreads_the_stem_over_more_bands():
    from astrodask.models.maskrcnn import build_maskrcnn
    from astrodask.train.maskrcnn import warm_start

    source = build_maskrcnn(TINY)                                    # g, r, z
    model = build_maskrcnn(TINY.replace(bands=("v", "z", "j", "h")))
    assert warm_start(model, source) == []
    kernel = model.backbone.get_layer("stem_conv").get_weights()[0]
    old = source.backbone.get_layer("stem_conv").get_weights()[0]
    assert kernel.shape[2] == 4
    np.testing.assert_allclose(kernel[:, :, :2].sum(axis=2), old[:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(kernel[:, :, 3], old[:, :, 2])
    # the same image in every band: the same pyramid as the source's on its three bands
    plane = np.random.default_rng(1).normal(size=(1, 64, 64, 1)).astype(np.float32)
    new_pyramid, _, _ = model(np.repeat(plane, 4, axis=-1))
    old_pyramid, _, _ = source(np.repeat(plane, 3, axis=-1))
    for a, b in zip(new_pyramid, old_pyramid):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_warm_start_grows_anchor_scale_factors_without_changing_proposals():
    from astrodask.models.maskrcnn import build_maskrcnn
    from astrodask.models.maskrcnn.anchors import decode_boxes
    from astrodask.train.maskrcnn import warm_start

    source = build_maskrcnn(TINY)
    model = build_maskrcnn(TINY.replace(anchor_scale_factors=(1.0, 0.5)))
    assert model.config.n_anchors == 6
    assert warm_start(model, source) == []
    images = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    _, old_logits, old_deltas = source(images)
    _, new_logits, new_deltas = model(images)
    old_anchors = generate_anchors((64, 64), TINY.anchor_scales, TINY.anchor_ratios)
    new_anchors = generate_anchors((64, 64), TINY.anchor_scales, TINY.anchor_ratios, (1.0, 0.5))
    old_boxes = decode_boxes(np, np.asarray(old_deltas[0]), old_anchors, TINY.box_std)
    new_boxes = decode_boxes(np, np.asarray(new_deltas[0]), new_anchors, TINY.box_std)
    # every position: the 3 full-size and the 3 half-size anchors give the source's 3 boxes
    for half in (0, 1):
        np.testing.assert_allclose(new_boxes.reshape(-1, 2, 3, 4)[:, half],
                                   old_boxes.reshape(-1, 3, 4), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(np.asarray(new_logits[0]).reshape(-1, 2, 3)[:, half],
                                   np.asarray(old_logits[0]).reshape(-1, 3), atol=1e-5)
    # the half-size anchors are really there: 4 px on P2 for the 8 px scale
    sides = new_anchors[:, 2:] - new_anchors[:, :2]
    assert np.isclose(sides, 4.0).all(axis=1).any()


def test_training_from_saved_weights_records_them(tmp_path):
    from astrodask.models.maskrcnn import build_maskrcnn

    source = build_maskrcnn(TINY)
    source.save(tmp_path / "source.keras")
    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=0))]
    # batch 2: a one-crop batch aborts TensorFlow's eager gradient on this CPU
    # (double free, with or without P1)
    settings = TrainSettings(steps=1, batch_size=2, crop_size=64, warmup_steps=1, log_every=1,
                             checkpoint_every_s=1e9, compiled=False)
    _, state = train_maskrcnn(pool, tmp_path / "run", config=TINY.replace(roi_min_level=1),
                              settings=settings, log=lambda _: None,
                              init_from=tmp_path / "source.keras")
    assert state["initialised_from"]["fresh_layers"] == ["backbone/fpn_lateral1",
                                                         "backbone/fpn_p1"]
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["config"]["roi_min_level"] == 1 and "initialised_from" in saved


def test_a_run_from_a_model_detects_as_that_model_s_card_says(tmp_path):
    from astrodask.models.card import write_model_card
    from astrodask.train.maskrcnn import detection_settings_from

    (tmp_path / "source.keras").write_bytes(b"")
    own = TINY.replace(detection_flips=True, detection_flips_score="finding_passes",
                       detection_min_confidence=0.4, roi_min_level=2)
    write_model_card(tmp_path / "source.keras", {
        "name": "source", "architecture": "Mask R-CNN", "bands": list(TINY.bands),
        "pixel_scale_arcsec": 0.262, "normalisation": {}, "classes": list(TINY.classes),
        "config": own.to_dict()})
    lines = []
    config = detection_settings_from(TINY.replace(roi_min_level=1), tmp_path / "source.keras",
                                     log=lines.append)
    assert config.detection_flips and config.detection_flips_score == "finding_passes"
    assert config.detection_min_confidence == 0.4
    assert config.roi_min_level == 1          # what the model is stays the run's
    assert "detection_flips=True" in lines[0]
    # a model without a card: the run's own settings
    (tmp_path / "bare.keras").write_bytes(b"")
    assert detection_settings_from(TINY, tmp_path / "bare.keras") == TINY


JAX_STEP = """
import sys
sys.path.insert(0, {tests!r})
from maskrcnn_fake_field import fake_field
from astrodask.train.maskrcnn import TrainSettings, train_maskrcnn
from astrodask.train.maskrcnn_data import example_from_field
from test_maskrcnn_train import TINY, JAX_STEPS
import keras
assert keras.backend.backend() == "jax"
pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
for compiled in (False, True):
    train_maskrcnn(pool, {run!r} + str(int(compiled)), config=TINY,
                   settings=TrainSettings(**dict(JAX_STEPS, compiled=compiled)),
                   init_from={source!r}, log=print)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""

ONE_STEP = dict(steps=1, batch_size=2, crop_size=64, warmup_steps=1, log_every=1,
                checkpoint_every_s=1e9, compiled=False)
# one step at a learning rate still warming up, the weights' moving average kept (a
# second step would sample other RoIs from proposals that differ in the last digits)
JAX_STEPS = dict(ONE_STEP, warmup_steps=2, ema_momentum=0.9)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_training_step_on_jax_without_tensorflow_matches_tensorflow(tmp_path):
    # the machines lent with a GPU have JAX, not TensorFlow: one step there must
    # draw the same batch and targets and move the weights as TensorFlow does
    import keras

    from astrodask.models.maskrcnn import build_maskrcnn, load_maskrcnn

    keras.utils.set_random_seed(3)
    build_maskrcnn(TINY).save(tmp_path / "source.keras")
    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
    model, state = train_maskrcnn(pool, tmp_path / "tf", config=TINY,
                                  settings=TrainSettings(**JAX_STEPS),
                                  init_from=tmp_path / "source.keras", log=lambda _: None)
    hidden = tmp_path / "hide" / "tensorflow"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('no tensorflow on this machine')\n")
    script = JAX_STEP.format(tests=str(Path(__file__).parent), run=str(tmp_path / "jax"),
                             source=str(tmp_path / "source.keras"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                                 "PYTHONPATH": os.pathsep.join([str(hidden.parent), str(ROOT)])},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout
    source = load_maskrcnn(tmp_path / "source.keras")
    # op by op (targets padded to a few shapes) and compiled by XLA (backbone and RPN,
    # ROIAlign's windows, heads and losses, the optimizer's update with the moving average)
    for run in ("jax0", "jax1"):
        on_jax = json.loads((tmp_path / run / "state.json").read_text())
        for name, value in state["history"][0].items():
            if name != "seconds":
                assert on_jax["history"][0][name] == pytest.approx(value, rel=1e-3), (run, name)
        moved = load_maskrcnn(tmp_path / run / "model.keras")
        changed = 0
        for a, b, before in zip(_weights(model), _weights(moved), _weights(source)):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
            changed += not np.allclose(a, before)
        assert changed > 0


def test_padded_targets_give_the_same_losses():
    # padding the RoIs and positives to a few shapes (for JAX) adds rows that carry no loss
    from astrodask.models.maskrcnn import build_maskrcnn
    from astrodask.train.maskrcnn import compute_losses, draw_targets, make_batch, pad_targets

    model = build_maskrcnn(TINY)
    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
    batch, rng = make_batch(pool, 0, TrainSettings(**ONE_STEP))
    targets = draw_targets(model, batch, rng)
    padded = pad_targets(targets, roi_bucket=64, positive_bucket=16)
    assert len(padded.rois) % 64 == 0 and len(padded.mask_targets) % 16 == 0
    assert len(padded.rois) > len(targets.rois) and padded.n_rois == len(targets.rois)
    plain = compute_losses(model, batch, None, targets=targets, class_weights=[1, 4, 1])
    same = compute_losses(model, batch, None, targets=padded, class_weights=[1, 4, 1])
    for name, value in plain.items():
        assert float(same[name]) == pytest.approx(float(value), rel=1e-5), name


def test_pool_from_another_run_keeps_its_fields_and_records_every_part(tmp_path):
    from astrodask.errors import InputError
    from astrodask.train.maskrcnn import build_pool, pool_parts
    from astrodask.train.maskrcnn_data import simulated_examples

    first = tmp_path / "first"
    first.mkdir()
    build_pool(first, 2, 64, seed=5, star_density=5.0, log=lambda _: None)
    second = tmp_path / "second"
    pool = build_pool(str(second), 3, 64, seed=999, pool_from=first, log=lambda _: None)
    info = json.loads((second / "pool.json").read_text())
    assert info["n_fields"] == 3 and info["seeds"] == [5, 7]
    # mixed densities: no single figure, every part listed
    assert "star_density_per_arcmin2" not in info
    assert info["parts"] == [{"seeds": [5, 6], "star_density_per_arcmin2": 5.0},
                             {"seeds": [7, 7], "star_density_per_arcmin2": 1.5}]
    expected = load_examples(first / "pool.npz") + simulated_examples(1, 64, 7)
    assert len(load_examples(second / "pool.npz")) == 3
    for got, want in zip(pool, expected):
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.masks, want.masks)
    # pools described before parts were recorded read as one part
    assert pool_parts({"seeds": [0, 9], "star_density_per_arcmin2": 5.0}) == \
        [{"seeds": [0, 9], "star_density_per_arcmin2": 5.0}]
    for args, message in (((second, 2, 64), "more than"), ((second, 4, 32), "of 64 px"),
                          ((tmp_path / "none", 4, 64), "no cached training pool")):
        with pytest.raises(InputError, match=message):
            build_pool(tmp_path / "third", args[1], args[2], seed=0, pool_from=args[0])
    assert not (tmp_path / "third").exists()


def test_pool_with_pairs_records_the_fraction_and_simulates_them(tmp_path):
    from astrodask.train.maskrcnn import build_pool
    from astrodask.train.maskrcnn_data import simulated_examples

    pool = build_pool(tmp_path, 2, 64, seed=3, deep=1, pairs=0.4, log=lambda _: None)
    info = json.loads((tmp_path / "pool.json").read_text())
    assert [part.get("pair_fraction") for part in info["parts"]] == [0.4, 0.4]
    assert info["parts"][0]["deep"] is True
    want = simulated_examples(1, 64, 4, pairs=0.4)[0]
    np.testing.assert_array_equal(pool[1].image, want.image)
    assert not np.array_equal(pool[1].image, simulated_examples(1, 64, 4)[0].image)


def test_cli_rejects_bad_pair_fraction(tmp_path, capsys):
    code = main(["train", "maskrcnn", str(tmp_path / "run"), "--fields", "1", "--field-size", "64",
                 "--crop", "64", "--pair-fraction", "2"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "pair fraction" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_train_pool_from_a_run_without_pool(tmp_path, capsys):
    code = main(["train", "maskrcnn", str(tmp_path / "run"), "--pool-from", str(tmp_path),
                 "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "has no cached training pool" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_moving_average_of_the_weights_is_the_saved_model_and_resumes(tmp_path):
    from astrodask.models.maskrcnn import load_maskrcnn

    pool = [example_from_field(fake_field((128, 128), 6, 6, seed=s)) for s in range(2)]
    settings = TrainSettings(steps=1, batch_size=2, crop_size=64, warmup_steps=1, log_every=1,
                             checkpoint_every_s=1e9, compiled=False, ema_momentum=0.5)
    train_maskrcnn(pool, tmp_path / "a", config=TINY, settings=settings, log=lambda _: None)
    after_1 = _trainable(_checkpointed(tmp_path / "a"))
    settings.steps = 2
    _, state = train_maskrcnn(pool, tmp_path / "a", settings=settings, log=lambda _: None)
    assert state["settings"]["ema_momentum"] == 0.5
    after_2 = _trainable(_checkpointed(tmp_path / "a"))
    saved = _trainable(load_maskrcnn(tmp_path / "a" / "model.keras"))
    # the average starts at the first step's weights; the checkpoint keeps the last ones
    assert any(not np.allclose(a, b) for a, b in zip(after_1, after_2))
    for average, w1, w2 in zip(saved, after_1, after_2):
        np.testing.assert_allclose(average, 0.5 * w1 + 0.5 * w2, rtol=1e-5, atol=1e-6)
    # a run directory read as a model (evaluate RUN_DIR) gives the average too
    for a, b in zip(saved, _trainable(load_checkpoint(tmp_path / "a")[0])):
        np.testing.assert_array_equal(a, b)
    # straight through: the same average as the resumed run
    straight, _ = train_maskrcnn(pool, tmp_path / "b", config=TINY, settings=settings,
                                 log=lambda _: None)
    for a, b in zip(saved, _trainable(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _checkpointed(run_dir):
    from astrodask.models.maskrcnn import build_maskrcnn

    model = build_maskrcnn(TINY)
    model.load_weights(run_dir / "checkpoint.weights.h5")
    return model


def _trainable(model):
    return [np.asarray(v) for v in model.trainable_variables]


def test_cli_rejects_bad_ema_momentum(capsys):
    assert main(["train", "maskrcnn", "run", "--ema-momentum", "1"]) == 2
    assert "ema_momentum must be in [0, 1)" in capsys.readouterr().err
