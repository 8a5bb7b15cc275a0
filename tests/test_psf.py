"""PSF at ingest: measured against simulations, given, absent; the run's warning; --rescale."""

import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import astrodask
from astrodask import cli
from astrodask.errors import InputError
from astrodask.mosaic import NONFINITE, ZERO_WEIGHT
from astrodask.psf import measure_psf, rescale_for_fwhm

SCALE = 0.262


def make_wcs(shape, scale=SCALE):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [shape[1] / 2 + 0.3, shape[0] / 2 - 0.2]
    c, s = np.cos(0.3), np.sin(0.3)
    wcs.wcs.cd = np.array([[-c, s], [s, c]]) * scale / 3600
    return wcs


def write_bands(folder, images, names, wcs=None):
    paths = []
    for image, name in zip(images, names):
        header = (wcs or make_wcs(image.shape)).to_header()
        header["FILTER"] = name
        fits.PrimaryHDU(np.asarray(image, np.float32), header=header).writeto(folder / f"{name}.fits")
        paths.append(folder / f"{name}.fits")
    return paths


@pytest.mark.parametrize("shape, conditions, density", [
    ((512, 512), dict(seeing=1.0, star_density=40), 10),                     # 3.6-4.2 px
    ((512, 512), dict(seeing=2.0, psf="kolmogorov", star_density=40), 10),   # 7.3-8.4 px
    ((192, 192), dict(seeing=1.4, pixel_scale=1.19, star_density=4), 2),     # 1.1-1.3 px
])
def test_measured_fwhm_is_within_5_percent_of_the_simulation(shape, conditions, density):
    from astrodask.simulation import simulate_field
    from astrodask.simulation.conditions import Conditions, apply_conditions
    from astrodask.simulation.optics import band_models

    c = Conditions(**conditions)
    field = simulate_field(shape, seed=5, conditions=c, density=density)
    truth = [m.fwhm_px for m in band_models(apply_conditions("decam", c))]
    for b, band in enumerate(field.bands):
        psf = measure_psf(field.images[b], band=band, pixel_scale=field.pixel_scale)
        assert psf.fwhm_px == pytest.approx(truth[b], rel=0.05), band
        assert psf.fwhm_arcsec == pytest.approx(psf.fwhm_px * field.pixel_scale)
        assert psf.n_stars >= 10 and psf.source == "measured" and psf.reason is None


def test_too_few_stars_gives_no_fwhm_and_says_why():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(300, 300))
    yy, xx = np.mgrid[:300, :300]
    for y, x in [(60, 60), (200, 150)]:  # two bright stars are not enough
        image += 500 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
    image[5:9, 5:9] = np.nan
    psf = measure_psf(image, band="g")
    assert psf.fwhm_px is None and psf.fwhm_arcsec is None
    assert "need 5" in psf.reason and "\n" not in psf.reason


def gaussian_spots(seed, profile, size=600):
    """Unit noise with a Gaussian spot every 60 px; ``profile(k) -> (sigma, amplitude)``."""
    image = np.random.default_rng(seed).normal(size=(size, size))
    yy, xx = np.mgrid[:size, :size]
    spots = [(y, x) for y in range(40, size - 40, 60) for x in range(40, size - 40, 60)]
    for k, (y, x) in enumerate(spots):
        sigma, amplitude = profile(k)
        image += amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))
    return image


def test_compact_galaxies_are_not_taken_for_stars():
    """Four stars and many compact galaxies twice their size (a deep HST-like band)."""
    def profile(k):
        sigma = 1.3 if k < 4 else 2.6 * (1 + 0.05 * (k % 3))
        return sigma, 3000 * sigma ** -2

    psf = measure_psf(gaussian_spots(2, profile), band="h")
    assert psf.fwhm_px is None and "only 4 point-like" in psf.reason
    assert "taken for galaxies" in psf.reason and "\n" not in psf.reason


@pytest.mark.parametrize("star_amplitude, measured", [(40000.0, False), (150.0, True)])
def test_two_bright_stars_below_a_locus_of_compact_galaxies(star_amplitude, measured):
    """Two stars of S/N in the thousands below a locus of compact galaxies (a deep HST-like
    z band): the locus is not stars. Two faint sources there prove nothing."""
    image = gaussian_spots(3, lambda k: (1.1, star_amplitude) if k < 2
                           else (1.7 * (1 + 0.04 * (k % 3)), 300.0))
    psf = measure_psf(image, band="z")
    if measured:  # the faint pair is noise in the size distribution: the locus is measured
        assert psf.fwhm_px == pytest.approx(2.355 * 1.7, rel=0.1)
    else:
        assert psf.fwhm_px is None and "only 2 point-like" in psf.reason


@pytest.fixture(scope="module")
def noise_bands(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(1)
    return write_bands(folder, rng.normal(size=(3, 200, 260)), "grz")


def test_given_psf_is_stored_instead_of_the_measurement(noise_bands, tmp_path):
    mosaic = astrodask.ingest(noise_bands, tmp_path / "m.zarr", tile=128, halo=16,
                              psf_fwhm={"g": 1.1, "r": 1.0})
    psf = mosaic.psf
    assert psf["g"].source == "given" and psf["g"].fwhm_arcsec == 1.1
    assert psf["g"].fwhm_px == pytest.approx(1.1 / SCALE)
    assert psf["r"].fwhm_px == pytest.approx(1.0 / SCALE)
    assert psf["z"].source == "measured" and psf["z"].fwhm_px is None  # noise: no stars
    assert mosaic.attrs["psf"]["bands"]["z"]["reason"]
    assert mosaic.rescale_factor == 1.0
    with pytest.raises(InputError, match="names band\\(s\\) i, which the mosaic lacks"):
        astrodask.ingest(noise_bands, tmp_path / "m2.zarr", psf_fwhm={"i": 1.0})


@pytest.mark.parametrize("option, message", [
    (["--psf-fwhm", "g=abc"], "--psf-fwhm takes BAND=ARCSEC"),
    (["--psf-fwhm", "g=-1"], "PSF FWHM of band g must be > 0 arcsec"),
    (["--rescale", "0"], "rescale factor must be a number > 0"),
    (["--rescale", "-2"], "rescale factor must be a number > 0"),
    (["--rescale", "nan"], "rescale factor must be a number > 0"),
    (["--rescale", "big"], "rescale factor must be a number > 0 (or 'auto')"),
])
def test_bad_options_are_one_line_errors(noise_bands, tmp_path, capsys, option, message):
    code = cli.main(["ingest", *map(str, noise_bands), "--out", str(tmp_path / "m.zarr"),
                     "--quiet", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("astrodask: error: ") and message in err[0]
    assert not (tmp_path / "m.zarr").exists()


def test_store_without_psf_still_opens_and_runs_its_checks(noise_bands, tmp_path):
    import zarr

    from astrodask.engine.run import _check_psf
    from astrodask.engine.specs import resolve_models

    astrodask.ingest(noise_bands, tmp_path / "m.zarr", tile=128, halo=16)
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r+")
    attrs = dict(group.attrs["astrodask"])
    del attrs["psf"], attrs["rescale"]  # as ingested before PSFs were measured
    group.attrs["astrodask"] = attrs
    mosaic = astrodask.open_mosaic(tmp_path / "m.zarr")
    assert mosaic.psf is None and mosaic.rescale_factor == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_psf(mosaic, resolve_models(["maskrcnn"], mosaic.bands))


def test_run_warns_when_the_psf_is_outside_the_models_training(noise_bands, tmp_path, capsys):
    astrodask.ingest(noise_bands, tmp_path / "m.zarr", tile=128, halo=16,
                     psf_fwhm={"g": 0.4, "r": 0.36, "z": 1.05})
    # --gpus fails when the cluster starts (no GPU here): the checks came before it
    code = cli.main(["run", str(tmp_path / "m.zarr"), "--out", str(tmp_path / "r"),
                     "--models", "maskrcnn", "--gpus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 3
    assert err[1] == ("astrodask: warning: maskrcnn_decam: star/galaxy from the network alone: "
                      "the store has no measured PSF concentration in every band (g, r, z: "
                      "given with --psf-fwhm, without a concentration)")
    assert err[0] == (
        "astrodask: warning: maskrcnn_decam was trained on PSF FWHM 3.6-4.3 px but the "
        "mosaic's is g 1.53, r 1.37 px: its detections and classes may be unreliable; "
        "re-ingest the bands with `astrodask ingest --rescale 2.4` to bring the FWHM to "
        "about 4.0 px")
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["psf"]["bands"]["g"]["fwhm_arcsec"] == 0.4
    assert record["rescale"]["factor"] == 1.0


def stars_image(shape, positions, sigma=1.2, flux=1000.0, sub=1):
    """Gaussian stars, each pixel the mean of ``sub x sub`` samples (its integral)."""
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    image = np.zeros(shape)
    for dy in offsets:
        for dx in offsets:
            yy, xx = np.mgrid[:shape[0], :shape[1]]
            for y, x in positions:
                image += flux / (2 * np.pi * sigma ** 2) / sub ** 2 * np.exp(
                    -((yy + dy - y) ** 2 + (xx + dx - x) ** 2) / (2 * sigma ** 2))
    return image


@pytest.mark.parametrize("factor", [3.0, 0.5, 2.3])
def test_rescale_keeps_sky_positions_flux_and_flags(tmp_path, factor):
    shape = (150, 170)
    positions = [(30.2, 40.7), (75.5, 120.1), (120.9, 60.3)]
    image = stars_image(shape, positions)
    image[100, 20] = np.nan
    weight = np.ones(shape)
    weight[10, 150] = 0.0
    paths = write_bands(tmp_path, [image], ["r"])
    fits.PrimaryHDU(weight.astype(np.float32), header=make_wcs(shape).to_header()).writeto(
        tmp_path / "w.fits")
    before = astrodask.ingest(paths, tmp_path / "a.zarr", tile=128, halo=16)
    after = astrodask.ingest(paths, tmp_path / "b.zarr", tile=128, halo=16, rescale=factor,
                             weights=[tmp_path / "w.fits"])
    assert after.shape[1:] == tuple(round(n * factor) for n in shape)
    assert after.rescale_factor == factor
    assert after.attrs["rescale"]["original_shape"] == list(shape)
    assert after.pixel_scale == pytest.approx(SCALE / factor)
    # sky positions: original pixel u sits at (u + 0.5) * F - 0.5 on the new grid
    points = np.array([[0.0, 0.0], [33.3, 140.2], [149.0, 169.0], [75.5, 10.25]])
    sky = before.wcs.pixel_to_world(points[:, 1], points[:, 0])
    x, y = after.wcs.world_to_pixel(sky)
    np.testing.assert_allclose(y, (points[:, 0] + 0.5) * factor - 0.5, atol=0.01)
    np.testing.assert_allclose(x, (points[:, 1] + 0.5) * factor - 0.5, atol=0.01)
    # flux: whole image and each star
    new = after.array("image")[0]
    assert np.nansum(new) == pytest.approx(np.nansum(image), rel=0.01)
    for y0, x0 in positions:
        cy, cx = round((y0 + 0.5) * factor - 0.5), round((x0 + 0.5) * factor - 0.5)
        r = int(8 * factor)
        assert new[cy - r:cy + r, cx - r:cx + r].sum() == pytest.approx(1000.0, rel=0.01)
    # a flagged input pixel flags every output pixel it overlaps, and no other
    mask = after.array("mask")[0]
    lo, hi = int(np.floor(100 * factor + 1e-9)), int(np.ceil(101 * factor - 1e-9))
    lx, hx = int(np.floor(20 * factor + 1e-9)), int(np.ceil(21 * factor - 1e-9))
    assert (mask[lo:hi, lx:hx] & NONFINITE).all() and np.isnan(new[lo:hi, lx:hx]).all()
    assert np.count_nonzero(mask & NONFINITE) == (hi - lo) * (hx - lx)
    assert (mask[int(10 * factor), int(150 * factor)] & ZERO_WEIGHT)
    assert after.array("weight")[0][int(10 * factor), int(150 * factor)] == 0.0


def test_rescaled_store_does_not_depend_on_the_block_layout(tmp_path):
    rng = np.random.default_rng(3)
    shape = (230, 300)
    image = stars_image(shape, rng.uniform(10, 220, size=(20, 2))) + rng.normal(size=shape)
    paths = write_bands(tmp_path, [image], ["r"])
    one = astrodask.ingest(paths, tmp_path / "a.zarr", tile=128, halo=16, rescale=2.5,
                           block_tiles=1)
    many = astrodask.ingest(paths, tmp_path / "b.zarr", tile=128, halo=16, rescale=2.5,
                            block_tiles=8)
    np.testing.assert_allclose(one.array("image")[:], many.array("image")[:], atol=1e-5)


def test_distorted_wcs_is_refused(tmp_path):
    shape = (100, 100)
    header = make_wcs(shape).to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header.update({"A_ORDER": 2, "B_ORDER": 2, "A_2_0": 1e-6, "B_0_2": 1e-6})
    header["FILTER"] = "r"
    fits.PrimaryHDU(np.ones(shape, np.float32), header=header).writeto(tmp_path / "r.fits")
    with pytest.raises(InputError, match="cannot map a distorted WCS"):
        astrodask.ingest([tmp_path / "r.fits"], tmp_path / "m.zarr", rescale=2)


def test_rescale_auto_brings_the_fwhm_near_the_training_value(tmp_path):
    rng = np.random.default_rng(4)
    shape = (300, 300)
    positions = [(y, x) for y in range(30, 280, 40) for x in range(30, 280, 40)]
    sigma = 1.7 / 2.3548  # FWHM 1.7 px
    image = stars_image(shape, positions + rng.uniform(-0.5, 0.5, (len(positions), 2)),
                        sigma=sigma, sub=5) + rng.normal(scale=0.05, size=shape)
    paths = write_bands(tmp_path, [image], ["r"])
    native = astrodask.ingest(paths, tmp_path / "a.zarr")
    assert native.psf["r"].fwhm_px == pytest.approx(1.7, rel=0.03)
    mosaic = astrodask.ingest(paths, tmp_path / "m.zarr", rescale="auto")
    assert mosaic.rescale_factor == rescale_for_fwhm(native.psf["r"].fwhm_px)
    assert 2.0 < mosaic.rescale_factor < 3.8 / 1.7  # the original pixel's blur counted
    assert mosaic.psf["r"].fwhm_px == pytest.approx(3.8, rel=0.1)


def test_run_does_not_warn_within_the_measurements_accuracy_of_the_trained_range(
        noise_bands, tmp_path, capsys):
    """maskrcnn_decam was trained on 3.6-4.3 px: 3.4 px (6% under) is within the 10% a
    measured FWHM is good to, 3.2 px (11% under) is not."""
    for name, g_px, warned in (("near", 3.4, False), ("far", 3.2, True)):
        astrodask.ingest(noise_bands, tmp_path / f"{name}.zarr", tile=128, halo=16,
                         psf_fwhm={"g": g_px * SCALE, "r": 4.0 * SCALE, "z": 4.0 * SCALE})
        cli.main(["run", str(tmp_path / f"{name}.zarr"), "--out", str(tmp_path / name),
                  "--models", "maskrcnn", "--gpus"])
        err = capsys.readouterr().err
        assert ("was trained on PSF FWHM 3.6-4.3 px" in err) == warned, err
        if warned:
            assert "but the mosaic's is g 3.20 px:" in err
