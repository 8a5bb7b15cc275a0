"""The catalog as a FITS binary table, for tools that read FITS (TOPCAT, DS9, astropy, IDL).

The table is streamed part by part of the Parquet catalog, so memory holds
one part (at most :data:`~astrodask.outputs.catalog.PARTITION_ROWS` rows)
whatever the catalog's size. Columns keep their names, order and units
(``TUNITn``); pixel coordinates become FITS's 1-based pixels, as
SExtractor's ``X_IMAGE``: ``x``, ``y``, the centroids and the anchors gain
1, a box's first pixel (``bbox_y0``, ``bbox_x0``) gains 1, and its half-open
end (``bbox_y1``, ``bbox_x1``) is then its last pixel, inclusive. Each
column's ``TCOMMn`` says so. The catalog's provenance (JSON) is in the
primary header's ``ADPROV``.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..errors import StoreError
from .catalog import catalog_parts, catalog_schema, read_catalog_part
from .fits import StreamingFits

#: Columns of 0-based pixel coordinates (or first pixels of half-open ranges): + 1 in FITS.
ONE_BASED = ("x", "y", "x_centroid", "y_centroid", "anchor_y", "anchor_x", "bbox_y0", "bbox_x0")
#: Half-open ends of pixel ranges: unchanged, they are the last pixel (inclusive) in FITS.
LAST_PIXEL = ("bbox_y1", "bbox_x1")

# arrow type -> (FITS TFORM code, big-endian NumPy type of the stored values)
_NUMBERS = {pa.int8(): ("I", ">i2"), pa.int16(): ("I", ">i2"), pa.int32(): ("J", ">i4"),
            pa.int64(): ("K", ">i8"), pa.uint8(): ("B", "u1"), pa.float32(): ("E", ">f4"),
            pa.float64(): ("D", ">f8")}


def _layout(schema, parts):
    """FITS column descriptions, the NumPy record type of ``schema``'s columns, and the rows."""
    strings = [f.name for f in schema if pa.types.is_string(f.type)
               or pa.types.is_large_string(f.type)]
    width = dict.fromkeys(strings, 1)
    n_rows = 0
    for part in parts:  # a first pass over the text columns alone: their widths, the rows
        table = read_catalog_part(part, strings or schema.names[:1])
        n_rows += table.num_rows
        for name in strings:
            lengths = pc.binary_length(table.column(name)).to_numpy(zero_copy_only=False)
            width[name] = max(width[name], int(np.nanmax(lengths, initial=0)))
    columns, dtype = [], []
    for field in schema:
        unit = (field.metadata or {}).get(b"unit", b"").decode()
        if field.name in width:
            form, kind = f"{width[field.name]}A", f"S{width[field.name]}"
        elif pa.types.is_boolean(field.type):
            form, kind = "L", "i1"
        elif field.type in _NUMBERS:
            form, kind = _NUMBERS[field.type]
        else:
            raise StoreError(f"catalog column {field.name!r} has type {field.type}, which a FITS "
                             "table does not hold")
        comment = ("1-based FITS pixel" if field.name in ONE_BASED
                   else "last pixel, inclusive, 1-based" if field.name in LAST_PIXEL else None)
        columns.append((field.name, form, unit, comment, kind))
        dtype.append((field.name, kind))
    return columns, np.dtype(dtype), n_rows


def _records(table, dtype):
    """The rows of ``table`` in FITS layout (``dtype``), pixel columns made 1-based."""
    rows = np.zeros(len(table), dtype)
    for name in dtype.names:
        column = table.column(name)
        kind = dtype[name]
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        if kind.kind == "S":
            values = column.fill_null("").to_numpy(zero_copy_only=False)
            rows[name] = [v.encode("utf-8").ljust(kind.itemsize) for v in values]
        elif pa.types.is_boolean(column.type):
            values = column.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
            rows[name] = np.where(nulls, 0, np.where(values, ord("T"), ord("F")))
        else:
            native = kind.newbyteorder("=")
            values = np.where(nulls, 0, column.fill_null(0).to_numpy(zero_copy_only=False))
            values = values.astype(native) + (1 if name in ONE_BASED else 0)
            values[nulls] = np.nan if kind.kind == "f" else np.iinfo(native).min
            rows[name] = values
    return rows


def _table_header(columns, dtype, n_rows):
    from astropy.io import fits

    header = fits.Header()
    for key, value in (("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2),
                       ("NAXIS1", dtype.itemsize), ("NAXIS2", n_rows), ("PCOUNT", 0),
                       ("GCOUNT", 1), ("TFIELDS", len(columns))):
        header[key] = value
    for k, (name, form, unit, comment, kind) in enumerate(columns, start=1):
        header[f"TTYPE{k}"] = name
        header[f"TFORM{k}"] = form
        if unit:
            header[f"TUNIT{k}"] = unit
        if form in ("I", "J", "K"):
            header[f"TNULL{k}"] = int(np.iinfo(np.dtype(kind)).min)
        if comment:
            header[f"TCOMM{k}"] = comment
    header["EXTNAME"] = "CATALOG"
    return header


def write_catalog_fits(catalog, path):
    """Write ``catalog`` (a Parquet catalog: file, partitioned folder or URL) as a FITS table.

    Parameters
    ----------
    catalog : str or Path
        ``catalog.parquet`` of a merge (see :func:`astrodask.read_catalog`),
        or the results folder that holds it.
    path : str or Path
        The FITS file to write (local or fsspec URL); it appears only when
        whole, replacing any file there.

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    StoreError
        No catalog at ``catalog``, or a column FITS cannot hold.

    Examples
    --------
    >>> import astrodask
    >>> astrodask.write_catalog_fits("results/catalog.parquet", "catalog.fits")  # doctest: +SKIP
    >>> from astropy.table import Table
    >>> Table.read("catalog.fits")["x"]      # doctest: +SKIP
    """
    fs, local = storage.filesystem(catalog)
    inside = storage.join(catalog, "catalog.parquet")
    if fs.isdir(local) and storage.exists(inside):
        catalog = inside
    elif not fs.exists(local):
        raise StoreError(f"no catalog at {catalog}")
    parts = catalog_parts(catalog)
    if not parts:
        raise StoreError(f"{catalog} holds no Parquet part")
    schema = catalog_schema(catalog)
    columns, dtype, n_rows = _layout(schema, parts)
    provenance = (schema.metadata or {}).get(b"astrodask", b"{}").decode()
    cards = [("ORIGIN", "astrodask", "the catalog's writer"),
             ("ADPROV", json.dumps(json.loads(provenance), sort_keys=True),
              "provenance (JSON)"),
             ("PIXBASE", 1, "pixel coordinates in this table are 1-based")]
    with StreamingFits(path) as out:
        out.empty_primary(cards)
        out.table(_table_header(columns, dtype, n_rows),
                  (_records(read_catalog_part(p), dtype) for p in parts))
    return n_rows
