"""FITS → Zarr ingest: pixel-exact tiles, WCS round trip, bad input, atomicity."""

import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import astrodask
from astrodask import cli
from astrodask.errors import InputError, StoreError
from astrodask.mosaic import BLANK, NONFINITE, PADDING, ZERO_WEIGHT, TileGrid

HEIGHT, WIDTH = 300, 410
TILE, HALO = 128, 16  # core 96: 4 x 5 windows, partial cores at both far edges


def make_wcs(crval=(150.1, 2.2), rotation_deg=0.0):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [WIDTH / 2, HEIGHT / 2]
    scale = 0.262 / 3600
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    wcs.wcs.cd = [[-scale * c, scale * s], [scale * s, scale * c]]
    return wcs


def write_band(path, data, band=None, wcs=None, extra=None, **kwargs):
    header = (wcs or make_wcs()).to_header() if wcs is not False else fits.Header()
    if band:
        header["FILTER"] = band
    header.add_history("astrodask test image")
    header.add_history("a second history card")
    for key, value in (extra or {}).items():
        header[key] = value
    fits.PrimaryHDU(data, header=header).writeto(path, **kwargs)
    return path


@pytest.fixture
def bands(tmp_path):
    """Three bands: float with NaN/Inf, scaled int16 with BLANK, plain float64."""
    rng = np.random.default_rng(1)
    g = rng.normal(size=(HEIGHT, WIDTH)).astype(np.float32)
    g[5, 7] = np.nan
    g[200, 400] = np.inf
    write_band(tmp_path / "g.fits", g, "g")

    raw = rng.integers(-3000, 3000, size=(HEIGHT, WIDTH)).astype(np.int16)
    raw[10, 20] = -32768
    hdu = fits.PrimaryHDU(raw, header=make_wcs().to_header())
    hdu.header["FILTER"] = "r"
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -32768
    # Write the raw integers as they are so that BZERO/BSCALE/BLANK sit in the file.
    hdu.writeto(tmp_path / "r.fits")
    r_values = raw.astype(np.float64) * 0.5 + 100.0
    r_values[10, 20] = np.nan

    z = rng.normal(size=(HEIGHT, WIDTH))
    write_band(tmp_path / "z.fits", z, "z")
    expected = np.stack([g, r_values.astype(np.float32), z.astype(np.float32)])
    paths = [tmp_path / f"{b}.fits" for b in "grz"]
    return paths, expected


def ingest_small(paths, out, **kwargs):
    return astrodask.ingest(paths, out, tile=TILE, halo=HALO, **kwargs)


def test_image_and_mask_match_source(bands, tmp_path):
    paths, expected = bands
    mosaic = ingest_small(paths, tmp_path / "m.zarr")
    assert mosaic.bands == ("g", "r", "z")
    assert mosaic.shape == (3, HEIGHT, WIDTH)
    image = mosaic.array("image")[:]
    mask = mosaic.array("mask")[:]
    np.testing.assert_array_equal(np.isnan(image), ~np.isfinite(expected))
    good = np.isfinite(expected)
    np.testing.assert_array_equal(image[good], expected[good])
    assert mask[0, 5, 7] == NONFINITE and mask[0, 200, 400] == NONFINITE
    assert mask[1, 10, 20] & BLANK
    assert np.count_nonzero(mask) == 3


def test_every_tile_core_and_halo_equals_source(bands, tmp_path):
    paths, expected = bands
    mosaic = ingest_small(paths, tmp_path / "m.zarr")
    grid = mosaic.tile_grid
    assert grid.shape == (4, 5) and grid.core == 96
    padded = np.zeros((3, HEIGHT + 2 * TILE, WIDTH + 2 * TILE), dtype=np.float32)
    inside = np.zeros(padded.shape[1:], dtype=bool)
    padded[:, TILE:TILE + HEIGHT, TILE:TILE + WIDTH] = np.nan_to_num(
        expected, nan=0.0, posinf=0.0)
    inside[TILE:TILE + HEIGHT, TILE:TILE + WIDTH] = True
    covered = np.zeros((HEIGHT, WIDTH), dtype=int)
    for iy, ix in grid.indices():
        tile = mosaic.read_tile(iy, ix)
        y0, x0 = tile.origin
        window = (slice(y0 + TILE, y0 + 2 * TILE), slice(x0 + TILE, x0 + 2 * TILE))
        # Core and halo both equal the source pixels (0 where flagged or padded).
        np.testing.assert_array_equal(tile.data, padded[(slice(None),) + window])
        is_pad = (tile.mask & PADDING) != 0
        np.testing.assert_array_equal(is_pad, np.broadcast_to(~inside[window], is_pad.shape))
        assert np.all(tile.data[is_pad] == 0)
        ys, xs = mosaic.core_slices(iy, ix)
        covered[ys, xs] += 1
        np.testing.assert_array_equal(tile.data[(slice(None),) + tile.core],
                                      padded[:, ys.start + TILE:ys.stop + TILE,
                                             xs.start + TILE:xs.stop + TILE])
    assert np.all(covered == 1), "window cores must tile the mosaic exactly"


def test_block_layout_does_not_change_the_store(bands, tmp_path):
    paths, _ = bands
    a = ingest_small(paths, tmp_path / "a.zarr", block_tiles=1)
    b = ingest_small(paths, tmp_path / "b.zarr", block_tiles=3)
    for name in ("image", "mask", "tiles", "tile_mask"):
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])
    assert a.attrs["band_stats"] == b.attrs["band_stats"]


class _Doubled:
    """``read_band`` of a derived store: each band doubled plus its index (picklable)."""

    def __init__(self, path):
        self.path = path

    def __call__(self, band, rows, cols):
        image = astrodask.open_mosaic(self.path).array("image")
        return 2.0 * np.asarray(image[band, rows, cols]) + band


def test_a_derived_store_written_by_cluster_tasks_equals_one_written_here(bands, tmp_path):
    from distributed import Client, LocalCluster

    from astrodask.ingestion import derive_mosaic

    paths, expected = bands
    source = ingest_small(paths, tmp_path / "m.zarr")
    kwargs = dict(derived_from={"kind": "doubled"}, block_tiles=2)
    here = derive_mosaic(source, tmp_path / "here.zarr", _Doubled(source.path), **kwargs)
    reports = []
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        there = derive_mosaic(source, tmp_path / "there.zarr", _Doubled(source.path),
                              client=client, progress=lambda *r: reports.append(r), **kwargs)
    assert reports == [(k, 12) for k in range(1, 13)]  # 4 x 5 windows, blocks of 2: 4 x 3
    for name in ("image", "mask", "tiles", "tile_mask"):
        np.testing.assert_array_equal(here.array(name)[:], there.array(name)[:])
    good = source.array("mask")[:] == 0
    doubled = 2.0 * expected + np.arange(3)[:, None, None]
    np.testing.assert_allclose(there.array("image")[:][good], doubled[good], rtol=1e-6)
    assert there.attrs["band_stats"] == here.attrs["band_stats"]
    assert there.attrs["derived_from"] == {"kind": "doubled"}
    assert there.attrs["band_stats"] != source.attrs["band_stats"]  # measured on the new pixels


@pytest.mark.parametrize("failure, message", [
    (ValueError("no pixels here\nsecond line"),
     "writing .*/d.zarr failed on a worker: ValueError: no pixels here$"),
    ("killed", "workers kept dying while writing .*/d.zarr \\(out of memory\\?\\)$"),
])
def test_a_derived_block_that_fails_on_a_worker_is_one_line_and_leaves_no_store(
        bands, tmp_path, failure, message):
    from types import SimpleNamespace

    from distributed import Client, KilledWorker, LocalCluster

    from astrodask.ingestion import derive_mosaic

    def failing(band, rows, cols):
        if rows.start > 100:  # (the scheduler raises KilledWorker when a task's workers die)
            raise KilledWorker("block", SimpleNamespace(address="w"), 3) if failure == "killed" else failure
        return np.zeros((rows.stop - rows.start, cols.stop - cols.start))

    source = ingest_small(bands[0], tmp_path / "m.zarr")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        with pytest.raises(StoreError, match=message):
            derive_mosaic(source, tmp_path / "d.zarr", failing, derived_from={}, client=client)
    assert sorted(p.name for p in tmp_path.iterdir() if "zarr" in p.name) == ["m.zarr"]


def test_wcs_round_trip_and_provenance(tmp_path):
    wcs = make_wcs(rotation_deg=17.0)
    rng = np.random.default_rng(2)
    paths = [write_band(tmp_path / f"{b}.fits", rng.normal(size=(HEIGHT, WIDTH)), b, wcs=wcs,
                        extra={"MAGZERO": 22.5, "BUNIT": "nanomaggy", "SATURATE": 5e4}
                        if b == "g" else None)
             for b in "gr"]
    mosaic = ingest_small(paths, tmp_path / "m.zarr")
    source = WCS(fits.getheader(paths[0]))
    x = rng.uniform(0, WIDTH - 1, 200)
    y = rng.uniform(0, HEIGHT - 1, 200)
    ra0, dec0 = source.all_pix2world(x, y, 0)
    ra1, dec1 = mosaic.wcs.all_pix2world(x, y, 0)
    assert np.max(np.abs(ra0 - ra1)) < 1e-9 and np.max(np.abs(dec0 - dec1)) < 1e-9
    assert list(mosaic.header["HISTORY"]) == ["astrodask test image", "a second history card"]
    assert mosaic.pixel_scale == pytest.approx(0.262, rel=1e-6)
    inputs = mosaic.attrs["inputs"]
    assert [i["name"] for i in inputs] == ["g.fits", "r.fits"]
    assert all(len(i["sha256"]) == 64 and i["size"] == paths[0].stat().st_size for i in inputs)
    assert mosaic.attrs["astrodask_version"] == astrodask.__version__
    assert mosaic.attrs["zeropoints"] == {"g": 22.5, "r": None}
    assert mosaic.attrs["zeropoint_sources"] == {"g": "MAGZERO", "r": None}
    assert mosaic.attrs["bunit"] == {"g": "nanomaggy", "r": None}
    assert mosaic.saturation == {"g": 5e4, "r": None}
    # resampling smooths a saturated plateau below the level: a rescaled store keeps none
    resampled = ingest_small(paths, tmp_path / "m2.zarr", rescale=0.5)
    assert resampled.saturation == {"g": None, "r": None}
    stats = mosaic.attrs["band_stats"]["g"]
    assert stats["n_good"] == HEIGHT * WIDTH and abs(stats["median"]) < 0.05
    assert stats["mad_std"] == pytest.approx(1.0, abs=0.05)


def test_gzip_input_and_band_names(bands, tmp_path):
    paths, _ = bands
    gz = tmp_path / "g.fits.gz"
    with open(paths[0], "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain = ingest_small(paths, tmp_path / "plain.zarr")
    zipped = ingest_small([gz] + paths[1:], tmp_path / "gz.zarr", bands=["G", "R", "Z"])
    assert zipped.bands == ("G", "R", "Z")
    np.testing.assert_array_equal(plain.array("tiles")[:], zipped.array("tiles")[:])
    assert not list(tmp_path.glob(".*astrodask-*")), "decompressed scratch copy left behind"


def test_weights_flag_zero_weight(bands, tmp_path):
    paths, _ = bands
    weight_paths = []
    for b in "grz":
        w = np.ones((HEIGHT, WIDTH), dtype=np.float32)
        w[50:60, 70:80] = 0.0
        weight_paths.append(write_band(tmp_path / f"w{b}.fits", w))
    mosaic = ingest_small(paths, tmp_path / "m.zarr", weights=weight_paths)
    mask = mosaic.array("mask")[:]
    assert np.all(mask[:, 50:60, 70:80] & ZERO_WEIGHT)
    assert mosaic.has_weight and mosaic.array("weight")[0, 55, 75] == 0.0
    tile = mosaic.read_tile(0, 0)
    assert np.all(tile.data[:, 66:76, 86:96] == 0.0)


def test_image_in_extension_and_hdu_option(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(HEIGHT, WIDTH)).astype(np.float32)
    header = make_wcs().to_header()
    header["FILTER"] = "i"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header), table]).writeto(
        tmp_path / "i.fits")
    mosaic = ingest_small([tmp_path / "i.fits"], tmp_path / "m.zarr")
    np.testing.assert_array_equal(mosaic.array("image")[0], data)
    with pytest.raises(InputError, match="HDU 2 of i.fits is a BinTableHDU"):
        ingest_small([tmp_path / "i.fits"], tmp_path / "n.zarr", hdu=2)


def test_missing_wcs_warns(tmp_path):
    data = np.random.default_rng(4).normal(size=(HEIGHT, WIDTH))
    path = write_band(tmp_path / "g.fits", data, "g", wcs=False)
    with pytest.warns(UserWarning, match="no celestial WCS"):
        mosaic = ingest_small([path], tmp_path / "m.zarr")
    assert mosaic.wcs is None


def test_overwrite_replaces_a_store(bands, tmp_path):
    paths, _ = bands
    out = tmp_path / "m.zarr"
    ingest_small(paths[:1], out)
    with pytest.raises(StoreError, match="already exists"):
        ingest_small(paths, out)
    mosaic = ingest_small(paths, out, overwrite=True)
    assert mosaic.bands == ("g", "r", "z")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_store_written_anew_is_opened_anew_by_the_task_cache(bands, tmp_path):
    from astrodask.mosaic import cached_mosaic

    paths, _ = bands
    out = tmp_path / "m.zarr"
    first = ingest_small(paths, out)
    assert cached_mosaic(first.path, first.token) is cached_mosaic(first.path, first.token)
    assert astrodask.open_mosaic(out).token == first.token
    second = ingest_small(paths[:2], out, overwrite=True)
    assert second.token != first.token
    assert cached_mosaic(second.path, second.token).bands == ("g", "r")
    with pytest.raises(StoreError, match="written anew after this job opened it"):
        cached_mosaic(str(out), "0" * 16)


def test_a_run_is_keyed_on_what_the_store_holds_not_when_it_was_written(bands, tmp_path):
    import shutil

    from astrodask.config import RunConfig
    from astrodask.engine.results import run_key

    paths, _ = bands
    first = ingest_small(paths, tmp_path / "a.zarr")
    moved = tmp_path / "moved"
    moved.mkdir()
    again = ingest_small([shutil.copy(p, moved) for p in paths], tmp_path / "b.zarr")
    assert first.token != again.token  # another path: another store to cache
    assert first.content_digest == again.content_digest  # the same pixels: a run resumes

    def key(mosaic):
        return run_key(mosaic, [], RunConfig())

    assert key(first) == key(again)
    psf = ingest_small(paths, tmp_path / "psf.zarr", psf_fwhm={"g": 3.0, "r": 3.0, "z": 3.0})
    halo = astrodask.ingest(paths, tmp_path / "halo.zarr", tile=TILE, halo=HALO + 2)
    bands_only = ingest_small(paths[:2], tmp_path / "two.zarr")
    assert len({key(first), key(psf), key(halo), key(bands_only)}) == 4


def test_overwrite_refuses_a_foreign_folder(bands, tmp_path):
    paths, _ = bands
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an astrodask mosaic"):
        ingest_small(paths, out, overwrite=True)
    assert (out / "notes.txt").exists()


def test_failure_midway_leaves_nothing(bands, tmp_path, monkeypatch):
    import astrodask.ingestion as ingestion

    paths, _ = bands
    calls = []
    real = ingestion._write_block

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingestion, "_write_block", failing)
    with pytest.raises(RuntimeError):
        ingest_small(paths, tmp_path / "m.zarr", block_tiles=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.fits", "r.fits", "z.fits"]


def test_open_mosaic_rejects_what_is_not_a_finished_store(tmp_path):
    import zarr

    with pytest.raises(StoreError, match="does not exist"):
        astrodask.open_mosaic(tmp_path / "nothing.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(StoreError, match="not a"):
        astrodask.open_mosaic(tmp_path / "folder")
    group = zarr.open_group(str(tmp_path / "half.zarr"), mode="w")
    group.attrs["astrodask"] = {"kind": "astrodask-mosaic", "format": 1, "complete": False}
    with pytest.raises(StoreError, match="unfinished"):
        astrodask.open_mosaic(tmp_path / "half.zarr")


def test_tile_grid_geometry():
    grid = TileGrid(height=1000, width=97, tile=64, halo=8)
    assert grid.core == 48 and grid.shape == (21, 3)
    assert grid.owner(47, 96) == (0, 2) and grid.owner(48, 0) == (1, 0)
    (my, mx), (wy, wx) = grid.valid_slices(0, 2)
    assert (my, mx) == (slice(0, 56), slice(88, 97)) and (wy, wx) == (slice(8, 64), slice(0, 9))
    with pytest.raises(ValueError, match="no core"):
        TileGrid(height=10, width=10, tile=64, halo=32)


# --- bad input through the CLI: one line, non-zero exit, nothing left behind -------------

def _bad_inputs(tmp_path, case):
    rng = np.random.default_rng(5)
    good = [write_band(tmp_path / f"{b}.fits", rng.normal(size=(HEIGHT, WIDTH)), b)
            for b in "gr"]
    if case == "truncated":
        data = (tmp_path / "r.fits").read_bytes()
        (tmp_path / "r.fits").write_bytes(data[: len(data) // 2])
        return good, "is truncated"
    if case == "garbage":
        (tmp_path / "r.fits").write_bytes(b"this is not a FITS file at all" * 100)
        return good, "not a readable FITS file"
    if case == "table":
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
            [fits.Column(name="a", format="E", array=[1.0])])]).writeto(
            tmp_path / "r.fits", overwrite=True)
        return good, "no image HDU"
    if case == "shape":
        write_band(tmp_path / "r.fits", rng.normal(size=(HEIGHT, WIDTH - 1)), "r",
                   overwrite=True)
        return good, "shapes differ: g.fits is 300x410, r.fits is 300x409"
    if case == "wcs":
        write_band(tmp_path / "r.fits", rng.normal(size=(HEIGHT, WIDTH)), "r",
                   wcs=make_wcs(crval=(150.1, 2.2001)), overwrite=True)
        return good, "WCS differs between g.fits and r.fits"
    if case == "all_nan":
        write_band(tmp_path / "r.fits", np.full((HEIGHT, WIDTH), np.nan), "r", overwrite=True)
        return good, "band r (r.fits) has no valid pixels"
    if case == "constant":
        write_band(tmp_path / "r.fits", np.zeros((HEIGHT, WIDTH)), "r", overwrite=True)
        return good, "band r (r.fits) is empty"
    if case == "cube":
        write_band(tmp_path / "r.fits", rng.normal(size=(3, HEIGHT, WIDTH)), "r", overwrite=True)
        return good, "is a 3-D cube"
    if case == "missing":
        (tmp_path / "r.fits").unlink()
        return good, "does not exist"
    if case == "no_filter":
        write_band(tmp_path / "r.fits", rng.normal(size=(HEIGHT, WIDTH)), overwrite=True)
        return good, "has no FILTER keyword"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated", "garbage", "table", "shape", "wcs", "all_nan",
                                  "constant", "cube", "missing", "no_filter"])
def test_bad_input_gets_one_line_and_no_store(tmp_path, capsys, case):
    paths, expected = _bad_inputs(tmp_path, case)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main(["ingest", *map(str, paths), "--out", str(tmp_path / "m.zarr"),
                     "--tile", str(TILE), "--halo", str(HALO), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("astrodask: error: ")
    assert expected in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_existing_output_without_overwrite_cli(bands, tmp_path, capsys):
    paths, _ = bands
    out = tmp_path / "m.zarr"
    args = ["ingest", *map(str, paths), "--out", str(out), "--tile", str(TILE),
            "--halo", str(HALO), "--quiet"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"astrodask: error: {out} already exists; pass --overwrite "
                   "(overwrite=True) to replace it"]


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "astrodask.cli", "ingest",
                             str(tmp_path / "none.fits"), "--out", str(tmp_path / "m.zarr")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"astrodask: error: {tmp_path / 'none.fits'} does not " \
                                    "exist or is not a file"
