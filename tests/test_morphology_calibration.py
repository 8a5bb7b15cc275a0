"""The per-object morphology calibration: fit, classify, card round trip, merge options."""

import numpy as np
import pytest

from astrodask.errors import InputError
from astrodask.merging.products import MergeOptions, morphology_calibration, resolved_options
from astrodask.morphology.calibration import (SOURCE_CLASSES, MorphologyCalibration,
                                              design_matrix, fit_morphology_calibration)


def faint_irregular_bias(n=4000, seed=0):
    """Objects whose U-Net probabilities say 'irregular' too often when faint.

    True classes: disk 50%, spheroid 25%, irregular 15%, point source 10%.
    The probabilities lean to the true class by an amount that grows with
    the S/N; below S/N 15 a bias toward irregular is added (the noise looks
    clumpy), so the dominant class of faint disks is mostly irregular.
    """
    rng = np.random.default_rng(seed)
    true = rng.choice(len(SOURCE_CLASSES), n, p=[0.25, 0.5, 0.15, 0.1])
    snr = 10 ** rng.uniform(np.log10(5), 3, n)
    strength = np.log10(snr)
    logits = rng.normal(0, 0.6, (n, 4))
    logits[np.arange(n), true] += strength
    logits[:, 2] += np.where(snr < 15, 1.5, 0.0)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    background = rng.uniform(0.05, 0.3, n)
    probabilities = np.column_stack([p * (1 - background)[:, None], background])
    return probabilities, snr, np.asarray(SOURCE_CLASSES)[true]


def test_the_calibration_undoes_a_faint_bias_toward_irregular():
    probabilities, snr, true = faint_irregular_bias()
    model = fit_morphology_calibration(probabilities, snr, true)
    test_p, test_snr, test_true = faint_irregular_bias(seed=1)
    faint = test_snr < 15
    dominant = np.asarray(SOURCE_CLASSES)[test_p[:, :4].argmax(axis=1)]
    calibrated = model.classify(test_p, test_snr)
    assert np.mean(dominant[faint] == "irregular") > 0.5
    assert np.mean(calibrated[faint] == "irregular") < 0.3
    assert np.mean(calibrated[faint] == test_true[faint]) > np.mean(
        dominant[faint] == test_true[faint]) + 0.2
    # bright objects keep what the probabilities say
    bright = test_snr > 100
    assert np.mean(calibrated[bright] == test_true[bright]) > 0.9
    # calibrated probabilities sum to 1
    np.testing.assert_allclose(model.probabilities(test_p, test_snr).sum(axis=1), 1.0)


def test_the_fit_is_deterministic_and_survives_the_card():
    probabilities, snr, true = faint_irregular_bias(n=1000)
    a = fit_morphology_calibration(probabilities, snr, true)
    b = fit_morphology_calibration(probabilities, snr, true)
    assert a == b
    import json

    again = MorphologyCalibration.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a
    np.testing.assert_array_equal(again.classify(probabilities, snr), a.classify(probabilities, snr))


def test_unmeasured_objects_have_no_class_and_bad_input_is_refused():
    probabilities, snr, true = faint_irregular_bias(n=800)
    model = fit_morphology_calibration(probabilities, snr, true)
    p = probabilities[:3].copy()
    p[1] = np.nan
    s = snr[:3].copy()
    s[2] = np.nan
    classes = model.classify(p, s)
    assert classes[0] in SOURCE_CLASSES and classes[1] is None and classes[2] is None
    with pytest.raises(ValueError, match="probabilities need 5 columns"):
        design_matrix(probabilities[:, :4], snr)
    with pytest.raises(ValueError, match="none of point_source"):
        keep = true != "point_source"
        fit_morphology_calibration(probabilities[keep], snr[keep], true[keep])
    with pytest.raises(ValueError, match="one coefficient and intercept per class"):
        MorphologyCalibration.from_dict(dict(model.to_dict(), intercepts=[0.0, 0.0]))


def test_the_merge_applies_the_u_nets_calibration_unless_turned_off():
    probabilities, snr, true = faint_irregular_bias(n=800)
    fitted = fit_morphology_calibration(probabilities, snr, true).to_dict()
    with_cal = {"models": [{"kind": "maskrcnn", "card": {}},
                           {"kind": "unet", "card": {"morphology_calibration": fitted}}]}
    without = {"models": [{"kind": "unet", "card": {}}]}
    detector_only = {"models": [{"kind": "maskrcnn", "card": {}}]}
    assert morphology_calibration(with_cal, MergeOptions()) == fitted
    assert morphology_calibration(with_cal, MergeOptions(morphology_calibration=True)) == fitted
    assert morphology_calibration(with_cal, MergeOptions(morphology_calibration=False)) is False
    assert morphology_calibration(without, MergeOptions()) is False
    assert morphology_calibration(detector_only, MergeOptions(morphology_calibration=fitted)) \
        is False
    assert resolved_options(with_cal, MergeOptions()).morphology_calibration == fitted
    with pytest.raises(InputError, match="no morphology calibration"):
        morphology_calibration(without, MergeOptions(morphology_calibration=True))
    with pytest.raises(InputError, match="not a morphology calibration"):
        morphology_calibration(without, MergeOptions(morphology_calibration={"mean": [1.0]}))


def test_the_shipped_u_nets_have_a_calibration_and_the_cli_turns_it_off():
    from astrodask.cli import build_parser
    from astrodask.engine.specs import resolve_models

    for name, bands in (("morpheus_decam", ("g", "r", "z")),
                        ("morpheus_hst", ("v", "z", "j", "h"))):
        card = next(s.card for s in resolve_models([name], bands))
        model = MorphologyCalibration.from_dict(card["morphology_calibration"])
        assert model.classes == SOURCE_CLASSES
    args = build_parser().parse_args(["merge", "results", "--no-morphology-calibration"])
    assert args.morphology_calibration is False
    assert build_parser().parse_args(["merge", "results"]).morphology_calibration is None
