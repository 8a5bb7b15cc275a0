"""benchmarks/detection_ceiling.py: a blended pair owns one peak, isolated sources their own."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from benchmark_scripts import load_benchmark

SIGMA = {"g": 0.5, "r": 2.0}


def gaussian(shape, x, y, sigma, flux):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


def write_field(folder, sources, shape=(80, 100)):
    """Noiseless bands of Gaussian sources (x, y, snr, morphology) and their truth table."""
    folder.mkdir()
    image = sum(gaussian(shape, x, y, 3.0, 1.0) for x, y, _, _ in sources)
    for band, sigma in SIGMA.items():
        fits.writeto(folder / f"noiseless_{band}.fits", (image * sigma).astype(np.float32))
    (folder / "simulation.json").write_text(json.dumps({"bands": list(SIGMA), "sigma": SIGMA}))
    x, y, snr, morphology = (list(column) for column in zip(*sources))
    pq.write_table(pa.table({"x": x, "y": y, "snr": snr, "morphology": morphology}),
                   folder / "truth.parquet")


def test_a_pair_closer_than_its_width_owns_one_peak(tmp_path):
    module = load_benchmark("detection_ceiling")
    isolated = [(20.0, 20.0, 15.0, "irregular"), (70.0, 55.0, 60.0, "disk")]
    # 2 px apart, sigma 3: one peak between them
    pair = [(30.0, 60.0, 30.0, "point_source"), (32.0, 60.0, 30.0, "spheroid")]
    faint = [(85.0, 15.0, 5.0, "disk")]  # under S/N 10: not counted
    write_field(tmp_path / "f", isolated + pair + faint)
    # both bands are the same image in units of their noise: the sum is that image times 2
    assert np.isclose(module.detection_image(tmp_path / "f")[20, 20], 2 / np.sqrt(2), rtol=1e-6)
    result = module.peak_ceiling(tmp_path / "f")
    assert result["sources"] == 4 and result["peaks"] == 4  # the faint one has its own
    assert result["ceiling"] == 0.75  # the pair's one peak (1 px from both) counts once
    assert result["smooth"] == 2 / 3  # the irregular galaxy is left out
    assert result["by_snr"] == {"10-20": 1.0, "20-50": 0.5, ">=50": 1.0}
    apart = tmp_path / "apart"
    write_field(apart, isolated + [(30.0, 60.0, 30.0, "disk"), (45.0, 60.0, 30.0, "disk")])
    assert module.peak_ceiling(apart)["ceiling"] == 1.0


def test_the_pipeline_completeness_is_split_by_who_owns_a_peak(tmp_path, monkeypatch):
    import mosaic_quality

    module = load_benchmark("detection_ceiling")
    sources = [(20.0, 20.0, 15.0, "disk"), (70.0, 55.0, 60.0, "disk"),
               (30.0, 60.0, 30.0, "disk"), (32.0, 60.0, 30.0, "disk")]
    write_field(tmp_path / "f", sources)
    calls = []

    def fake_pipeline(images, work):  # finds the first isolated source and both of the pair
        calls.append([p.name for p in images])
        return None, {"x": np.array([20.5, 30.0, 32.0]), "y": np.array([20.0, 60.0, 60.0])}, {}

    monkeypatch.setattr(mosaic_quality, "pipeline", fake_pipeline)
    split = module.pipeline_split(tmp_path / "f")
    assert calls == [["g.fits", "r.fits"]]
    # the pair's peak went to one of the two: the other owns none, and the pipeline found it
    assert split == {"completeness": 0.75, "with_peak": 2 / 3, "without_peak": 1.0,
                     "n_without_peak": 1}


def test_fields_are_those_of_the_two_quality_benchmarks():
    import argparse

    import pytest

    module = load_benchmark("detection_ceiling")
    parser = argparse.ArgumentParser()

    def fields(**options):
        args = dict(mosaic_fields=None, settings=None, size=None)
        return module.fields(argparse.Namespace(**dict(args, **options)), parser)

    conditions = fields(settings="in_distribution,seeing_2.2")
    assert [name for name, _ in conditions] == ["in_distribution", "seeing_2.2"]
    assert [kw["seed"] for _, kw in conditions] == [module.SEED, module.SEED + 1]
    assert conditions[1][1]["conditions"].seeing == 2.2 and conditions[1][1]["size"] == (1024, 1024)
    hst = fields(mosaic_fields="hst")
    assert [name for name, _ in hst] == ["hst_standard", "hst_deep"]
    assert hst[1][1]["deep"] and hst[1][1]["preset"] == "hst" and hst[1][1]["size"] == (2048, 2048)
    [(name, crowded)] = fields(mosaic_fields="decam:crowded", size=512)
    assert crowded["density"] == 120.0 and crowded["size"] == (512, 512)
    for bad in ("decam:flagged", "decam:nothing", "sdss"):  # flagged: damaged after simulation
        with pytest.raises(SystemExit):
            fields(mosaic_fields=bad)
    with pytest.raises(SystemExit):
        fields(settings="seeing_9")
