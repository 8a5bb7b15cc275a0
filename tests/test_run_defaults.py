"""What a run and a merge use when the user gives nothing: the shipped models and their cards."""

import numpy as np
import pytest

from astrodask.errors import InputError
from astrodask.merging.products import (MergeOptions, catalog_min_score, irregular_centroid_snr,
                                        resolved_options, segmentation_levels)


def test_without_models_every_shipped_kind_that_takes_the_bands_runs():
    from astrodask.engine.specs import resolve_models

    specs = resolve_models(None, ("g", "r", "z"))
    assert sorted(s.kind for s in specs) == ["maskrcnn", "unet"]
    hst = resolve_models(None, ("H", "J", "V", "Z"))
    assert sorted((s.kind, s.name) for s in hst) == [("maskrcnn", "maskrcnn_hst"), ("unet", "morpheus_hst")]
    with pytest.raises(InputError, match="no shipped model takes bands a,b"):
        resolve_models(None, ("a", "b"))


def test_detection_settings_are_the_cards_unless_overridden():
    from astrodask.config import MaskRCNNOptions
    from astrodask.engine.specs import detection_settings, resolve_models

    card = resolve_models(["maskrcnn"], ("g", "r", "z"))[0].card
    settings = detection_settings(card)
    assert settings["detection_max_instances"] == card["config"]["detection_max_instances"] == 500
    assert settings["detection_cross_class_iou"] == 0.7
    # the shipped card's catalog cut was chosen on scores fused over all 8 passes
    assert settings["detection_flips_score"] == card["config"]["detection_flips_score"] == "all_passes"
    # maskrcnn_hst's cut was chosen on every pass's score whatever its class (session 47)
    hst = resolve_models(["maskrcnn_hst"], ("v", "z", "j", "h"))[0].card
    assert detection_settings(hst)["detection_flips_score"] == "any_class"
    # ... and each pass reports down to 0.3 before the fusion adds the scores up
    assert detection_settings(hst)["detection_min_confidence"] == 0.3
    assert settings["detection_min_confidence"] == 0.5
    overridden = detection_settings(card, MaskRCNNOptions(max_detections=300).overrides())
    assert overridden["detection_max_instances"] == 300
    assert overridden["detection_flips"] == settings["detection_flips"]


def test_preparing_a_run_imports_no_deep_learning_framework():
    """The client reads the cards' detection settings without Keras or TensorFlow (each
    takes seconds to import and only the workers run the networks); the network's names
    still load on first use."""
    import subprocess
    import sys

    code = ("import sys, astrodask\n"
            "from astrodask.engine.specs import detection_settings, resolve_models\n"
            "spec = resolve_models(['maskrcnn'], ('g', 'r', 'z'))[0]\n"
            "assert detection_settings(spec.card)['detection_flips']\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n"
            "from astrodask.models.maskrcnn import detect\n"
            "print('keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_catalog_cut_comes_from_the_option_then_the_card():
    record = {"models": [{"kind": "unet", "card": {}},
                         {"kind": "maskrcnn", "card": {"catalog_min_score": 0.6}}]}
    assert catalog_min_score(record, MergeOptions()) == 0.6
    assert catalog_min_score(record, MergeOptions(min_score=0.8)) == 0.8
    assert catalog_min_score({"models": [{"kind": "unet", "card": {}}]}, MergeOptions()) is None
    with pytest.raises(InputError, match="min score must lie in"):
        catalog_min_score(record, MergeOptions(min_score=1.5))


@pytest.mark.parametrize("options, message", [
    ({"match_iou": -1.0}, r"the match IoU must lie in \(0, 1\], got -1.0"),
    ({"match_iou": 0.0}, r"the match IoU must lie in \(0, 1\], got 0.0"),
    ({"detection_threshold": 1.5}, r"the detection threshold must lie in \[0, 1\], got 1.5"),
    ({"morpheus_min_snr": float("nan")}, "the segments' minimum S/N must be >= 0, got nan"),
    ({"residual_separation": -2.0}, "residual pass: separation must be a number >= 0"),
])
def test_merge_settings_out_of_range_are_refused_before_any_work(options, message):
    from astrodask.residual_detection import ResidualPassError

    record = {"models": [{"kind": "maskrcnn", "card": {"catalog_min_score": 0.45}}]}
    assert resolved_options(record, MergeOptions()).match_iou == MergeOptions().match_iou
    # the residual pass's settings are checked even where the pass is off
    assert not resolved_options(record, MergeOptions()).residual_pass
    with pytest.raises((InputError, ResidualPassError), match=message):
        resolved_options(record, MergeOptions(**options))


def test_irregular_centroid_snr_comes_from_the_option_then_the_centre_card():
    record = {"models": [{"kind": "unet", "card": {}},
                         {"kind": "maskrcnn", "card": {"centres": {"irregular_centroid_snr": 50}}}]}
    assert irregular_centroid_snr(record, MergeOptions()) == 50.0
    assert irregular_centroid_snr(record, MergeOptions(irregular_centroid_snr=20)) == 20.0
    bare = {"models": [{"kind": "maskrcnn", "card": {}}]}
    assert irregular_centroid_snr(bare, MergeOptions()) is None
    assert irregular_centroid_snr({"models": [{"kind": "unet", "card": {}}]}, MergeOptions()) is None
    assert resolved_options(record, MergeOptions()).irregular_centroid_snr == 50.0
    with pytest.raises(InputError, match="irregular-centroid S/N must be >= 0"):
        irregular_centroid_snr(record, MergeOptions(irregular_centroid_snr=-1))


def test_bright_irregulars_sit_at_their_centroid_others_at_their_centre():
    from types import SimpleNamespace

    from astrodask.classes import OBJECT_CODE
    from astrodask.merging.products import _centroid_placed, catalog_positions

    objects = SimpleNamespace(centre_x=np.array([10.0, 20.0, 30.0, 40.0, np.nan]),
                              centre_y=np.array([11.0, 21.0, 31.0, 41.0, np.nan]))
    measured = {"x": np.array([12.0, 22.0, 32.0, np.nan, 52.0]),
                "y": np.array([13.0, 23.0, 33.0, np.nan, 53.0]),
                "flux_g": np.array([60.0, 60.0, 5.0, 60.0, 60.0]),
                "flux_err_g": np.ones(5),
                "flux_r": np.array([60.0, 60.0, 5.0, 60.0, 60.0]),
                "flux_err_r": np.ones(5)}
    morphology = ["irregular", "disk", "irregular", "irregular", None]
    galaxies = np.full(5, OBJECT_CODE["galaxy"])
    placed = _centroid_placed(measured, ("g", "r"), galaxies, morphology, 50.0)
    # S/N over both bands: 120 / sqrt(2) = 85 for the bright ones, 7 for the faint one
    np.testing.assert_array_equal(placed, [True, False, False, True, False])
    # a star stays at its centre whatever the U-Net calls it (a saturated star's bleed trail)
    star_first = np.where(np.arange(5) == 0, OBJECT_CODE["star"], galaxies)
    assert not _centroid_placed(measured, ("g", "r"), star_first, morphology, 50.0)[0]
    x, y = catalog_positions(objects, measured, placed)
    # the bright irregular at its centroid; the disk and the faint irregular at their centres;
    # one without a centroid keeps its centre, one without a centre takes the centroid
    np.testing.assert_array_equal(x, [12.0, 20.0, 30.0, 40.0, 52.0])
    np.testing.assert_array_equal(y, [13.0, 21.0, 31.0, 41.0, 53.0])
    assert _centroid_placed(measured, ("g", "r"), galaxies, None, 50.0) is None
    assert _centroid_placed(measured, ("g", "r"), galaxies, morphology, None) is None
    np.testing.assert_array_equal(catalog_positions(objects, measured)[0], [10, 20, 30, 40, 52])


def test_morpheus_levels_come_from_the_option_then_the_unet_card_then_the_defaults():
    chosen = {"models": [{"kind": "unet", "card": {"segmentation": {
        "threshold": 0.85, "background_level": 0.99}}}]}
    plain = {"models": [{"kind": "unet", "card": {}}]}
    assert segmentation_levels(chosen, MergeOptions()) == (0.85, 0.99)
    assert segmentation_levels(plain, MergeOptions()) == (0.1, 0.9)
    assert segmentation_levels(chosen, MergeOptions(morpheus_threshold=0.5)) == (0.5, 0.99)
    with pytest.raises(InputError, match="below the background level"):
        segmentation_levels(plain, MergeOptions(morpheus_threshold=0.95))
    applied = resolved_options(chosen, MergeOptions(min_score=0.7))
    assert (applied.min_score, applied.morpheus_threshold) == (0.7, 0.85)


def test_one_class_per_object():
    from astrodask.models.maskrcnn.model import _one_class_per_object

    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [2, 2, 8, 8]], float)
    classes = np.array([1, 2, 2, 2])
    scores = np.array([0.9, 0.6, 0.8, 0.7])
    grids = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    kept = _one_class_per_object((boxes, classes, scores, grids), 0.7)
    # the galaxy on the star's pixels (IoU 0.91) goes; one inside it (IoU 0.36) stays
    np.testing.assert_array_equal(kept[3][:, 0, 0], [0, 2, 3])
    np.testing.assert_array_equal(kept[1], [1, 2, 2])


def test_a_card_marked_default_wins_over_others_that_take_the_same_bands(tmp_path, monkeypatch):
    import json

    from astrodask.engine import specs
    from astrodask.models.card import WEIGHTS_DIR

    card = json.loads((WEIGHTS_DIR / "morpheus.card.json").read_text())
    for name, default in (("a_published", False), ("b_trained_here", True), ("c_other", False)):
        (tmp_path / f"{name}.keras").write_bytes(b"")
        (tmp_path / f"{name}.card.json").write_text(json.dumps({**card, "name": name,
                                                                "default": default}))
    monkeypatch.setattr(specs, "WEIGHTS_DIR", tmp_path)
    (unet,) = specs.resolve_models(["unet"], ("V", "Z", "J", "H"))
    assert unet.name == "b_trained_here"
    (tmp_path / "b_trained_here.card.json").write_text(json.dumps({**card, "name": "b_trained_here"}))
    (unet,) = specs.resolve_models(["unet"], ("V", "Z", "J", "H"))
    assert unet.name == "a_published"


def test_peak_position_snr_comes_from_the_option_then_the_detector_card():
    from astrodask.merging.products import peak_position_snr

    record = {"models": [{"kind": "unet", "card": {}},
                         {"kind": "maskrcnn", "card": {"peak_position_snr": 50}}]}
    assert peak_position_snr(record, MergeOptions()) == 50.0
    assert peak_position_snr(record, MergeOptions(peak_position_snr=30)) == 30.0
    assert peak_position_snr({"models": [{"kind": "maskrcnn", "card": {}}]}, MergeOptions()) is None
    assert resolved_options(record, MergeOptions()).peak_position_snr == 50.0
    with pytest.raises(InputError, match="peak-position S/N must be >= 0"):
        peak_position_snr(record, MergeOptions(peak_position_snr=-1))
    shipped = load_card_of("maskrcnn_hst")
    assert shipped["peak_position_snr"] == 50


def test_the_kron_annulus_comes_from_the_option_then_the_detector_card(capsys):
    from astrodask.cli import main
    from astrodask.kron import LOCAL_ANNULUS
    from astrodask.merging.products import kron_annulus

    none = {"models": [{"kind": "maskrcnn", "card": {"kron_annulus": []}}]}
    plain = {"models": [{"kind": "maskrcnn", "card": {}}]}
    assert kron_annulus(plain, MergeOptions()) == list(LOCAL_ANNULUS)
    assert kron_annulus({"models": [{"kind": "unet", "card": {}}]}, MergeOptions()) == \
        list(LOCAL_ANNULUS)
    assert kron_annulus(none, MergeOptions()) == []
    assert kron_annulus(none, MergeOptions(kron_annulus=(1.5, 3))) == [1.5, 3.0]
    assert kron_annulus(plain, MergeOptions(kron_annulus=())) == []
    assert resolved_options(none, MergeOptions()).kron_annulus == []
    for wrong in ((2.0, 1.0), (0.0, 1.0), (1.0,), (1.0, float("inf"))):
        with pytest.raises(InputError, match="Kron annulus"):
            kron_annulus(plain, MergeOptions(kron_annulus=wrong))
    with pytest.raises(SystemExit) as stopped:
        main(["merge", "results", "--kron-annulus", "1:x"])
    assert stopped.value.code == 2
    assert "expected INNER:OUTER or none" in capsys.readouterr().err
    # each shipped detector's card names the annulus its validation mosaics chose
    assert load_card_of("maskrcnn_hst")["kron_annulus"] == []
    assert load_card_of("maskrcnn_decam", ("g", "r", "z"))["kron_annulus"] == list(LOCAL_ANNULUS)


def test_the_apertures_the_kron_annulus_is_for_come_from_the_option_then_the_card(capsys):
    from astrodask.cli import build_parser
    from astrodask.kron import ANNULUS_FOR
    from astrodask.merging.products import kron_annulus_for

    plain = {"models": [{"kind": "maskrcnn", "card": {}}]}
    every = {"models": [{"kind": "maskrcnn", "card": {"kron_annulus_for": "all"}}]}
    assert kron_annulus_for(plain, MergeOptions()) == ANNULUS_FOR == "neighbours"
    assert kron_annulus_for(every, MergeOptions()) == "all"
    assert kron_annulus_for(every, MergeOptions(kron_annulus_for="neighbours")) == "neighbours"
    assert resolved_options(every, MergeOptions()).kron_annulus_for == "all"
    with pytest.raises(InputError, match="Kron annulus is for neighbours or all"):
        kron_annulus_for(plain, MergeOptions(kron_annulus_for="some"))
    args = build_parser().parse_args(["merge", "results", "--kron-annulus-for", "all"])
    assert args.kron_annulus_for == "all"
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["merge", "results", "--kron-annulus-for", "some"])
    assert stopped.value.code == 2


def load_card_of(name, bands=("v", "z", "j", "h")):
    from astrodask.engine.specs import resolve_models

    return next(s.card for s in resolve_models([name], bands))


def test_bright_objects_off_their_centroid_sit_at_their_peak():
    from types import SimpleNamespace

    from astrodask.merging.products import _peak_placed, catalog_positions

    measured = {"x": np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]),
                "y": np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]),
                "x_peak": np.array([12.0, 20.5, 32.0, 42.0, np.nan, 62.0]),
                "y_peak": np.array([10.0, 20.5, 30.0, 40.0, np.nan, 60.0]),
                "flux_g": np.array([60.0, 60.0, 60.0, 5.0, 60.0, 60.0]), "flux_err_g": np.ones(6)}
    morphology = ["disk", "spheroid", "irregular", "disk", "disk", None]
    placed = _peak_placed(measured, ("g",), morphology, 50.0)
    # irregulars (a knot may be their peak), faint objects and unknown morphology: never
    np.testing.assert_array_equal(placed, [True, True, False, False, True, False])
    plain = SimpleNamespace(centre_x=None, centre_y=None)
    x, y = catalog_positions(plain, measured, peak_placed=placed)
    # the first 2 px off its centroid moves; the second within 1 px stays; no peak, no move
    np.testing.assert_array_equal(x, [12.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    # a detector's centre still wins over both
    centred = SimpleNamespace(centre_x=np.full(6, 7.0), centre_y=np.full(6, 7.0))
    np.testing.assert_array_equal(catalog_positions(centred, measured, peak_placed=placed)[0],
                                  np.full(6, 7.0))
    assert _peak_placed(measured, ("g",), None, 50.0) is None
    assert _peak_placed(measured, ("g",), morphology, None) is None


def test_the_residual_pass_comes_from_the_option_then_the_detector_card():
    from astrodask.merging.products import residual_settings

    card = {"residual_pass": {"min_snr": 40, "core_fraction": 0.2, "flips": True}}
    hst = {"models": [{"kind": "unet", "card": {}}, {"kind": "maskrcnn", "card": card}]}
    decam = {"models": [{"kind": "maskrcnn", "card": {}}]}
    on = residual_settings(hst, MergeOptions())
    assert on == {"residual_pass": True, "residual_min_snr": 40.0, "residual_separation": 6.0,
                  "residual_min_score": None, "residual_core_fraction": 0.2, "residual_flips": True}
    assert residual_settings(hst, MergeOptions(residual_pass=False))["residual_pass"] is False
    assert residual_settings(hst, MergeOptions(residual_flips=False))["residual_flips"] is False
    assert residual_settings(hst, MergeOptions(residual_min_snr=70))["residual_min_snr"] == 70.0
    assert residual_settings(decam, MergeOptions())["residual_pass"] is False
    assert residual_settings(decam, MergeOptions(residual_pass=True))["residual_pass"] is True
    unet_only = {"models": [{"kind": "unet", "card": {}}]}
    assert residual_settings(unet_only, MergeOptions())["residual_pass"] is False
    assert resolved_options(hst, MergeOptions()).residual_core_fraction == 0.2
    shipped = load_card_of("maskrcnn_hst")
    settings = residual_settings({"models": [{"kind": "maskrcnn", "card": shipped}]},
                                 MergeOptions())
    assert settings["residual_pass"] is True and settings["residual_flips"] is True
    from astrodask.engine.specs import resolve_models

    (decam_spec,) = resolve_models(["maskrcnn_decam"], ("g", "r", "z"))
    decam_card = decam_spec.card
    assert residual_settings({"models": [{"kind": "maskrcnn", "card": decam_card}]},
                             MergeOptions())["residual_pass"] is False
