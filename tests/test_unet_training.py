"""Training the U-Net on simulated fields: loss, metrics, checkpoints and resume."""

import json

import numpy as np
import pytest

from astrodask.cli import main
from astrodask.models.card import read_model_card
from astrodask.models.unet import load_unet
from astrodask.train.unet import train_unet
from astrodask.train.unet_data import sample_windows
from astrodask.train.unet_losses import morpheus_loss
from astrodask.train.unet_metrics import pixel_metrics

TINY = {"down_filters": (4,), "up_filters": (4,), "down_blocks": 1, "up_blocks": 1,
        "mid_filters": 4}
FAST = dict(steps_per_epoch=2, batch_size=4, train_fields=1, held_out_fields=1,
            field_size=48, eval_stride=8, architecture=TINY)


def _one_hot(codes):
    return np.eye(5, dtype=np.float32)[codes]


def test_loss_prefers_the_right_answer():
    rng = np.random.default_rng(0)
    codes = rng.choice(5, size=(2, 8, 8), p=[0.05, 0.05, 0.05, 0.05, 0.8])
    truth = _one_hot(codes)
    good = 0.9 * truth + 0.02
    bad = np.roll(good, 1, axis=-1)
    assert float(morpheus_loss(truth, good)) < float(morpheus_loss(truth, bad))
    # a perfect answer: cross-entropy ~0 and Dice 1
    assert float(morpheus_loss(truth, truth)) < 1e-3


def test_loss_weights_rare_classes():
    codes = np.full((1, 8, 8), 4)
    codes[0, 0, 0] = 0  # one spheroid pixel among background
    truth = _one_hot(codes)
    pred = np.full_like(truth, 0.2)
    pred_rare_wrong = pred.copy()
    pred_rare_wrong[0, 0, 0] = [0.01, 0.01, 0.01, 0.01, 0.96]
    pred_common_wrong = pred.copy()
    pred_common_wrong[0, 0, 1] = [0.96, 0.01, 0.01, 0.01, 0.01]
    # missing the rare pixel costs more than missing one of the 63 common ones
    assert float(morpheus_loss(truth, pred_rare_wrong)) > float(morpheus_loss(truth, pred_common_wrong))


def test_pixel_metrics():
    labels = np.array([[4, 4, 0, 1], [4, 3, 3, 2]])
    probs = np.zeros((5, 2, 4))
    for (y, x), c in np.ndenumerate(labels):
        probs[c, y, x] = 1.0
    probs[:, 1, 3] = [0, 0, 0.4, 0, 0.6]  # irregular pixel called background at 0.6
    out = pixel_metrics(probs, labels)
    assert out["accuracy"] == pytest.approx(7 / 8)
    assert out["accuracy_irregular"] == 0.0 and out["accuracy_disk"] == 1.0
    # B = 0.5: predicted bkg {3 true + 1 false}: IoU bkg 3/4, IoU source 4/5
    assert out["iou_0.5"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert out["iou_0.7"] == 1.0  # 0.6 < 0.7: the pixel counts as source again
    assert pixel_metrics(probs, labels, valid=labels != 2)["accuracy"] == 1.0


def test_sample_windows_augment_and_standardise():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    labels = np.full((2, 64, 64), 4)
    labels[:, 30:34, 30:34] = 1
    x, y = sample_windows(images, labels, 16, 40, rng, source_fraction=1.0)
    assert x.shape == (16, 40, 40, 3) and y.shape == (16, 40, 40)
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert all((w == 1).sum() == 16 for w in y)  # every window holds the source


def test_train_checkpoint_resume_and_card(tmp_path):
    out = tmp_path / "unet_test.keras"
    card = train_unet(out, epochs=1, seed=3, **FAST)
    state = json.loads((tmp_path / "unet_test.checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 1 and len(state["history"]) == 1
    card = train_unet(out, epochs=2, seed=3, resume=True, **FAST)
    state = json.loads((tmp_path / "unet_test.checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert card["training"]["epochs"] == 2
    assert card == read_model_card(out)
    assert card["bands"] == ["g", "r", "z"] and card["pixel_scale_arcsec"] == pytest.approx(0.262)
    for mode in ("faithful", "fast"):
        metrics = card["metrics"][mode]
        assert 0 <= metrics["accuracy"] <= 1
        assert all(0 <= metrics[f"iou_{b}"] <= 1 for b in (0.5, 0.6, 0.7, 0.8, 0.9))
    model, _ = load_unet(out)
    assert model.input_shape[-1] == 3 and model.output_shape[-1] == 5


def test_training_is_deterministic(tmp_path):
    a = tmp_path / "a.keras"
    b = tmp_path / "b.keras"
    assert main(["train", "unet", "--out", str(a), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "4", "--train-fields", "1", "--held-out-fields", "1",
                 "--field-size", "48", "--seed", "5", "--down-filters", "4", "--up-filters", "4",
                 "--mid-filters", "4", "--down-blocks", "1", "--up-blocks", "1"]) == 0
    train_unet(b, epochs=1, seed=5, **FAST)
    wa, wb = load_unet(a)[0].get_weights(), load_unet(b)[0].get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert read_model_card(a)["metrics"] == read_model_card(b)["metrics"]


def test_fine_tune_starts_from_a_model_in_its_band_order(tmp_path):
    source = tmp_path / "source.keras"
    train_unet(source, epochs=1, seed=3, **FAST)
    card = read_model_card(source)
    card["bands"] = ["z", "g", "r"]  # as a model trained on another band order would say
    (tmp_path / "source.card.json").write_text(json.dumps(card))
    options = {**FAST, "architecture": None}  # the source's architecture is used
    copy = tmp_path / "copy.keras"
    card0 = train_unet(copy, epochs=0, seed=4, init_from=source, **options)
    assert card0["bands"] == ["z", "g", "r"] and card0["filters"] == ["DECam z", "DECam g", "DECam r"]
    assert card0["training"]["initialised_from"] == str(source)
    start = load_unet(source)[0].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(start, load_unet(copy)[0].get_weights()))
    tuned = tmp_path / "tuned.keras"
    card1 = train_unet(tuned, epochs=1, seed=4, init_from=source, star_density=20.0,
                       deep_fraction=0.5, **{**options, "train_fields": 2})
    assert card1["training_data"].endswith("20 stars per arcmin²; 0.5 of them ultra-deep")
    after = load_unet(tuned)[0].get_weights()
    assert len(after) == len(start) and not all(np.array_equal(a, b) for a, b in zip(start, after))


def test_fine_tune_refuses_other_bands(tmp_path, capsys):
    code = main(["train", "unet", "--out", str(tmp_path / "x.keras"), "--preset", "decam",
                 "--init-from", "morpheus", "--epochs", "0"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot fine-tune morpheus" in err


def test_shipped_decam_model_classifies_a_new_field():
    from astrodask.morphology.windows import classify_tile
    from astrodask.simulation import simulate_field

    model, card = load_unet("morpheus_decam")
    assert card["bands"] == ["g", "r", "z"]
    assert card["metrics"]["faithful"]["iou_0.5"] > 0.5
    field = simulate_field((96, 96), preset="decam", seed=777_777)
    out = classify_tile(model, field.images, mode="fast")
    metrics = pixel_metrics(out["mean"], field.morphology_map)
    assert metrics["accuracy"] > 0.9 and metrics["accuracy_background"] > 0.9
    # it finds the sources, not only the sky
    sources = field.morphology_map != 4
    assert sources.any() and (out["mean"][4][sources] < 0.5).mean() > 0.5


def test_deep_fraction_makes_the_first_fields_ultra_deep():
    from astrodask.simulation import simulate_field
    from astrodask.train.unet_data import simulate_fields

    images, labels, _ = simulate_fields(2, 48, "decam", 70, deep_fraction=0.5)
    deep = simulate_field((48, 48), preset="decam", seed=70, deep=True)
    plain = simulate_field((48, 48), preset="decam", seed=71)
    assert np.array_equal(images[0], deep.images.astype(np.float32))
    assert np.array_equal(labels[1], plain.morphology_map)
    assert not np.array_equal(images[0], simulate_field((48, 48), preset="decam", seed=70)
                              .images.astype(np.float32))
