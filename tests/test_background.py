"""The sky background of bands whose sky was not subtracted, taken off at ingest."""

import warnings

import numpy as np
import pytest

from astrodask.background import BackgroundSubtracted, check_mesh, mesh_levels
from astrodask.errors import InputError


class ArrayImage:
    """A band held in memory, read as FitsImage reads (NaN and flags where bad)."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)
        self.shape = self.values.shape

    def read(self, ys, xs):
        values = self.values[ys, xs].copy()
        flags = (~np.isfinite(values)).astype(np.uint8)
        return values, flags

    def sky_header(self):
        return {}


def sky_and_sources(shape=(700, 1000), seed=0):
    """Noise of σ 1, compact sources, and a sky: a pedestal, a gradient and a curvature."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / 1000.0
    sky = 100.0 + 5.0 * xx - 3.0 * yy + 2.0 * yy ** 2
    image = rng.normal(size=shape)
    for _ in range(150):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r2 = (np.mgrid[0:shape[0], 0:shape[1]][0] - y) ** 2 + \
             (np.mgrid[0:shape[0], 0:shape[1]][1] - x) ** 2
        image += rng.uniform(5, 200) * np.exp(-r2 / (2 * rng.uniform(1.5, 4) ** 2))
    return image, sky


def test_the_sky_comes_off_and_the_sources_stay():
    image, sky = sky_and_sources()
    band = BackgroundSubtracted(ArrayImage(image + sky), mesh=128)
    values, flags = band.read(slice(0, 700), slice(0, 1000))
    assert values.dtype == np.float32 and not flags.any()
    residual = band.background(slice(0, 700), slice(0, 1000)) - sky
    # within a tenth of the noise everywhere, edges and corners included, and unbiased
    assert np.abs(residual).max() < 0.1 and abs(np.median(residual)) < 0.02
    np.testing.assert_allclose(values, image - residual, atol=1e-3)
    # sections read as the ingest reads them give the same pixels
    part, _ = band.read(slice(100, 228), slice(640, 1000))
    np.testing.assert_array_equal(part, values[100:228, 640:1000])


def test_flagged_pixels_stay_flagged_and_an_empty_mesh_is_filled():
    image, sky = sky_and_sources(shape=(512, 512), seed=1)
    data = image + sky
    data[:, 130:250] = np.nan        # a missing CCD: a whole column of meshes
    band = BackgroundSubtracted(ArrayImage(data), mesh=128)
    values, flags = band.read(slice(0, 512), slice(0, 512))
    assert np.isnan(values[:, 130:250]).all() and flags[:, 130:250].all()
    assert np.isfinite(band.levels).all()
    residual = band.background(slice(0, 512), slice(0, 512)) - sky
    assert np.abs(residual).max() < 0.3


def test_a_sky_already_subtracted_is_left_as_it_is():
    image, _ = sky_and_sources(shape=(512, 512), seed=2)
    levels = mesh_levels(ArrayImage(image), 128)
    # faint wings are no sky: the sources are masked before the meshes are measured
    assert abs(levels.mean()) < 0.03 and levels.std() < 0.05


def test_small_bands_and_bad_meshes():
    image, sky = sky_and_sources(shape=(60, 90), seed=3)
    band = BackgroundSubtracted(ArrayImage(image + sky), mesh=128)  # one mesh: a constant
    assert band.levels.shape == (1, 1)
    assert np.ptp(band.background(slice(0, 60), slice(0, 90))) < 1e-6
    for bad in (0, 4, 12.5, "x", None):
        with pytest.raises(InputError, match="background mesh"):
            check_mesh(bad)
    with pytest.raises(InputError, match="no sky"):
        BackgroundSubtracted(ArrayImage(np.full((64, 64), np.nan)), mesh=32)


def test_ingest_subtracts_the_background_and_warns_when_it_was_not(tmp_path):
    from astropy.io import fits

    from astrodask import ingest
    from astrodask.ingestion import AstrodaskWarning

    image, sky = sky_and_sources(shape=(300, 400), seed=4)
    paths = []
    for band, scale in (("g", 1.0), ("r", 2.0)):
        path = tmp_path / f"{band}.fits"
        fits.writeto(path, ((image + sky) * scale).astype(np.float32),
                     fits.Header([("FILTER", band)]))
        paths.append(path)
    with pytest.warns(AstrodaskWarning, match=r"sky of band\(s\) g \+\d+σ, r \+\d+σ"):
        raw = ingest(paths, tmp_path / "raw.zarr", tile=128, halo=16)
    assert raw.attrs["background"] is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mosaic = ingest(paths, tmp_path / "m.zarr", tile=128, halo=16, background=64)
    assert not [w for w in caught if "sky of band" in str(w.message)]
    record = mosaic.attrs["background"]
    assert record["mesh"] == 64 and 95 < record["levels"]["g"]["median"] < 105
    assert 190 < record["levels"]["r"]["median"] < 210
    stored = np.asarray(mosaic.array("image")[0])
    assert abs(np.median(stored - image)) < 0.05 and np.abs(stored - image).max() < 0.5


def test_the_warning_counts_the_sky_in_noise_sigma_not_in_the_gradient(tmp_path):
    from astropy.io import fits

    from astrodask import ingest
    from astrodask.ingestion import AstrodaskWarning

    # a pedestal of 40σ, then the same with a tilt of 60σ across the band: the pixel
    # sample's spread becomes the tilt's (mad_std ~20, the sky "+3σ" by it); the noise
    # from neighbour differences stays, and the warning counts the sky in it
    image, _ = sky_and_sources(shape=(256, 600), seed=6)
    noise, levels = [], []
    for tilt in (0.0, 60.0):
        sky = 40.0 + tilt * np.linspace(0.0, 1.0, 600)[None, :]
        path = tmp_path / "g.fits"
        fits.writeto(path, (image + sky).astype(np.float32), fits.Header([("FILTER", "g")]),
                     overwrite=True)
        with pytest.warns(AstrodaskWarning, match=r"sky of band\(s\) g \+\d+σ") as caught:
            mosaic = ingest([path], tmp_path / f"{tilt}.zarr", tile=128, halo=16)
        message = next(str(w.message) for w in caught if "sky of band" in str(w.message))
        levels.append(int(message.split("g +")[1].split("σ")[0]))
        noise.append(mosaic.attrs["band_stats"]["g"]["pixel_noise"])
    assert mosaic.attrs["band_stats"]["g"]["mad_std"] > 10
    # σ 1 plus the sources' steps, the same with the tilt
    assert 0.95 < noise[0] < 1.25 and abs(noise[1] / noise[0] - 1) < 0.03, noise
    assert levels[0] > 30 and levels[1] > 55, levels


def test_the_cli_takes_a_background_mesh(tmp_path, capsys):
    from astropy.io import fits

    from astrodask import cli

    image, sky = sky_and_sources(shape=(200, 260), seed=5)
    path = tmp_path / "g.fits"
    fits.writeto(path, (image + sky).astype(np.float32), fits.Header([("FILTER", "g")]))
    code = cli.main(["ingest", str(path), "--out", str(tmp_path / "m.zarr"), "--tile", "128",
                     "--halo", "16", "--background", "64", "--quiet"])
    out = capsys.readouterr()
    assert code == 0 and "background g: 10" in out.out and "meshes of 64 px" in out.out
    code = cli.main(["ingest", str(path), "--out", str(tmp_path / "n.zarr"), "--background",
                     "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "background mesh" in err and "Traceback" not in err
    assert not (tmp_path / "n.zarr").exists()


def saturated_band(tmp_path, header=()):
    """A raw band whose sky was not subtracted: sources clipped at 220 with the sky in them."""
    from astropy.io import fits

    image, sky = sky_and_sources(shape=(300, 400), seed=7)
    raw = np.minimum(image + sky, 220.0)
    path = tmp_path / "g.fits"
    fits.writeto(path, raw.astype(np.float32), fits.Header([("FILTER", "g"), *header]),
                 overwrite=True)
    return path, raw >= 220.0


def test_saturated_pixels_stay_saturated_after_the_background_comes_off(tmp_path):
    from astrodask import ingest
    from astrodask.sky import saturated_pixels

    path, clipped = saturated_band(tmp_path, header=[("SATURATE", 220.0)])
    assert 100 < clipped.sum() < 5000
    mosaic = ingest([path], tmp_path / "m.zarr", tile=128, halo=16, background=64)
    level = mosaic.saturation["g"]
    # the sky (99-102 here) came off the plateau: the level comes down with it
    assert 117 < level < 121
    assert mosaic.attrs["saturation_source"] == {"g": "SATURATE less the highest background"}
    stored = np.asarray(mosaic.array("image")[0])[:300, :400]
    found = saturated_pixels(stored[None], [level])
    assert found[clipped].all()
    # besides the plateau only pixels within the sky's variation (< 3) below it
    assert (~clipped & found).sum() <= 0.2 * clipped.sum()
    # without a background the header's level stands
    plain = ingest([path], tmp_path / "p.zarr", tile=128, halo=16)
    assert plain.saturation == {"g": 220.0} and plain.attrs["saturation_source"] == {
        "g": "SATURATE"}


def test_a_saturation_level_given_where_the_header_has_none(tmp_path, capsys):
    from astrodask import cli, ingest

    path, _ = saturated_band(tmp_path)
    assert ingest([path], tmp_path / "none.zarr", tile=128, halo=16).saturation == {"g": None}
    given = ingest([path], tmp_path / "given.zarr", tile=128, halo=16, saturation={"*": 220.0})
    assert given.saturation == {"g": 220.0}
    assert given.attrs["saturation_source"] == {"g": "given"}
    code = cli.main(["ingest", str(path), "--out", str(tmp_path / "cli.zarr"), "--tile", "128",
                     "--halo", "16", "--saturation", "g=220", "--background", "64",
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "saturation g: 11" in out and "given less the highest background" in out
    for text, message in (("r=150", "names band(s) r"), ("g=-1", "must be positive"),
                          ("g=abc", "--saturation takes BAND=LEVEL"),
                          ("g=1,g=2", "names band g twice")):
        code = cli.main(["ingest", str(path), "--out", str(tmp_path / "bad.zarr"),
                         "--saturation", text, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (text, err)
        assert not (tmp_path / "bad.zarr").exists()
