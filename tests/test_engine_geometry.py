"""Geometry checked before work starts: each model's context against the store's halo."""

import warnings

import pytest

import astrodask
from astrodask import cli
from astrodask.config import RunConfig, UnetOptions
from astrodask.engine.run import _check_context
from astrodask.engine.runners import MaskRCNNRunner, UnetRunner
from astrodask.engine.specs import resolve_models
from astrodask.mosaic import TileGrid

from test_engine import mosaic_path  # noqa: F401  (the 64-px, halo-16 test mosaic)


def test_context_is_derived_from_the_network_without_loading_it():
    from astrodask.models.unet import build_unet, load_unet
    from astrodask.morphology.windows import receptive_field_radius, unet_receptive_field

    for name in ("morpheus", "morpheus_decam"):
        model, card = load_unet(name)
        assert unet_receptive_field(**card["config"]) == receptive_field_radius(model) == 86
    small = dict(down_filters=(4, 8), up_filters=(4, 8), down_blocks=2, up_blocks=3)
    assert unet_receptive_field(**small) == receptive_field_radius(build_unet(**small))


def test_each_runner_says_what_context_it_needs():
    unet, maskrcnn = resolve_models(["morpheus", "maskrcnn_decam"], ["H", "J", "V", "Z", "g",
                                                                      "r", "z"])
    assert UnetRunner.required_context(unet, UnetOptions(mode="faithful")) == 34
    assert UnetRunner.required_context(unet, UnetOptions(mode="fast")) == 106
    assert UnetRunner.required_context(unet, UnetOptions(mode="fast", flips=True)) == 106
    assert MaskRCNNRunner.required_context(maskrcnn, RunConfig().maskrcnn) is None


def check(grid, **unet):
    config = RunConfig(unet=UnetOptions(**unet))
    specs = resolve_models(["morpheus"], ["H", "J", "V", "Z"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_context(config, grid, specs)
    # one category a notebook can filter: astrodask.ContextWarning
    assert all(issubclass(w.category, astrodask.ContextWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_halo_against_context():
    mosaic = dict(height=2000, width=2000)
    # the default geometry (tile 512, halo 32) is short of both modes
    assert check(TileGrid(**mosaic), mode="fast") == [
        "morpheus (unet, fast mode) needs 106 px of context around each window core but the "
        "mosaic's halo is 32: its maps may show seams within 74 px of the core edges; "
        "re-ingest with `astrodask ingest --halo 106` to remove them"]
    # faithful: the halo must also stay a multiple of the stride
    faithful = check(TileGrid(**mosaic), mode="faithful", stride=4)
    assert "`astrodask ingest --halo 36`" in faithful[0]
    assert check(TileGrid(**mosaic, halo=36), mode="faithful", stride=4) == []
    assert check(TileGrid(**mosaic, halo=106), mode="fast") == []
    # a tile too small for the halo gets a larger tile suggested
    assert "`astrodask ingest --halo 106 --tile 320`" in check(
        TileGrid(**mosaic, tile=64, halo=16), mode="fast")[0]
    # one window: no seams, nothing to say
    assert check(TileGrid(height=400, width=400), mode="fast") == []


def test_run_warns_in_one_line_before_work_starts(mosaic_path, tmp_path, capsys):  # noqa: F811
    # --gpus fails when the cluster starts (no GPU here): the check came before it
    code = cli.main(["run", str(mosaic_path), "--out", str(tmp_path / "r"), "--gpus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "astrodask: warning: morpheus_hst (unet, fast mode) needs 106 px of context around each "
        "window core but the mosaic's halo is 16: its maps may show seams within 90 px of the "
        "core edges; re-ingest with `astrodask ingest --halo 106 --tile 320` to remove them",
        "astrodask: error: --gpus was given but no NVIDIA GPU is visible on this machine"]


@pytest.mark.parametrize("tile, halo, stride", [(512, 32, 4), (100, 10, 7), (64, 16, 128)])
def test_suggested_geometry_is_valid(tile, halo, stride):
    import re

    message = check(TileGrid(height=5000, width=5000, tile=tile, halo=halo), mode="faithful",
                    stride=stride)
    if not message:
        return
    found = re.search(r"--halo (\d+)(?: --tile (\d+))?", message[0])
    new_halo, new_tile = int(found[1]), int(found[2] or tile)
    assert new_halo >= 34 and new_halo % stride == 0
    core = new_tile - 2 * new_halo
    assert core > 0 and core % stride == 0
