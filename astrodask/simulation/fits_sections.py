"""Write a 2-D FITS image region by region, with bounded memory.

The header is written first, the file is extended to its final size and the
data area is filled one region at a time with positioned writes (row by
row), so nothing of the image stays in this process's memory. Everything
goes to a temporary name that is renamed when the file is complete.
"""

import os

import numpy as np

_BLOCK = 2880
_BITPIX = {np.dtype(">f4"): -32, np.dtype(">i4"): 32, np.dtype("u1"): 8}


class FitsSectionWriter:
    """A single-HDU FITS image filled in sections.

    Parameters
    ----------
    path : str or Path
        Final file name.
    shape : tuple of int
        ``(ny, nx)``.
    dtype : str
        ``">f4"``, ``">i4"`` or ``"u1"``.
    cards : list of tuple
        ``(keyword, value, comment)`` written after the structural keywords.
    """

    def __init__(self, path, shape, dtype, cards):
        from astropy.io import fits

        self.path = os.fspath(path)
        self.tmp = self.path + ".part"
        self.dtype = np.dtype(dtype)
        ny, nx = shape
        header = fits.Header()
        header["SIMPLE"] = True
        header["BITPIX"] = _BITPIX[self.dtype]
        header["NAXIS"] = 2
        header["NAXIS1"] = nx
        header["NAXIS2"] = ny
        for key, value, comment in cards:
            header.append((key, value, comment), end=True)
        head = header.tostring().encode("ascii")
        data_bytes = ny * nx * self.dtype.itemsize
        total = len(head) + -(-data_bytes // _BLOCK) * _BLOCK
        self.width = nx
        self.offset = len(head)
        with open(self.tmp, "wb") as fh:
            fh.write(head)
            fh.truncate(total)  # zero-filled data and padding
        self._fd = os.open(self.tmp, os.O_WRONLY)

    def write(self, region, values):
        """Write ``values`` into ``region = (y0, x0, y1, x1)``."""
        y0, x0, y1, x1 = region
        data = np.ascontiguousarray(values, dtype=self.dtype)
        step = self.width * self.dtype.itemsize
        start = self.offset + (y0 * self.width + x0) * self.dtype.itemsize
        if x0 == 0 and x1 == self.width:
            os.pwrite(self._fd, data.tobytes(), start)
            return
        for k in range(y1 - y0):
            os.pwrite(self._fd, data[k].tobytes(), start + k * step)

    def close(self):
        """Flush and move the finished file to its final name."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self.tmp, self.path)

    def abort(self):
        """Drop the partial file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
