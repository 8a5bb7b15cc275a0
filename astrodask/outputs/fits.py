"""Stream 2-D images and binary tables into FITS files, strip by strip, in bounded memory.

Data are written sequentially with plain writes (no memory map), so a map
larger than memory still gets its FITS file and the writer's resident memory
is one strip. The file appears only when complete (see
:class:`astrodask.storage.open_for_writing`; local paths or fsspec URLs).
"""

import numpy as np

from .. import storage

BLOCK = 2880
BITPIX = {np.dtype("uint8"): 8, np.dtype("int16"): 16, np.dtype("int32"): 32,
          np.dtype("int64"): 64, np.dtype("float32"): -32, np.dtype("float64"): -64}


def image_header(shape, dtype, sky_header=None, extension=False, name=None, cards=()):
    """A FITS header for a 2-D image of ``shape`` (ny, nx) and ``dtype``.

    ``sky_header`` (e.g. the mosaic's WCS header) is appended after the
    structural keywords; ``cards`` are extra ``(keyword, value, comment)``.
    """
    from astropy.io import fits

    dtype = np.dtype(dtype)
    header = fits.Header()
    if extension:
        header["XTENSION"] = "IMAGE"
    else:
        header["SIMPLE"] = True
    header["BITPIX"] = BITPIX[dtype]
    header["NAXIS"] = 2
    header["NAXIS1"] = int(shape[1])
    header["NAXIS2"] = int(shape[0])
    if extension:
        header["PCOUNT"] = 0
        header["GCOUNT"] = 1
    else:
        header["EXTEND"] = True
    if name:
        header["EXTNAME"] = name
    skip = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
            "GCOUNT", "EXTNAME", "BZERO", "BSCALE", "BLANK"}
    for card in (sky_header.cards if sky_header is not None else []):
        if card.keyword not in skip:
            header.append(card, end=True)
    for card in cards:
        header.append(card, end=True)
    return header


class StreamingFits:
    """Write a FITS file HDU by HDU, each image as a sequence of row strips.

    Use as a context manager; the file appears at ``location`` only when
    closed without an exception.
    """

    def __init__(self, location):
        self._target = storage.open_for_writing(location)
        self._fh = None

    def empty_primary(self, cards=()):
        """Write a data-less primary HDU (for files whose images are extensions)."""
        from astropy.io import fits

        header = fits.Header()
        header["SIMPLE"] = True
        header["BITPIX"] = 8
        header["NAXIS"] = 0
        header["EXTEND"] = True
        for card in cards:
            header.append(card, end=True)
        self._fh.write(header.tostring().encode("ascii"))

    def image(self, header, strips):
        """Write one image HDU: ``header`` then the 2-D ``strips`` in row order."""
        self._fh.write(header.tostring().encode("ascii"))
        dtype = next(k for k, v in BITPIX.items() if v == header["BITPIX"])
        big_endian = dtype.newbyteorder(">")
        nx, ny = header["NAXIS1"], header["NAXIS2"]
        rows = 0
        for strip in strips:
            strip = np.asarray(strip)
            if strip.ndim != 2 or strip.shape[1] != nx:
                raise ValueError(f"strip of shape {strip.shape} for an image {nx} wide")
            rows += strip.shape[0]
            self._fh.write(np.ascontiguousarray(strip, dtype=big_endian).tobytes())
        if rows != ny:
            raise ValueError(f"wrote {rows} rows of an image {ny} high")
        size = nx * ny * dtype.itemsize
        self._fh.write(b"\0" * (-size % BLOCK))

    def table(self, header, chunks):
        """Write one binary-table HDU: ``header`` then the rows of ``chunks`` in order.

        Each chunk is a structured array of the rows' big-endian FITS layout
        (``header``'s ``NAXIS1`` bytes a row); ``NAXIS2`` rows in all.
        """
        self._fh.write(header.tostring().encode("ascii"))
        width, rows = header["NAXIS1"], 0
        for chunk in chunks:
            if chunk.dtype.itemsize != width:
                raise ValueError(f"rows of {chunk.dtype.itemsize} bytes for a table of {width}")
            rows += len(chunk)
            self._fh.write(np.ascontiguousarray(chunk).tobytes())
        if rows != header["NAXIS2"]:
            raise ValueError(f"wrote {rows} rows of a table of {header['NAXIS2']}")
        self._fh.write(b"\0" * (-(width * rows) % BLOCK))

    def __enter__(self):
        self._fh = self._target.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        return self._target.__exit__(exc_type, exc, tb)
