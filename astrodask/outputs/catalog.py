"""The object catalog as Parquet, with provenance in the schema metadata.

A catalog larger than ``partition_rows`` is written as a partitioned dataset
(a folder of Parquet parts, readable with pandas, pyarrow and
dask.dataframe); a smaller one as a single file. Either way the path is
``catalog.parquet`` and it appears only when complete.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq

#: Rows per Parquet part of a partitioned catalog.
PARTITION_ROWS = 1_000_000


def write_catalog(table, path, provenance, partition_rows=PARTITION_ROWS):
    """Write ``table`` with ``provenance`` (a JSON-able dict) in its metadata.

    The bytes depend only on the table and the provenance: no timestamps, so
    the same input and configuration give a byte-identical catalog.
    """
    path = Path(path)
    metadata = dict(table.schema.metadata or {})
    metadata[b"astrodask"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(metadata)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if table.num_rows <= partition_rows:
            pq.write_table(table, tmp, compression="zstd")
        else:
            tmp.mkdir()
            for k, start in enumerate(range(0, table.num_rows, partition_rows)):
                pq.write_table(table.slice(start, partition_rows),
                               tmp / f"part-{k:05d}.parquet", compression="zstd")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def read_catalog(path):
    """Read a catalog (file or partitioned folder) as a :class:`pyarrow.Table`."""
    return pq.read_table(path)


def catalog_provenance(path):
    """The provenance dict stored in a catalog's schema metadata."""
    schema = pq.read_schema(path) if Path(path).is_file() else \
        pq.read_schema(sorted(Path(path).glob("*.parquet"))[0])
    return json.loads(schema.metadata[b"astrodask"])
