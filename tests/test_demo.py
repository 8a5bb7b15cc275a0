"""`astrodask demo`: simulate, ingest and run end to end on a small field."""

import numpy as np
import pytest

import astrodask
from astrodask import cli
from astrodask.demo import demo, demo_models
from astrodask.errors import InputError


def test_demo_runs_every_stage(tmp_path):
    result = demo(tmp_path / "demo", preset="hst", size=(256, 256), n_workers=1)
    assert result.models == demo_models(("v", "z", "j", "h"))
    assert "unet" in result.models
    assert result.mosaic.bands == ("v", "z", "j", "h")
    assert result.run.tiles_run == result.run.tiles_total == 1
    import zarr

    mean = zarr.open_group(str(tmp_path / "demo" / "results" / "unet.zarr"), mode="r")["mean"][:]
    assert mean.shape == (5, 256, 256) and not np.isnan(mean).any()
    assert set(result.seconds) == {"simulate", "ingest", "run", "merge"}
    assert (tmp_path / "demo" / "results" / "catalog.parquet").exists()
    catalog = astrodask.read_catalog(tmp_path / "demo" / "results" / "catalog.parquet")
    assert catalog.num_rows == result.merge.n_objects > 0
    assert "segmap_fits" in result.merge.files


def test_demo_decam_runs_both_shipped_models(tmp_path):
    result = demo(tmp_path / "demo", size=(256, 256), n_workers=1)  # default preset: decam
    assert result.models == ["unet", "maskrcnn"]
    assert result.run.models == ["morpheus_decam", "maskrcnn_decam"]
    import pyarrow.parquet as pq

    catalog = pq.read_table(tmp_path / "demo" / "results" / "catalog.parquet").to_pydict()
    assert len(catalog["id"]) == result.merge.n_objects > 0
    assert set(catalog["source_class"]) <= {"star", "galaxy"}
    assert all(0.99 < sum(catalog[f"p_{c}"][k] for c in ("spheroid", "disk", "irregular",
                                                          "point_source", "background")) < 1.01
               for k in range(len(catalog["id"])))
    # the catalog's morphology is morpheus_decam's calibrated class, recorded in merge.json
    import json

    applied = json.loads((tmp_path / "demo" / "results" / "merge.json").read_text())["options"]
    assert applied["morphology_calibration"]["classes"] == ["spheroid", "disk", "irregular",
                                                            "point_source"]
    assert set(catalog["morphology"]) <= set(applied["morphology_calibration"]["classes"])


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not written by astrodask demo"):
        demo(tmp_path / "mine", size=(256, 256))
    assert cli.main(["demo", "--out", str(tmp_path / "mine"), "--size", "256x256"]) == 2
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_public_names_do_not_shadow_subpackages():
    """`astrodask.<name>` must stay the API object even after `import astrodask.<sub>`."""
    import pkgutil

    import astrodask

    modules = {m.name for m in pkgutil.iter_modules(astrodask.__path__)}
    assert not set(astrodask._API) & modules
