"""The catalog as a FITS binary table: same columns and units, 1-based pixels, streamed."""

import json

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from astropy.table import Table

from astrodask import StoreError, write_catalog_fits
from astrodask.cli import main
from astrodask.outputs.catalog import write_catalog


def _catalog(path, partition_rows):
    def unit(name, kind, value):
        return pa.field(name, kind, metadata={b"unit": value.encode()} if value else None)

    schema = pa.schema([pa.field("id", pa.int64()), unit("x", pa.float64(), "pix"),
                        unit("y", pa.float64(), "pix"), unit("bbox_y0", pa.int64(), "pix"),
                        unit("bbox_y1", pa.int64(), "pix"), unit("area", pa.int64(), "pix2"),
                        unit("flux_r", pa.float64(), "nanomaggy"),
                        pa.field("class_id", pa.int8()), pa.field("source_class", pa.string()),
                        pa.field("class_score", pa.float32()), pa.field("masked", pa.bool_()),
                        pa.field("n_pieces", pa.int32())])
    table = pa.table({"id": [1, 2, 3, 4, 5], "x": [0.0, 10.25, 99.5, 3.0, 7.0],
                      "y": [0.0, 1.5, 2.5, 3.5, 4.5], "bbox_y0": [0, 1, 2, 3, 4],
                      "bbox_y1": [3, 4, 5, 6, 7], "area": [9, 9, 9, 9, 9],
                      "flux_r": [1.5, None, 3.5, -2.0, 0.0], "class_id": [1, 2, 2, 0, 1],
                      "source_class": ["star", "galaxy", "galaxy", None, "star"],
                      "class_score": [0.9, 0.8, 0.7, 0.6, 0.5],
                      "masked": [True, False, False, True, None],
                      "n_pieces": [1, None, 2, 1, 1]}, schema=schema)
    write_catalog(table, path, {"bands": ["r"], "astrodask_version": "test"},
                  partition_rows=partition_rows)
    return table


@pytest.mark.parametrize("partition_rows", [2, 100])   # a folder of 3 parts, one file
def test_the_fits_table_holds_the_catalog_with_1_based_pixels(tmp_path, partition_rows):
    source = _catalog(tmp_path / "catalog.parquet", partition_rows)
    out = tmp_path / "catalog.fits"
    assert write_catalog_fits(tmp_path / "catalog.parquet", out) == 5
    with fits.open(out) as hdus:
        hdus.verify("exception")                         # a valid FITS file
        assert hdus[1].name == "CATALOG" and hdus[0].header["PIXBASE"] == 1
        assert json.loads(hdus[0].header["ADPROV"])["bands"] == ["r"]
        assert hdus[1].header["TCOMM2"] == "1-based FITS pixel"
        flux = hdus[1].data["flux_r"]
        assert np.isnan(flux[1]) and flux[3] == -2.0             # a null flux is NaN
    table = Table.read(out, hdu="CATALOG")
    assert table.colnames == source.column_names
    assert table["x"].tolist() == [1.0, 11.25, 100.5, 4.0, 8.0]
    assert table["bbox_y0"].tolist() == [1, 2, 3, 4, 5]
    assert table["bbox_y1"].tolist() == [3, 4, 5, 6, 7]     # the last pixel, inclusive
    assert str(table["x"].unit) == "pix" and str(table["area"].unit) == "pix2"
    assert str(table["flux_r"].unit) == "nanomaggy"
    assert table["source_class"].tolist() == ["star", "galaxy", "galaxy", "", "star"]
    assert table["masked"].tolist()[:4] == [True, False, False, True]
    assert table["class_id"].tolist() == [1, 2, 2, 0, 1]
    assert table["n_pieces"].mask.tolist() == [False, True, False, False, False]
    assert table["class_score"].dtype.kind == "f" and table["class_score"].dtype.itemsize == 4


def test_export_takes_a_results_folder_and_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    _catalog(tmp_path / "results" / "catalog.parquet", 100)
    assert main(["export", str(tmp_path / "results"), str(tmp_path / "c.fits")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'c.fits'}: 5 objects"
    assert main(["export", str(tmp_path / "none"), str(tmp_path / "d.fits")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"astrodask: error: no catalog at {tmp_path / 'none'}"]
    assert not (tmp_path / "d.fits").exists()
    missing = tmp_path / "no" / "such" / "folder"
    assert main(["export", str(tmp_path / "results"), str(missing / "c.fits")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"astrodask: error: cannot write {missing / 'c.fits'}: folder {missing} does not exist"]


def test_a_column_fits_cannot_hold_leaves_no_file(tmp_path):
    table = pa.table({"id": [1, 2], "tags": [[1, 2], [3]]})
    write_catalog(table, tmp_path / "catalog.parquet", {})
    with pytest.raises(StoreError, match="'tags' has type list"):
        write_catalog_fits(tmp_path / "catalog.parquet", tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "catalog.parquet"]


def test_an_empty_catalog_and_urls(tmp_path):
    # a merge that found nothing still gives a valid (empty) table; both ends may be URLs
    import fsspec

    source = _catalog(tmp_path / "full.parquet", 100)
    write_catalog(source.slice(0, 0), "memory://astrodask-fits/catalog.parquet", {})
    assert write_catalog_fits("memory://astrodask-fits/catalog.parquet",
                              "memory://astrodask-fits/catalog.fits") == 0
    with fsspec.open("memory://astrodask-fits/catalog.fits", "rb") as fh:
        data = fh.read()
    (tmp_path / "empty.fits").write_bytes(data)
    with fits.open(tmp_path / "empty.fits") as hdus:
        hdus.verify("exception")
        assert len(hdus[1].data) == 0 and hdus[1].columns.names == source.column_names


def test_null_pixel_integers_stay_null_when_made_1_based(tmp_path):
    table = pa.table({"anchor_y": pa.array([4, None], pa.int64()),
                      "x": pa.array([None, 2.0], pa.float64())})
    write_catalog(table, tmp_path / "catalog.parquet", {})
    write_catalog_fits(tmp_path / "catalog.parquet", tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits") as hdus:
        data, header = hdus[1].data, hdus[1].header
        assert data["anchor_y"].tolist() == [5, header["TNULL1"]]
        assert np.isnan(data["x"][0]) and data["x"][1] == 3.0
