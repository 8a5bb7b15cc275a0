"""Window geometry: each model's context against the store's halo, read beyond it where short."""

import numpy as np
import pytest

import astrodask
from astrodask import cli
from astrodask.config import UnetOptions
from astrodask.engine.runners import UnetRunner
from astrodask.engine.specs import resolve_models
from astrodask.mosaic import PADDING, Tile, TileGrid

from test_engine import mosaic_path  # noqa: F401  (the 64-px, halo-16 test mosaic)


def test_context_is_derived_from_the_network_without_loading_it():
    from astrodask.models.unet import build_unet, downsampling_factor, load_unet
    from astrodask.morphology.windows import (receptive_field_radius, unet_downsampling_factor,
                                              unet_receptive_field)

    for name in ("morpheus", "morpheus_decam"):
        model, card = load_unet(name)
        assert unet_receptive_field(**card["config"]) == receptive_field_radius(model) == 86
        assert unet_downsampling_factor(**card["config"]) == downsampling_factor(model) == 8
    small = dict(down_filters=(4, 8), up_filters=(4, 8), down_blocks=2, up_blocks=3)
    assert unet_receptive_field(**small) == receptive_field_radius(build_unet(**small))
    assert unet_downsampling_factor(**small) == downsampling_factor(build_unet(**small)) == 4


def test_the_unet_reads_what_the_halo_lacks():
    unet = resolve_models(["morpheus"], ["H", "J", "V", "Z"])[0]
    assert UnetRunner.required_context(unet, UnetOptions(mode="faithful")) == 34
    assert UnetRunner.required_context(unet, UnetOptions(mode="fast")) == 106
    assert UnetRunner.required_context(unet, UnetOptions(mode="fast", flips=True)) == 106

    def margin(halo, **options):
        grid = TileGrid(height=2000, width=2000, halo=halo)
        return UnetRunner.context_margin(unet, UnetOptions(**options), grid)

    # fast: halo + margin reaches 106 on the network's 8-px pooling lattice
    assert margin(32, mode="fast") == 80 and margin(16, mode="fast") == 96
    assert margin(106, mode="fast") == 6 and margin(128, mode="fast") == 0
    # faithful: a multiple of the stride, so that widened windows stay on one lattice
    assert margin(32, mode="faithful", stride=4) == 4
    assert margin(32, mode="faithful", stride=8) == 8
    assert margin(40, mode="faithful", stride=8) == 0


def test_a_window_read_with_no_margin_is_the_tile(mosaic_path):  # noqa: F811
    mosaic = astrodask.open_mosaic(mosaic_path)
    grid = mosaic.tile_grid
    for iy, ix in [(0, 0), (2, 3), (4, 6)]:
        tile, window = mosaic.read_tile(iy, ix), mosaic.read_window(iy, ix)
        assert np.array_equal(tile.data, window.data) and np.array_equal(tile.mask, window.mask)
        assert (tile.origin, tile.core) == (window.origin, window.core)
        wide = mosaic.read_window(iy, ix, margin=40)
        assert wide.data.shape[1:] == (grid.tile + 80,) * 2
        assert np.array_equal(wide.data[:, 40:-40, 40:-40], tile.data)
        assert np.array_equal(wide.data[(slice(None),) + wide.core], tile.data[(slice(None),)
                                                                               + tile.core])
        assert wide.origin == (tile.origin[0] - 40, tile.origin[1] - 40)
    # beyond the mosaic's edge: padding, flagged, 0
    corner = mosaic.read_window(0, 0, margin=40)
    assert (corner.mask[:, :40 + grid.halo] == PADDING).all()
    assert (corner.data[:, :40 + grid.halo] == 0).all()
    with pytest.raises(ValueError, match="margin"):
        mosaic.read_window(0, 0, margin=-1)


def test_unet_maps_are_seam_free_at_any_halo(tmp_path):
    """A run at halo 16 gives, away from the mosaic's edge, the whole image's fast-mode maps."""
    import zarr

    from astrodask.engine.runners import filled_data
    from astrodask.models.unet import load_unet
    from astrodask.morphology.windows import classify_tile

    sim = astrodask.simulate(tmp_path / "field", size="400x400", preset="decam", seed=5)
    mosaic = astrodask.ingest([tmp_path / "field" / f"{b}.fits" for b in sim["bands"]],
                              tmp_path / "m.zarr", tile=128, halo=16)  # core 96: 5 x 5 windows
    astrodask.run(mosaic, tmp_path / "r", models=["morpheus_decam"], n_workers=1)
    mean = zarr.open_group(str(tmp_path / "r" / "unet.zarr"), mode="r")["mean"][:]
    model, _ = load_unet("morpheus_decam")
    grid = mosaic.tile_grid
    image = Tile(iy=0, ix=0, data=np.asarray(mosaic.array("image")[:], np.float32),
                 mask=np.asarray(mosaic.array("mask")[:]), origin=(0, 0),
                 core=(slice(0, grid.height), slice(0, grid.width)))
    whole = classify_tile(model, filled_data(image, mosaic), mode="fast")["mean"]
    inner = (slice(None), slice(106, -106), slice(106, -106))  # seams at 192 and 288 cross it
    np.testing.assert_allclose(mean[inner], whole[inner], atol=1e-5)


def test_run_does_not_warn_about_the_halo(mosaic_path, tmp_path, capsys):  # noqa: F811
    # --gpus fails when the cluster starts (no GPU here); nothing is said about the halo
    code = cli.main(["run", str(mosaic_path), "--out", str(tmp_path / "r"), "--gpus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "astrodask: error: --gpus was given but no NVIDIA GPU is visible on this machine"]
