"""The object catalog as Parquet, with provenance in the schema metadata.

A catalog larger than ``partition_rows`` is written as a partitioned dataset
(a folder of Parquet parts, readable with pandas, pyarrow and
dask.dataframe); a smaller one as a single file. Either way the path is
``catalog.parquet``. Locally it appears only when complete (a temporary name
renamed); on an object store each file is one PUT, the parts one after the
other.
"""

import io
import json

import pyarrow.parquet as pq

from .. import storage

#: Rows per Parquet part of a partitioned catalog.
PARTITION_ROWS = 1_000_000


def write_catalog(table, location, provenance, partition_rows=PARTITION_ROWS):
    """Write ``table`` with ``provenance`` (a JSON-able dict) in its metadata.

    The bytes depend only on the table and the provenance: no timestamps, so
    the same input and configuration give a byte-identical catalog. A
    partitioned catalog is a folder of ``part-NNNNN.parquet`` files; a previous
    catalog at ``location`` is replaced.
    """
    metadata = dict(table.schema.metadata or {})
    metadata[b"astrodask"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(metadata)
    if table.num_rows <= partition_rows:
        fs, path = storage.filesystem(location)
        if fs.isdir(path):
            storage.remove(location)
        storage.put_bytes(location, storage.parquet_bytes(table))
        return location
    with storage.staged_folder(location) as target:
        storage.makedirs(target)
        for k, start in enumerate(range(0, table.num_rows, partition_rows)):
            storage.put_bytes(storage.join(target, f"part-{k:05d}.parquet"),
                              storage.parquet_bytes(table.slice(start, partition_rows)))
    return location


def _sources(location):
    """The Parquet file of a catalog, or the parts of a partitioned one."""
    fs, path = storage.filesystem(location)
    if fs.isfile(path):
        return [location]
    return [storage.join(location, n) for n in storage.listdir(location) if n.endswith(".parquet")]


def read_catalog(location):
    """Read a catalog (file or partitioned folder, local or URL) as a :class:`pyarrow.Table`."""
    import pyarrow as pa

    tables = [pq.read_table(io.BytesIO(storage.get_bytes(s))) for s in _sources(location)]
    return pa.concat_tables(tables)


def catalog_provenance(location):
    """The provenance dict stored in a catalog's schema metadata."""
    first = _sources(location)[0]
    schema = pq.read_schema(io.BytesIO(storage.get_bytes(first)))
    return json.loads(schema.metadata[b"astrodask"])
