"""Where stores live: local folders or fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``).

Local paths keep the strongest guarantee: a file or store is written under a
temporary name and renamed when whole. Object stores have no rename, but
each object is written by a single PUT, which is atomic; a multi-object store
(Zarr) is marked complete in its metadata last, and readers refuse an
incomplete one.

Remote access needs the fsspec implementation of the protocol (``s3fs``,
``gcsfs``...); credentials come from the usual environment of that library.
"""

import io
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_url(location):
    """Whether ``location`` names a non-local fsspec URL (``file://`` counts as local)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def check_folder_of(location):
    """A one-line :class:`~astrodask.errors.StoreError` if ``location`` is local and the
    folder it would be written into does not exist (object stores have no folders to check)."""
    if is_url(location):
        return
    folder = Path(normalise(location)).parent
    if not folder.is_dir():
        from .errors import StoreError

        raise StoreError(f"cannot write {location}: folder {folder} does not exist")


def normalise(location):
    """A local path as an absolute string; a URL unchanged (``file://`` becomes a path)."""
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_url(text):
        return text.rstrip("/")
    return str(Path(text).resolve())


def join(location, *parts):
    """Join path components onto a local path or a URL."""
    text = str(location).rstrip("/")
    return "/".join([text, *[str(p).strip("/") for p in parts]])


def filesystem(location):
    """``(fs, path)`` of an fsspec filesystem and the path within it."""
    try:
        return fsspec.core.url_to_fs(normalise(location))
    except ImportError as exc:
        from .errors import DependencyError

        raise DependencyError(f"cannot open {location}: {exc}") from None
    except ValueError as exc:
        from .errors import InputError

        raise InputError(f"cannot open {location}: {exc}") from None


def is_local(fs):
    return isinstance(fs, LocalFileSystem)


def _hidden_sibling(path, tag="tmp"):
    """A unique hidden name beside the local ``path`` (``.NAME.tag-PID-RANDOM.SUFFIXES``).

    The name ends with ``path``'s suffixes because libraries that write by
    file name (Keras, NumPy, Pillow) choose the format from them.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                          f"{''.join(path.suffixes)}")


@contextmanager
def local_file_written_whole(path):
    """A temporary path that replaces the local file ``path`` when the block ends cleanly.

    For writers that need a file name (``model.save``, ``np.savez``...). On
    an exception the temporary file is deleted and ``path`` stays as it was.
    A missing folder is a one-line :class:`~astrodask.errors.StoreError`.

    Examples
    --------
    >>> with local_file_written_whole("run/model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    target = Path(path)
    check_folder_of(target)
    tmp = _hidden_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def put_bytes(location, data):
    """Write ``data`` to ``location`` whole: temporary name + rename locally, one PUT remotely."""
    fs, path = filesystem(location)
    if is_local(fs):
        with local_file_written_whole(path) as tmp:
            tmp.write_bytes(data)
    else:
        fs.pipe_file(path, data)


def put_many(contents):
    """Write several objects whole, as :func:`put_bytes` does each.

    On fsspec's asynchronous filesystems the PUTs are in flight together.

    Parameters
    ----------
    contents : dict
        ``{location: bytes}``, all on one filesystem.
    """
    if not contents:
        return
    fs, paths = _paths_on_one_filesystem(list(contents))
    if is_local(fs):
        for path, data in zip(paths, contents.values()):
            put_bytes(path, data)
    else:
        fs.pipe(dict(zip(paths, contents.values())))


def copy_many(copies):
    """Copy several objects whole, without their bytes passing through this process.

    Object stores copy server-side, with the requests in flight together on
    fsspec's asynchronous filesystems; local files are copied to a temporary
    name and renamed, as :func:`put_bytes` writes.

    Parameters
    ----------
    copies : dict
        ``{source: target}``, all on one filesystem.
    """
    if not copies:
        return
    fs, paths = _paths_on_one_filesystem(list(copies) + list(copies.values()))
    sources, targets = paths[:len(copies)], paths[len(copies):]
    if is_local(fs):
        import shutil

        for source, target in zip(sources, targets):
            with local_file_written_whole(target) as tmp:
                shutil.copyfile(source, tmp)
    else:
        fs.copy(sources, targets)


def _paths_on_one_filesystem(locations):
    """``(fs, paths)``: the filesystem of ``locations[0]`` and each location's path on it.

    The filesystem is resolved once and each path by the filesystem's own
    rule (fsspec's ``_strip_protocol``: a local path made absolute, without
    the symlink resolution of :func:`normalise`, which costs system calls
    per path).
    """
    fs, _ = filesystem(locations[0])
    return fs, [fs._strip_protocol(str(location)) for location in locations]


def map_requests(location, function, items):
    """``[function(item) for item in items]``, in threads when ``location`` is a URL.

    For calls that each wait on requests to the store at ``location`` (a
    Zarr read or write through its synchronous API, for instance): on an
    object store they then wait together instead of one after the other.
    Local calls run in turn, in order. ``location`` may also be a list of the
    stores the calls reach: threads when any of them is a URL.
    """
    items = list(items)
    locations = [location] if isinstance(location, (str, os.PathLike)) else location
    if not any(is_url(p) for p in locations) or len(items) < 2:
        return [function(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))


def json_bytes(value, indent=2, sort_keys=True, default=None):
    """``value`` as JSON text ending in a newline, encoded (what :func:`put_json` writes)."""
    return (json.dumps(value, indent=indent, sort_keys=sort_keys, default=default)
            + "\n").encode()


def put_json(location, value, indent=2, sort_keys=True, default=None):
    """Write ``value`` as JSON text (ending in a newline) to ``location``, whole."""
    put_bytes(location, json_bytes(value, indent, sort_keys, default))


def get_bytes(location):
    """Read a whole object; ``FileNotFoundError`` if it does not exist."""
    fs, path = filesystem(location)
    return fs.cat_file(path)


def get_many(locations):
    """Read several whole objects at once; ``None`` for each that does not exist.

    On object stores (s3fs, gcsfs, HTTP: fsspec's asynchronous filesystems)
    the requests are in flight together, so a task that reads its
    neighbours' files waits about one request's latency instead of one per
    file. Elsewhere they are read one after the other.

    Parameters
    ----------
    locations : sequence of str
        Paths or URLs, all on one filesystem.

    Returns
    -------
    list of bytes or None
        In the order of ``locations``. Errors other than a missing object
        are raised.
    """
    if not locations:
        return []
    fs, paths = _paths_on_one_filesystem(locations)
    out = []
    for value in fs.cat_ranges(paths, None, None, on_error="return"):
        if isinstance(value, FileNotFoundError):
            value = None
        elif isinstance(value, BaseException):
            raise value
        out.append(value)
    return out


def exists(location):
    fs, path = filesystem(location)
    return fs.exists(path)


def makedirs(location):
    """Create a folder (a no-op on object stores, which have none)."""
    fs, path = filesystem(location)
    fs.makedirs(path, exist_ok=True)


def remove(location):
    """Delete a file or a whole folder/prefix if it exists."""
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def listdir(location, hidden=False):
    """Names (not paths) of the entries directly under ``location``; [] if it is missing.

    Hidden names (starting with ``.``: among them the temporaries of files
    and folders still being written here) are left out unless ``hidden``.
    """
    fs, path = filesystem(location)
    if not fs.exists(path):
        return []
    names = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    return names if hidden else [name for name in names if not name.startswith(".")]


def parquet_bytes(table, compression="zstd"):
    """A :class:`pyarrow.Table` serialised as Parquet (deterministic bytes)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=compression)
    return buffer.getvalue()


def parquet_table(data, columns=None):
    """A Parquet file's bytes as a :class:`pyarrow.Table` (``columns``: only these).

    Read with :class:`pyarrow.parquet.ParquetFile` over an Arrow buffer:
    ``pyarrow.parquet.read_table`` of an in-memory file leaves work in its
    dataset scanner's threads that can abort the interpreter at exit
    ("terminate called without an active exception", apache/arrow#33975;
    with pyarrow 26 about half of the processes that read a catalog that way).
    Decoded in the calling thread (``use_threads=False``): with Arrow's CPU
    thread pool the same abort still struck about one process in several
    hundred (a CI run: 1 of 10), and the parts read here are small.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


def parquet_schema(data):
    """The Arrow schema (with its metadata) of a Parquet file's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data)).schema_arrow


def read_parquet(location, columns=None):
    """The whole Parquet object at ``location`` as a :class:`pyarrow.Table` (:func:`parquet_table`)."""
    return parquet_table(get_bytes(location), columns)


@contextmanager
def open_for_writing(location):
    """Context manager: a binary file that appears at ``location`` only when closed cleanly.

    Locally a temporary file renamed at the end (:func:`local_file_written_whole`);
    remotely the object is uploaded when the file closes, and removed again if
    an error occurred.
    """
    fs, path = filesystem(location)
    if is_local(fs):
        with local_file_written_whole(path) as tmp, open(tmp, "wb") as fh:
            yield fh
        return
    try:
        with fs.open(path, "wb") as fh:
            yield fh
    except BaseException:
        if fs.exists(path):
            fs.rm(path)
        raise


class staged_folder:
    """Context manager for building a multi-file folder (a Zarr store, a dataset).

    Yields the location to write into. Locally that is a temporary sibling,
    renamed to ``location`` when the block ends without an exception; on an
    object store it is ``location`` itself, emptied first. Either way the
    partial folder is removed on failure.

    Parameters
    ----------
    location : str or Path
    replace : bool
        Locally, what to do with a folder that is at ``location`` when the
        block ends: replace it (it is moved aside first and deleted only once
        the new one is in place), or leave it and raise
        :class:`~astrodask.errors.StoreError` (it appeared while writing).
    """

    def __init__(self, location, replace=True):
        self.location = normalise(location)
        fs, self.path = filesystem(self.location)
        self.local = is_local(fs)
        self.replace = replace
        self.target = str(_hidden_sibling(self.path)) if self.local else self.location

    def __enter__(self):
        remove(self.target)
        return self.target

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            remove(self.target)
        elif self.local:
            try:
                self._move_into_place()
            except BaseException:
                remove(self.target)
                raise
        return False

    def _move_into_place(self):
        if not os.path.lexists(self.path):
            os.replace(self.target, self.path)
            return
        if not self.replace:
            from .errors import StoreError

            raise StoreError(f"{self.path} appeared while it was being written; "
                             "not replacing it")
        old = _hidden_sibling(self.path, "old")
        os.replace(self.path, old)
        os.replace(self.target, self.path)
        remove(old)
