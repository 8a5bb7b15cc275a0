"""benchmarks/catalog_threshold.py: what each sweep merges with (no mosaic is run here)."""

import math

import pytest

from benchmark_scripts import BENCHMARKS, load_benchmark


@pytest.fixture
def threshold(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports mosaic_quality's pipeline
    return load_benchmark("catalog_threshold")


def settings(module, *argv):
    parser = module.build_parser()
    return module.sweep_settings(parser.parse_args(list(argv)), parser)


def test_a_weak_sweep_carries_every_weak_setting_and_the_fixed_options(threshold):
    cuts, options, runs, sweep = settings(
        threshold, "--weak-snr", "off,7", "--weak-min-score", "0.06", "--weak-min-separation", "4",
        "--weak-core-fraction", "0.4", "--weak-max-host-area", "400",
        "--merge-options", '{"min_score": 0.3}')
    assert math.isinf(cuts[0]) and cuts[1] == 7.0 and runs == {} and sweep == "value"
    assert options[1] == dict(min_score=0.3, weak_min_score=0.06, weak_min_snr=7.0,
                              weak_min_separation=4.0, weak_core_fraction=0.4,
                              weak_max_host_area=400.0)
    # the swept option wins over a fixed one of the same name
    _, options, _, _ = settings(threshold, "--cuts", "0.4,0.5", "--merge-options",
                                '{"min_score": 0.3, "residual_pass": false}')
    assert options == [dict(min_score=0.4, residual_pass=False),
                       dict(min_score=0.5, residual_pass=False)]


@pytest.mark.parametrize("text, message", [("{min_score: 0.3}", "not JSON"),
                                           ("[0.3]", "JSON object")])
def test_bad_merge_options_are_a_usage_error(threshold, capsys, text, message):
    with pytest.raises(SystemExit) as exit_info:
        settings(threshold, "--merge-options", text)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_flips_area_sweep_runs_once_per_area_with_the_flips_on(threshold):
    cuts, options, runs, sweep = settings(threshold, "--maskrcnn-flips-min-area", "0,3000")
    assert cuts == (0.0, 3000.0) and options == [{}, {}] and sweep == "flips"
    assert runs == {0.0: {"maskrcnn": {"flips_min_area": 0, "flips": True}},
                    3000.0: {"maskrcnn": {"flips_min_area": 3000, "flips": True}}}
    assert all(type(run["maskrcnn"]["flips_min_area"]) is int for run in runs.values())


@pytest.mark.parametrize("flag, option, sweep", [("--deblend-snr", "deblend_snr", "deblend"),
                                                  ("--reclaim-sigma", "reclaim_sigma", "reclaim")])
def test_a_run_option_sweep_runs_once_per_value_off_as_zero(threshold, flag, option, sweep):
    cuts, options, runs, kind = settings(threshold, flag, "off,3")
    assert cuts == (0.0, 3.0) and options == [{}, {}] and kind == sweep
    assert runs == {0.0: {"maskrcnn": {option: 0.0}}, 3.0: {"maskrcnn": {option: 3.0}}}


def test_the_extra_validation_mosaics_run_only_when_named(threshold, capsys):
    parser = threshold.build_parser()

    def fields(*argv):
        return threshold.validation_fields(parser.parse_args(list(argv)), parser)

    assert list(fields("--preset", "hst")) == ["standard", "deep", "standard2", "deep2"]
    chosen = fields("--preset", "hst", "--fields", "deep4,deep")
    assert chosen == {"deep4": dict(seed=3_000_105, deep=True), "deep": dict(seed=3_000_101,
                                                                             deep=True)}
    assert fields("--preset", "hst", "--fields", "deep8") == {"deep8": dict(seed=3_000_110,
                                                                          deep=True)}
    seeds = [kwargs["seed"] for preset in ("decam", "hst")
             for kwargs in {**threshold.VALIDATION[preset],
                            **threshold.EXTRA_VALIDATION[preset]}.values()]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(SystemExit):
        fields("--preset", "decam", "--fields", "deep3")
    assert "unknown --fields for decam: deep3" in capsys.readouterr().err
