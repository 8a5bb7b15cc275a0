"""Parquet bytes read back whole, and processes that read them exit cleanly."""

import subprocess
import sys

import numpy as np
import pyarrow as pa

from astrodask import storage


def _table():
    table = pa.table({"id": np.arange(1, 51), "flux": np.where(np.arange(50) % 7, 1.5, np.nan)})
    schema = table.schema.with_metadata({b"astrodask": b'{"bands": ["r"]}'})
    schema = schema.set(1, schema.field("flux").with_metadata({b"unit": b"nanomaggy"}))
    return table.cast(schema)


def test_bytes_read_back_with_their_schema_units_and_columns(tmp_path):
    table = _table()
    data = storage.parquet_bytes(table)
    back = storage.parquet_table(data)
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.column("id").equals(table.column("id"))
    np.testing.assert_array_equal(back.column("flux").to_numpy(), table.column("flux").to_numpy())
    assert storage.parquet_table(data, columns=["flux"]).column_names == ["flux"]
    assert storage.parquet_schema(data).field("flux").metadata == {b"unit": b"nanomaggy"}
    (tmp_path / "t.parquet").write_bytes(data)
    assert storage.read_parquet(str(tmp_path / "t.parquet")).num_rows == 50


def test_processes_that_read_parquet_exit_cleanly(tmp_path):
    # pyarrow.parquet.read_table of an in-memory file aborted a process that exits right
    # after it about one time in two ("terminate called without an active exception");
    # ten in a row all passing by chance would be about one run in a thousand
    path = tmp_path / "t.parquet"
    path.write_bytes(storage.parquet_bytes(_table()))
    code = f"from astrodask.storage import read_parquet; read_parquet({str(path)!r})"
    failed = []
    for _ in range(10):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
        if done.returncode:
            failed.append((done.returncode, done.stderr.decode()[-200:]))
    assert not failed, failed
