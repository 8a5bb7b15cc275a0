"""The object catalog as Parquet, with provenance in the schema metadata.

``astrodask merge`` writes ``catalog.parquet`` as a dataset: a folder of
Parquet parts written by the workers, plus ``_metadata`` and
``_common_metadata`` (:func:`write_dataset_metadata`), which pandas, pyarrow,
dask.dataframe and DuckDB read as one table. :func:`write_catalog` writes a
table from one process: a catalog larger than ``partition_rows`` as such a
folder of parts, a smaller one as a single file. Locally it appears only when complete (a temporary name
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


def catalog_parts(location):
    """The Parquet file of a catalog, or the parts of a partitioned one, in name (ID) order."""
    fs, path = storage.filesystem(location)
    if fs.isfile(path):
        return [location]
    return [storage.join(location, n) for n in storage.listdir(location) if n.endswith(".parquet")]


def read_catalog(location, columns=None):
    """Read a catalog (file or partitioned folder, local or URL) as a :class:`pyarrow.Table`.

    Parameters
    ----------
    location : str or Path
    columns : list of str, optional
        Read only these columns.

    Returns
    -------
    pyarrow.Table
        With the provenance in ``schema.metadata[b"astrodask"]`` (JSON) and
        each column's unit, where it has one, in its field metadata.

    Examples
    --------
    The catalog of the example of :func:`astrodask.merge`:

    >>> import astrodask
    >>> catalog = astrodask.read_catalog("results/catalog.parquet")
    >>> catalog.schema.field("ra").metadata, catalog.schema.field("area").metadata
    ({b'unit': b'deg'}, {b'unit': b'pix2'})
    >>> frame = catalog.to_pandas()
    >>> bool((frame.quality_flags >= 0).all()), bool(frame.morphology.notna().all())
    (True, True)
    """
    import pyarrow as pa

    return pa.concat_tables([read_catalog_part(s, columns) for s in catalog_parts(location)])


def read_catalog_part(location, columns=None):
    """One Parquet file of a catalog (see :func:`catalog_parts`) as a :class:`pyarrow.Table`."""
    return storage.read_parquet(location, columns)


def catalog_schema(location):
    """A catalog's Arrow schema (columns, units, provenance), from its first part's footer."""
    fs, path = storage.filesystem(catalog_parts(location)[0])
    with fs.open(path, "rb") as fh:
        return pq.read_schema(fh)


def write_dataset_metadata(location):
    """Write ``_metadata`` and ``_common_metadata`` into a folder of Parquet parts.

    ``_common_metadata`` holds the schema (with the provenance);
    ``_metadata`` also every part's row groups, so readers plan the whole
    table from one file. Parts are taken in name order; only their footers
    are read.
    """
    fs, path = storage.filesystem(location)
    names = [n for n in storage.listdir(location) if n.endswith(".parquet")]
    collected, schema = [], None
    for name in names:
        with fs.open(storage.filesystem(storage.join(location, name))[1], "rb") as fh:
            metadata = pq.read_metadata(fh)
            if schema is None:
                fh.seek(0)
                schema = pq.read_schema(fh)  # the Arrow schema, with the provenance
        metadata.set_file_path(name)
        collected.append(metadata)
    for name, collector in (("_common_metadata", None), ("_metadata", collected)):
        buffer = io.BytesIO()
        pq.write_metadata(schema, buffer, metadata_collector=collector)
        storage.put_bytes(storage.join(location, name), buffer.getvalue())


def catalog_provenance(location):
    """The provenance dict stored in a catalog's schema metadata."""
    return json.loads(catalog_schema(location).metadata[b"astrodask"])
