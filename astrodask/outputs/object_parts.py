"""Objects kept as Parquet parts written by tasks, read where they are needed.

A stage that picks objects out of a catalog on the cluster (the residual
pass's bright objects, its additions) must not gather them into one process:
each task writes its objects as one part and returns an :class:`ObjectPart`,
a few numbers that say where the part lies (the extent of its objects'
boxes) and which IDs it holds. The summaries, one per part, are all that
travels; a task that needs the objects meeting its block, or those with
given IDs, reads only the parts that can hold them (:class:`ObjectParts`),
each once per process.

Boxes are the catalog's half-open ``bbox_y0, bbox_x0, bbox_y1, bbox_x1``
(0-based pixels).
"""

from dataclasses import dataclass, replace
import functools
import hashlib

import numpy as np

from .. import storage

__all__ = ["ObjectPart", "ObjectParts", "boxes_meet", "write_object_part"]

BOX = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")

#: Parts a process keeps read (a block's neighbourhood spans a few).
CACHED_PARTS = 8


@dataclass(frozen=True)
class ObjectPart:
    """Where one part lies and what it holds.

    Attributes
    ----------
    location : str
        The Parquet file.
    rows : int
    box : tuple of int
        ``(y0, x0, y1, x1)``: the half-open extent of its objects' boxes.
    ids : tuple of int
        Least and greatest ``id`` it holds.
    digest : str
        SHA-256 of the file's bytes: a process's cache of parts read tells a
        part written again at the same location from the one it read.
    first_id : int, optional
        Set by :meth:`ObjectParts.renumbered`: its rows read with IDs
        ``first_id, first_id + 1, ...`` in their order.
    """

    location: str
    rows: int
    box: tuple
    ids: tuple
    digest: str
    first_id: int = None


def write_object_part(table, location):
    """Write ``table`` (with ``id`` and the four ``bbox_*`` columns) as one part.

    Parameters
    ----------
    table : pyarrow.Table
    location : str or Path

    Returns
    -------
    ObjectPart or None
        ``None`` for an empty table (nothing is written).
    """
    if table.num_rows == 0:
        return None
    data = storage.parquet_bytes(table)
    location = storage.normalise(location)
    storage.put_bytes(location, data)
    column = {b: table.column(b).to_numpy() for b in BOX + ("id",)}
    return ObjectPart(
        location=location, rows=table.num_rows,
        box=(int(column["bbox_y0"].min()), int(column["bbox_x0"].min()),
             int(column["bbox_y1"].max()), int(column["bbox_x1"].max())),
        ids=(int(column["id"].min()), int(column["id"].max())),
        digest=hashlib.sha256(data).hexdigest())


@functools.lru_cache(maxsize=CACHED_PARTS)
def _read(location, digest):
    return storage.read_parquet(location)


class ObjectParts:
    """Objects spread over parts, found by box or by ID without reading the others.

    Pickled, it is its parts' summaries only: send it to every task.

    Parameters
    ----------
    parts : iterable of ObjectPart or None
        In order (``None`` for a task that wrote nothing).
    """

    def __init__(self, parts):
        self.parts = tuple(p for p in parts if p is not None)

    def __len__(self):
        return sum(p.rows for p in self.parts)

    def renumbered(self, first_id):
        """The same parts, their rows read with IDs ``first_id, first_id + 1, ...`` in order."""
        parts, next_id = [], first_id
        for part in self.parts:
            parts.append(replace(part, first_id=next_id))
            next_id += part.rows
        return ObjectParts(parts)

    def read(self, part):
        """One part as a table (through this process's cache), renumbered if it is."""
        import pyarrow as pa

        table = _read(part.location, part.digest)
        if part.first_id is None:
            return table
        ids = pa.array(part.first_id + np.arange(part.rows), table.schema.field("id").type)
        at = table.schema.get_field_index("id")
        return table.set_column(at, table.schema.field(at), ids)

    def table(self, columns=None):
        """Every object as one table, in order (for small sets and tests).

        Parameters
        ----------
        columns : list of str, optional

        Returns
        -------
        pyarrow.Table or None
            ``None`` when there are no objects.
        """
        import pyarrow as pa

        tables = [self._columns(self.read(p), columns) for p in self.parts]
        return pa.concat_tables(tables) if tables else None

    def meeting(self, rows, cols, columns=None):
        """The objects whose box meets ``rows`` x ``cols``.

        Parameters
        ----------
        rows, cols : slice
            Half-open, 0-based.
        columns : list of str, optional

        Returns
        -------
        dict of ndarray
            Column name to values, in order; empty arrays when nothing meets.
        """
        found = []
        for part in self.parts:
            if boxes_meet(dict(zip(BOX, part.box)), rows, cols):
                table = self.read(part)
                keep = boxes_meet({b: table.column(b).to_numpy() for b in BOX}, rows, cols)
                found.append(self._columns(table.filter(keep), columns))
        return _arrays(found, columns)

    def with_ids(self, ids, columns=None):
        """The objects whose ID is in ``ids``, in ID order.

        Parameters
        ----------
        ids : array of int
        columns : list of str, optional

        Returns
        -------
        dict of ndarray
        """
        import pyarrow as pa

        ids = np.unique(np.asarray(ids, dtype=np.int64))
        found = []
        for part in self.parts:
            if part.first_id is None:
                low, high = part.ids
            else:
                low, high = part.first_id, part.first_id + part.rows - 1
            wanted = ids[(ids >= low) & (ids <= high)]
            if len(wanted):
                table = self.read(part)
                found.append(table.filter(pa.array(np.isin(table.column("id").to_numpy(),
                                                            wanted))))
        if not found:
            return _arrays([], columns)
        every = _arrays(found, None)
        order = np.argsort(every["id"], kind="stable")  # parts need not follow each other
        return {name: every[name][order] for name in (columns or every)}

    @staticmethod
    def _columns(table, columns):
        return table if columns is None else table.select(columns)


def boxes_meet(boxes, rows, cols):
    """Which half-open ``bbox_*`` boxes (a mapping of :data:`BOX` to values or arrays) meet
    the rectangle ``rows`` x ``cols``."""
    return ((boxes["bbox_y0"] < rows.stop) & (boxes["bbox_y1"] > rows.start)
            & (boxes["bbox_x0"] < cols.stop) & (boxes["bbox_x1"] > cols.start))


def _arrays(tables, columns):
    """Column name to the concatenated values of ``tables`` (none: empty arrays of ``columns``)."""
    if not tables:
        return {c: np.zeros(0) for c in (columns or ())}
    return {name: np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for t in tables])
            for name in tables[0].schema.names}
