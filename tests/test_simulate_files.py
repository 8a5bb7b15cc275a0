"""``astrodask simulate``: files, tiling, determinism and errors."""

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import astrodask
from astrodask.cli import main
from astrodask.errors import InputError

SIZE = "600x520"  # width x height: not a multiple of the tile or noise block


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "tiled"
    astrodask.simulate(out, size=SIZE, preset="decam", seed=9, density=80, star_density=6,
                       tile_size=256, noiseless=True)
    return out


def test_tiled_files_equal_field_drawn_in_one_piece(tiled):
    field = astrodask.simulate_field((520, 600), preset="decam", seed=9, density=80,
                                     star_density=6, noiseless=True)
    for b, band in enumerate(field.bands):
        assert fits.getdata(tiled / f"{band}.fits").tobytes() == \
            field.images[b].astype(">f4").tobytes()
        np.testing.assert_array_equal(fits.getdata(tiled / f"noiseless_{band}.fits"),
                                      field.noiseless[b])
    np.testing.assert_array_equal(fits.getdata(tiled / "labels.fits"), field.label_map)
    np.testing.assert_array_equal(fits.getdata(tiled / "morphology.fits"), field.morphology_map)
    assert pq.read_table(tiled / "truth.parquet").equals(field.truth)
    from_file = astrodask.read_object_masks(tiled / "masks.parquet")
    in_memory = field.object_masks()
    assert [m.id for m in from_file] == [m.id for m in in_memory]
    for a, b in zip(from_file, in_memory):
        assert a.box == b.box and np.array_equal(a.mask, b.mask)
    # objects whose stamps cross the 256-pixel tile edges exist in this field
    truth = field.truth.to_pydict()
    crossing = [y0 < 256 < y1 or x0 < 256 < x1 for y0, x0, y1, x1 in
                zip(truth["bbox_y0"], truth["bbox_x0"], truth["bbox_y1"], truth["bbox_x1"])]
    assert sum(crossing) >= 3


def test_same_seed_gives_byte_identical_files(tiled, tmp_path):
    again = tmp_path / "again"
    astrodask.simulate(again, size=SIZE, preset="decam", seed=9, density=80, star_density=6,
                       tile_size=256, noiseless=True, workers=2)
    assert _digests(again) == _digests(tiled)


def test_headers_wcs_and_manifest(tiled):
    manifest = json.loads((tiled / "simulation.json").read_text())
    assert manifest["bands"] == ["g", "r", "z"] and manifest["shape"] == [520, 600]
    header = fits.getheader(tiled / "r.fits")
    assert header["FILTER"] == "r" and header["BUNIT"] == "nanomaggy"
    assert header["MAGZERO"] == 22.5 and header["GAIN"] > 0
    wcs = WCS(header)
    truth = pq.read_table(tiled / "truth.parquet").to_pydict()
    ra, dec = wcs.all_pix2world(truth["x"][:5], truth["y"][:5], 0)
    np.testing.assert_allclose(ra, truth["ra"][:5], atol=1e-9)
    np.testing.assert_allclose(dec, truth["dec"][:5], atol=1e-9)
    scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
    assert abs(scale - 0.262) < 1e-6
    assert not list(tiled.glob("*.part"))


def test_cli_writes_hst_field_and_refuses_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "hst"
    assert main(["simulate", str(out), "--size", "256x256", "--preset", "hst",
                 "--seed", "2", "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.fits")) == [
        "h.fits", "j.fits", "labels.fits", "morphology.fits", "v.fits", "z.fits"]
    assert fits.getheader(out / "h.fits")["BUNIT"] == "electrons/s"
    capsys.readouterr()
    assert main(["simulate", str(out), "--size", "256x256", "--preset", "hst"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astrodask: error:") and "--overwrite" in err and "\n" not in err
    assert main(["simulate", str(out), "--size", "256x256", "--preset", "hst", "--seed", "3",
                 "--overwrite", "--quiet"]) == 0


@pytest.mark.parametrize("argv, text", [
    (["--size", "12x"], "bad --size"),
    (["--size", "0x10"], "bad --size"),
    (["--preset", "sdss"], "unknown preset"),
    (["--density", "-1"], "density"),
    (["--star-density", "-0.5"], "star density"),
    (["--large-galaxies", "-2"], "large-galaxy density"),
    (["--tile-size", "300"], "tile size"),
    (["--workers", "0"], "workers"),
])
def test_cli_bad_options_are_one_line_errors(tmp_path, capsys, argv, text):
    assert main(["simulate", str(tmp_path / "x")] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astrodask: error:") and text in err and "\n" not in err


def test_api_rejects_non_empty_folder(tmp_path):
    (tmp_path / "note.txt").write_text("keep me")
    with pytest.raises(InputError):
        astrodask.simulate(tmp_path, size=(64, 64))
    assert (tmp_path / "note.txt").exists()


def test_tiled_equals_whole_with_saturation_and_cosmic_rays(tmp_path):
    kw = dict(preset="decam", seed=31, density=20, star_density=40, saturate=True,
              cosmic_rays=50)
    astrodask.simulate(tmp_path / "t", size="512x300", tile_size=256, **kw)
    field = astrodask.simulate_field((300, 512), **kw)
    for b, band in enumerate(field.bands):
        np.testing.assert_array_equal(fits.getdata(tmp_path / "t" / f"{band}.fits"),
                                      field.images[b])


def test_large_galaxies_tiled_equal_whole_and_recorded(tmp_path):
    import json

    out = tmp_path / "t"
    assert main(["simulate", str(out), "--size", "512x300", "--tile-size", "256", "--seed", "5",
                 "--large-galaxies", "20", "--quiet"]) == 0
    field = astrodask.simulate_field((300, 512), preset="decam", seed=5, large_galaxies=20)
    for b, band in enumerate(field.bands):
        np.testing.assert_array_equal(fits.getdata(out / f"{band}.fits"), field.images[b])
    assert json.loads((out / "simulation.json").read_text())["large_galaxies"] == 20.0
    assert (field.truth.column("hlr").to_numpy() > 1.5).sum() >= 3


def test_output_ingests_as_a_mosaic(tiled, tmp_path):
    mosaic = astrodask.ingest([tiled / f"{b}.fits" for b in "grz"], tmp_path / "m.zarr")
    assert tuple(mosaic.bands) == ("g", "r", "z")
    assert tuple(mosaic.shape) == (3, 520, 600)
    assert mosaic.wcs is not None
    image = np.asarray(mosaic.to_dask()[1])
    np.testing.assert_array_equal(image, fits.getdata(tiled / "r.fits"))
