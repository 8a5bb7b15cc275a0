"""The engine's Mask R-CNN path: per-tile instance parts equal the bare model's output."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import astrodask
from astrodask.engine.results import Results
from astrodask.instances import SCHEMA, decode_mask

from test_engine import HALO, TILE, write_field

TINY = dict(stem_width=8, stage_widths=(8, 8, 16, 16), fpn_channels=8, head_units=16,
            mask_channels=8, rpn_post_nms_inference=64, rpn_pre_nms=256)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from astrodask.models.card import write_model_card
    from astrodask.models.maskrcnn import build_maskrcnn

    folder = tmp_path_factory.mktemp("mrcnn")
    paths = write_field(folder, bands="grz", seed=3)
    mosaic = astrodask.ingest(paths, folder / "m.zarr", tile=TILE, halo=HALO)
    import keras

    keras.utils.set_random_seed(0)  # an unseeded untrained model may detect nothing
    model = build_maskrcnn(bands=("g", "r", "z"), **TINY)
    model_path = folder / "tiny.keras"
    model.save(model_path)
    write_model_card(model_path, {"name": "tiny", "architecture": "maskrcnn-resnet18-fpn",
                                  "bands": ["g", "r", "z"], "pixel_scale_arcsec": 0.262,
                                  "normalisation": {"kind": "eq1"},
                                  "classes": ["background", "star", "galaxy"]})
    return folder, mosaic, model_path


def test_instances_per_tile_match_bare_detection(setup):
    from distributed import Client, LocalCluster

    from astrodask.engine.plugin import worker_environment
    from astrodask.engine.runners import MaskRCNNRunner
    from astrodask.engine.specs import resolve_models
    from astrodask.engine.run import prepare_spec, resolve_config

    folder, mosaic, model_path = setup
    config = resolve_config(models=[str(model_path)], batch_size=4)
    config.maskrcnn.min_confidence = 0.0
    out = folder / "results"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=worker_environment(1)) as cluster, \
            Client(cluster) as client:
        summary = astrodask.run(mosaic, out, config=config, client=client)
    assert summary.tiles_run == 35
    results = Results(out)
    spec = prepare_spec(resolve_models([str(model_path)], mosaic.bands)[0], mosaic, config)
    assert spec.stats is not None and spec.settings["detection_min_confidence"] == 0.0
    record = json.loads((out / "run.json").read_text())
    assert record["models"][0]["settings"] == spec.settings
    runner = MaskRCNNRunner(spec, config.maskrcnn)
    total = 0
    grid = mosaic.tile_grid
    for iy, ix in [(0, 0), (2, 3), (4, 6)]:
        table = pq.read_table(results.instances_path(iy, ix))
        assert table.schema.equals(SCHEMA)
        tile = mosaic.read_tile(iy, ix)
        from astrodask.models.maskrcnn import detect

        found = detect(runner.model, runner.standardise([tile], mosaic), **runner.settings)[0]
        valid = tile.mask[0] == 0
        kept = [m for m in found.masks
                if (m & valid).any() and valid[tuple(np.round(np.mean(np.nonzero(m & valid),
                                                                        axis=1)).astype(int))]]
        assert table.num_rows == len(kept)
        total += table.num_rows
        y0w, x0w = tile.origin
        for row in table.to_pylist():
            mask = decode_mask(row["mask"], row["y1"] - row["y0"], row["x1"] - row["x0"])
            assert mask.sum() == row["area"]
            full = found.masks[row["det"]]
            np.testing.assert_array_equal(
                full[row["y0"] - y0w:row["y1"] - y0w, row["x0"] - x0w:row["x1"] - x0w], mask)
            assert 0 <= row["y0"] and row["y1"] <= grid.height
            assert row["class"] in ("star", "galaxy")
            ys, xs = grid.core_slices(iy, ix)
            assert row["in_core"] == (ys.start <= row["anchor_y"] < ys.stop
                                      and xs.start <= row["anchor_x"] < xs.stop)
    assert total > 0, "a zero-confidence threshold must give detections"
    assert json.loads((out / "run.json").read_text())["models"][0]["kind"] == "maskrcnn"


def test_flips_option_reaches_detection(setup, tmp_path, capsys):
    from dataclasses import replace

    from astrodask.cli import main
    from astrodask.config import MaskRCNNOptions
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.runners import MaskRCNNRunner
    from astrodask.engine.specs import detection_settings, resolve_models

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]
    # unset: the card's setting holds; set: it overrides it
    card_flips = detection_settings(spec.card)["detection_flips"]
    config = resolve_config(models=[str(model_path)])
    assert prepare_spec(spec, mosaic, config).settings["detection_flips"] is card_flips
    config = replace(config, maskrcnn=replace(MaskRCNNOptions(), flips=not card_flips))
    runner = MaskRCNNRunner(prepare_spec(spec, mosaic, config), config.maskrcnn)
    assert runner.settings["detection_flips"] is (not card_flips)
    yaml = tmp_path / "run.yaml"
    yaml.write_text("maskrcnn: {flips: maybe}\n")
    code = main(["run", str(mosaic.path), "--out", str(tmp_path / "r"), "--config", str(yaml)])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("astrodask: error: maskrcnn flips must be true "
                                               "or false, got 'maybe'")
    yaml.write_text("models: [maskrcnn]\nmaskrcnn: {flips: false}\n")
    assert resolve_config(yaml).maskrcnn.flips is False
    # the flag overrides the file
    from astrodask.cli import build_parser
    from astrodask.commands.run import config_from_args

    args = build_parser().parse_args(["run", "m.zarr", "--out", "r", "--config", str(yaml),
                                      "--maskrcnn-flips"])
    assert config_from_args(args).maskrcnn.flips is True


def test_flips_min_area_option_reaches_detection(setup, tmp_path, capsys):
    from dataclasses import replace

    from astrodask.cli import build_parser, main
    from astrodask.commands.run import config_from_args
    from astrodask.config import MaskRCNNOptions
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.runners import MaskRCNNRunner
    from astrodask.engine.specs import detection_settings, resolve_models

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]
    config = resolve_config(models=[str(model_path)])
    card_area = detection_settings(spec.card)["detection_flips_min_area"]
    assert prepare_spec(spec, mosaic, config).settings["detection_flips_min_area"] == card_area
    config = replace(config, maskrcnn=replace(MaskRCNNOptions(), flips_min_area=card_area + 7))
    runner = MaskRCNNRunner(prepare_spec(spec, mosaic, config), config.maskrcnn)
    assert runner.settings["detection_flips_min_area"] == card_area + 7
    args = build_parser().parse_args(["run", "m.zarr", "--out", "r",
                                      "--maskrcnn-flips-min-area", "2500"])
    assert config_from_args(args).maskrcnn.flips_min_area == 2500
    yaml = tmp_path / "run.yaml"
    yaml.write_text("maskrcnn: {flips_min_area: -3}\n")
    code = main(["run", str(mosaic.path), "--out", str(tmp_path / "r"), "--config", str(yaml)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "astrodask: error: maskrcnn flips_min_area must be a whole number of pixels >= 0, got -3")


def test_warm_up_traces_the_flips_and_the_first_pass_of_a_task(setup, monkeypatch):
    from dataclasses import replace

    import astrodask.models.maskrcnn as maskrcnn
    from astrodask.config import MaskRCNNOptions
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.runners import MaskRCNNRunner
    from astrodask.engine.specs import resolve_models

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]
    calls = []
    monkeypatch.setattr(maskrcnn, "detect", lambda model, images, **settings: calls.append(
        (images.shape[0], settings["detection_flips"], settings["detection_flips_min_area"])))
    for area, expected in ((0, [(1, True, 0)]), (3000, [(1, True, 0), (3, True, 3000)])):
        options = replace(MaskRCNNOptions(), flips=True, flips_min_area=area)
        config = replace(resolve_config(models=[str(model_path)]), maskrcnn=options)
        calls.clear()
        runner = MaskRCNNRunner(prepare_spec(spec, mosaic, config), config.maskrcnn)
        runner.warm_up(mosaic.tile_grid, 3)
        assert calls == expected


def test_card_star_galaxy_model_sets_the_classes_and_the_option_turns_it_off(setup, tmp_path):
    import shutil

    import zarr

    from astrodask.engine.run import resolve_config
    from astrodask.models.card import read_model_card, write_model_card
    from astrodask.star_galaxy import FEATURES, StarGalaxyModel

    folder, mosaic, model_path = setup
    # a card whose star/galaxy model says "star" for everything
    path = tmp_path / "tiny_sg.keras"
    shutil.copy(model_path, path)
    card = dict(read_model_card(model_path), name="tiny_sg")
    card["star_galaxy"] = StarGalaxyModel(mean=(0,) * len(FEATURES), scale=(1,) * len(FEATURES),
                                          coefficients=(0,) * len(FEATURES),
                                          intercept=20.0).to_dict()
    write_model_card(path, card)
    # a store with a measured PSF in every band
    store = tmp_path / "m.zarr"
    shutil.copytree(mosaic.path, store)
    group = zarr.open_group(str(store), mode="r+")
    attrs = dict(group.attrs["astrodask"])
    attrs["psf"] = {"bands": {b: {"band": b, "fwhm_px": 3.0, "n_stars": 9,
                                  "source": "measured", "concentration": 0.45}
                              for b in "grz"}}
    group.attrs["astrodask"] = attrs
    classes = {}
    for on in (True, False):
        out = tmp_path / f"r-{on}"
        # the card has no trained FWHM range: "auto" uses the PSF
        config = resolve_config(models=[str(path)], maskrcnn={"min_confidence": 0.0,
                                                               "psf_classes": "auto" if on
                                                               else False})
        astrodask.run(store, out, config=config, client=None, n_workers=1)
        record = json.loads((out / "run.json").read_text())["star_galaxy"]["tiny_sg"]
        assert record["psf_aware"] is on
        assert record["fwhm_px"] == 3.0 and record["concentration"] == 0.45
        if not on:
            assert record["why"] == "psf_classes is off"
        classes[on] = [c for p in sorted((out / "maskrcnn").glob("*.parquet"))
                       for c in pq.read_table(p).column("class").to_pylist()]
    assert len(classes[True]) == len(classes[False]) > 0
    # every instance with a measurable concentration is a star; the others (no positive
    # flux in the outer aperture: this untrained model also detects noise) keep the network's
    on, off = (np.array(classes[k]) == "star" for k in (True, False))
    assert on.sum() > off.sum() and on.mean() > 0.5 and (on | ~off).all()


def test_fold_fragments_comes_from_the_option_then_the_card_and_needs_a_unet(setup, capsys):
    from dataclasses import replace

    from astrodask.cli import build_parser, main
    from astrodask.commands.run import config_from_args
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.specs import resolve_models
    from astrodask.errors import InputError

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]
    spec = replace(spec, card=dict(spec.card, fold_irregular_fragments=0.3))
    config = resolve_config(models=[str(model_path)])
    assert prepare_spec(spec, mosaic, config, with_unet=True).fold_fragments == 0.3
    # without a U-Net in the run there is no morphology to fold by
    assert prepare_spec(spec, mosaic, config).fold_fragments is None
    for option, expected in ((0.5, 0.5), (0, None)):
        given = resolve_config(models=[str(model_path)], maskrcnn={"fold_fragments": option})
        assert prepare_spec(spec, mosaic, given, with_unet=True).fold_fragments == expected
    with pytest.raises(InputError, match=r"fold_fragments must lie in \[0, 1\], got 2"):
        resolve_config(maskrcnn={"fold_fragments": 2})
    args = build_parser().parse_args(["run", "m.zarr", "--out", "r", "--fold-fragments", "0.2"])
    assert config_from_args(args).maskrcnn.fold_fragments == 0.2
    assert main(["run", str(mosaic.path), "--out", "r", "--fold-fragments", "-1"]) == 2
    assert "fold_fragments must lie in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("name, value, other, flag", [
    ("deblend_contrast", 0.005, 0.01, "--deblend-contrast"),
    ("reclaim_sigma", 3.0, 5.0, "--reclaim-sigma"),
])
def test_centre_settings_come_from_the_option_then_the_card(setup, name, value, other, flag):
    from dataclasses import replace

    from astrodask.cli import build_parser
    from astrodask.commands.run import config_from_args
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.specs import resolve_models
    from astrodask.errors import InputError

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]
    plain = {"weights": "c.weights.h5", "threshold": 0.3}

    def setting(section, **options):
        config = resolve_config(models=[str(model_path)], maskrcnn=options)
        prepared = prepare_spec(replace(spec, card=dict(spec.card, centres=section)), mosaic,
                                config)
        # the spec the runner gets (and run.json records) carries the settings used
        used = {k: prepared.centres[k] for k in ("deblend_contrast", "reclaim_sigma")}
        assert prepared.centres == dict(section, **used)
        return prepared.centres[name]

    assert setting(plain) is None
    assert setting(dict(plain, **{name: value})) == value
    # the run's option wins either way; 0 is off
    assert setting(plain, **{name: other}) == other
    assert setting(dict(plain, **{name: value}), **{name: 0}) is None
    config = resolve_config(models=[str(model_path)], maskrcnn={"centres": False, name: other})
    card = dict(spec.card, centres=plain)
    assert prepare_spec(replace(spec, card=card), mosaic, config).centres is None
    with pytest.raises(InputError, match=name):
        resolve_config(maskrcnn={name: -1})
    with pytest.raises(InputError, match=name):
        resolve_config(maskrcnn={name: True})
    args = build_parser().parse_args(["run", "m.zarr", "--out", "r", flag, "0.02"])
    assert getattr(config_from_args(args).maskrcnn, name) == 0.02


def test_instance_deblending_comes_from_the_option_then_the_card(setup):
    from dataclasses import replace

    from astrodask.cli import build_parser
    from astrodask.commands.run import config_from_args
    from astrodask.engine.run import prepare_spec, resolve_config
    from astrodask.engine.specs import resolve_models
    from astrodask.errors import InputError

    _, mosaic, model_path = setup
    spec = resolve_models([str(model_path)], mosaic.bands)[0]

    def deblend(section, **options):
        config = resolve_config(models=[str(model_path)], maskrcnn=options)
        card = dict(spec.card, deblend_instances=section) if section else spec.card
        return prepare_spec(replace(spec, card=card), mosaic, config).deblend

    assert deblend(None) is None
    assert deblend({"min_snr": 10.0, "min_contrast": 0.001}) == {"min_snr": 10.0,
                                                                  "min_contrast": 0.001}
    # the run's option wins either way; 0 is off
    assert deblend(None, deblend_snr=8) == {"min_snr": 8.0}
    assert deblend({"min_snr": 10.0, "min_contrast": 0.001}, deblend_snr=20) == {
        "min_snr": 20.0, "min_contrast": 0.001}
    assert deblend({"min_snr": 10.0}, deblend_snr=0) is None
    # with a centre network, its own deblending applies instead
    card = dict(spec.card, deblend_instances={"min_snr": 10.0},
                centres={"weights": "c.weights.h5", "threshold": 0.3})
    config = resolve_config(models=[str(model_path)])
    assert prepare_spec(replace(spec, card=card), mosaic, config).deblend is None
    with pytest.raises(InputError, match="deblend_snr must be a number >= 0, got -1"):
        resolve_config(maskrcnn={"deblend_snr": -1})
    args = build_parser().parse_args(["run", "m.zarr", "--out", "r", "--deblend-snr", "12"])
    assert config_from_args(args).maskrcnn.deblend_snr == 12


def test_the_maskrcnn_runner_splits_blends_but_not_the_unets_irregular_galaxies():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner

    shape = (64, 96)
    yy, xx = np.mgrid[:64, :96]
    light = (60 * np.exp(-((yy - 32) ** 2 + (xx - 30) ** 2) / 72.0)
             + 12 * np.exp(-((yy - 32) ** 2 + (xx - 50) ** 2) / 4.5))
    brightness = (light + np.random.default_rng(2).normal(0, 1, shape)).astype(np.float32)
    blend = light > 2.0
    runner = MaskRCNNRunner.__new__(MaskRCNNRunner)
    runner.spec = SimpleNamespace(deblend={"min_snr": 5.0})
    masks, class_ids, scores = runner.split(blend[None], np.array([2]), np.array([0.9]),
                                            brightness, None)
    assert len(masks) == 2 and masks[1][32, 50] and class_ids.tolist() == [2, 2]
    probabilities = np.zeros((5, *shape), np.float32)
    probabilities[4] = 1.0
    probabilities[:, blend] = [[0.0], [0.1], [0.8], [0.0], [0.1]]
    classes = ("spheroid", "disk", "irregular", "point_source", "background")
    masks, _, _ = runner.split(blend[None], np.array([2]), np.array([0.9]), brightness,
                               (probabilities, classes))
    assert len(masks) == 1
    # the card's irregular_by_class: the companion's light called a spheroid by the U-Net
    # is split off the irregular galaxy's instance; called irregular, it stays
    runner.spec = SimpleNamespace(deblend={"min_snr": 5.0, "irregular_by_class": True,
                                           "split_others": False})
    companion = (yy - 32) ** 2 + (xx - 50) ** 2 <= 9
    probabilities[:, companion] = [[0.8], [0.0], [0.1], [0.0], [0.1]]
    masks, _, _ = runner.split(blend[None], np.array([2]), np.array([0.9]), brightness,
                               (probabilities, classes))
    assert len(masks) == 2 and masks[1][32, 50] and masks[0][32, 30]
    probabilities[:, companion] = [[0.0], [0.1], [0.8], [0.0], [0.1]]
    masks, _, _ = runner.split(blend[None], np.array([2]), np.array([0.9]), brightness,
                               (probabilities, classes))
    assert len(masks) == 1


def test_the_maskrcnn_runner_folds_knots_with_the_unets_maps_of_the_window():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner, process_tiles

    shape = (64, 64)
    yy, xx = np.mgrid[:64, :64]
    galaxy = (yy - 30) ** 2 + (xx - 30) ** 2 <= 100
    knot = (yy - 30) ** 2 + (xx - 42) ** 2 <= 4
    found = SimpleNamespace(masks=np.array([galaxy, knot]), class_ids=np.array([2, 2]),
                            scores=np.array([0.9, 0.95]))
    probabilities = np.zeros((5, *shape), np.float32)
    probabilities[4] = 1.0
    probabilities[:, galaxy | knot] = [[0.0], [0.1], [0.8], [0.0], [0.1]]
    classes = ("spheroid", "disk", "irregular", "point_source", "background")
    runner = MaskRCNNRunner.__new__(MaskRCNNRunner)
    runner.spec = SimpleNamespace(fold_fragments=0.3)
    brightness = np.ones(shape)
    masks, class_ids, scores = runner.fold(found, brightness, None, (probabilities, classes))
    # the galaxy takes its most confident member's score (the knot's 0.95, not its own 0.9)
    assert len(masks) == 1 and scores.tolist() == [0.95] and class_ids.tolist() == [2]
    np.testing.assert_array_equal(masks[0], galaxy | knot)
    # a weak proposal over the whole galaxy no longer drags a confident core under the cut
    weak = SimpleNamespace(masks=found.masks, class_ids=found.class_ids,
                           scores=np.array([0.17, 0.96]))
    assert runner.fold(weak, brightness, None, (probabilities, classes))[2].tolist() == [0.96]
    # no U-Net maps, or no folding asked: the detections stand
    assert len(runner.fold(found, brightness, None, None)[0]) == 2
    runner.spec = SimpleNamespace(fold_fragments=None)
    assert len(runner.fold(found, brightness, None, (probabilities, classes))[0]) == 2
    # ... unless both hold saturated pixels: then the knot is a piece of a saturated source
    saturated = np.zeros(shape, bool)
    saturated[30, 30] = saturated[30, 42] = True
    masks, _, scores = runner.fold(found, brightness, saturated, None)
    assert scores.tolist() == [0.9]            # a saturated star keeps its largest piece's
    np.testing.assert_array_equal(masks[0], galaxy | knot)

    # process_tiles runs the U-Nets first and hands their maps on
    seen = []

    class Stub:
        def __init__(self, kind):
            self.kind, self.spec = kind, SimpleNamespace(name=kind)

        def process(self, windows, mosaic, results, shared):
            seen.append((self.kind, sorted(shared)))
            shared[(self.kind, 0, 0)] = True
            return {}

    results = SimpleNamespace(mark_done=lambda *a: None)
    mosaic = SimpleNamespace(path="/local/m.zarr", read_tile=lambda iy, ix: None)
    process_tiles([Stub("maskrcnn"), Stub("unet")], mosaic, results, [(0, 0)])
    assert seen == [("unet", []), ("maskrcnn", [("unet", 0, 0)])]


def test_a_batch_reads_each_window_once_per_width_and_only_the_widths_asked_for():
    from types import SimpleNamespace

    from astrodask.engine.runners import process_tiles

    reads = []
    mosaic = SimpleNamespace(
        path="/local/m.zarr",
        read_tile=lambda iy, ix: reads.append(("tile", iy, ix)) or (iy, ix, 0),
        read_window=lambda iy, ix, margin: reads.append(("window", iy, ix, margin))
        or (iy, ix, margin))

    class Stub:
        def __init__(self, kind, margin):
            self.kind, self.margin, self.spec = kind, margin, SimpleNamespace(name=kind)

        def process(self, windows, mosaic, results, shared):
            assert windows.tiles(self.margin) == [(0, 1, self.margin), (1, 0, self.margin)]
            windows.tiles(self.margin)                      # a second ask reads nothing
            return {}

    results = SimpleNamespace(mark_done=lambda *a: None)
    batch = [(0, 1), (1, 0)]
    # a U-Net that widens its windows: no chunk of ``tiles`` is read for it
    process_tiles([Stub("unet", 80)], mosaic, results, batch)
    assert reads == [("window", 0, 1, 80), ("window", 1, 0, 80)]
    # beside a Mask R-CNN: each window once as its chunk, once widened
    reads.clear()
    process_tiles([Stub("maskrcnn", 0), Stub("unet", 80)], mosaic, results, batch)
    assert sorted(reads) == [("tile", 0, 1), ("tile", 1, 0),
                             ("window", 0, 1, 80), ("window", 1, 0, 80)]
    # a U-Net whose halo suffices shares the Mask R-CNN's reads
    reads.clear()
    process_tiles([Stub("maskrcnn", 0), Stub("unet", 0)], mosaic, results, batch)
    assert reads == [("tile", 0, 1), ("tile", 1, 0)]


def test_a_batch_reads_its_windows_at_once_from_an_object_store():
    import threading
    import time
    from types import SimpleNamespace

    from astrodask.engine.runners import BatchWindows

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def read_tile(iy, ix):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.2)  # a request's latency
        with lock:
            state["now"] -= 1
        return (iy, ix)

    batch = [(0, 0), (0, 1), (1, 0), (1, 1)]
    remote = SimpleNamespace(path="s3://bucket/m.zarr", read_tile=read_tile)
    assert BatchWindows(remote, batch).tiles() == batch  # in the batch's order
    assert state["most"] == 4
    state["most"] = 0
    local = SimpleNamespace(path="/data/m.zarr", read_tile=read_tile)
    assert BatchWindows(local, batch).tiles() == batch
    assert state["most"] == 1


def test_centre_network_of_the_card_makes_one_detection_per_peak(setup, tmp_path):
    import shutil

    from astrodask.cli import build_parser
    from astrodask.commands.run import config_from_args
    from astrodask.engine.run import resolve_config
    from astrodask.errors import InputError
    from astrodask.models.card import read_model_card, write_model_card
    from astrodask.models.centres import build_centre_net

    folder, mosaic, model_path = setup
    path = tmp_path / "tiny_c.keras"
    shutil.copy(model_path, path)
    import keras

    keras.utils.set_random_seed(1)
    net = build_centre_net(3, widths=(4, 8))
    net.save_weights(str(tmp_path / "tiny_c.centres.weights.h5"))
    card = dict(read_model_card(model_path), name="tiny_c")
    card["centres"] = {"weights": "tiny_c.centres.weights.h5", "widths": [4, 8],
                       "threshold": 0.0, "flips": False}
    write_model_card(path, card)
    tables = {}
    for centres in (None, False):
        out = tmp_path / f"r-{centres}"
        config = resolve_config(models=[str(path)], batch_size=4,
                                maskrcnn={"min_confidence": 0.0, "centres": centres})
        astrodask.run(mosaic, out, config=config, client=None, n_workers=1)
        record = json.loads((out / "run.json").read_text())["models"][0]
        assert (record["centres"] is None) == (centres is False)
        tables[centres] = {p.name: pq.read_table(p) for p in (out / "maskrcnn").glob("*.parquet")}
    # without the network: the Mask R-CNN's instances, no centres
    assert all(np.isnan(t.column("centre_y").to_numpy()).all() for t in tables[False].values())
    # with it: one instance per peak of the window's heatmap, at the peak, masks disjoint
    tile = mosaic.read_tile(0, 0)
    table = tables[None]["tile-00000-00000.parquet"]
    assert table.num_rows > 0 and np.isfinite(table.column("centre_y").to_numpy()).all()
    y0, x0 = tile.origin
    cy, cx = table.column("centre_y").to_numpy() - y0, table.column("centre_x").to_numpy() - x0
    masks = [decode_mask(m, y1 - a, x1 - b) for m, a, b, y1, x1 in zip(
        table.column("mask").to_pylist(), table.column("y0").to_pylist(),
        table.column("x0").to_pylist(), table.column("y1").to_pylist(),
        table.column("x1").to_pylist())]
    canvas = np.zeros((TILE + 2 * HALO,) * 2, int)
    for m, a, b in zip(masks, table.column("y0").to_pylist(), table.column("x0").to_pylist()):
        canvas[a - y0:a - y0 + m.shape[0], b - x0:b - x0 + m.shape[1]] += m
    assert canvas.max() == 1
    for k, (y, x) in enumerate(zip(np.round(cy).astype(int), np.round(cx).astype(int))):
        a, b = table.column("y0")[k].as_py() - y0, table.column("x0")[k].as_py() - x0
        assert masks[k][y - a, x - b]
    assert table.column("score").to_numpy().max() <= 1.0
    # a card without the network refuses --centres; the flag reaches the config
    with pytest.raises(InputError, match="no centre network"):
        astrodask.run(mosaic, tmp_path / "refused", models=[str(model_path)],
                      maskrcnn={"centres": True}, client=None, n_workers=1)
    args = build_parser().parse_args(["run", "m.zarr", "--out", "r", "--no-centres"])
    assert config_from_args(args).maskrcnn.centres is False
    with pytest.raises(InputError, match="centres must be true or false"):
        resolve_config(maskrcnn={"centres": "yes"})
