"""Open one band's FITS image for streaming reads, with validation.

:class:`FitsImage` picks the image HDU, checks the file is whole and the data
2-D, and reads rectangular sections as float32 together with bad-pixel flags,
honouring BZERO/BSCALE/BLANK. Memory use is set by the section size, never
by the file size: reads are plain ``readinto`` calls at computed offsets (a
memory map would add every page it touched to the resident set). Gzip files
are first decompressed to a temporary file beside the output (a gzip stream
cannot be read out of order).
"""

import gzip
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, first_line
from .mosaic import BLANK, NONFINITE

# Header keywords that describe the stored data layout, not the sky; they are
# dropped when a header is kept as the mosaic's WCS header.
STRUCTURAL_KEYWORDS = {"SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
                       "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "ZIMAGE",
                       "ZBITPIX", "ZCMPTYPE", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1",
                       "ZTILE2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZTENSION",
                       "ZPCOUNT", "ZGCOUNT", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2"}


_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _is_gzip(path):
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class FitsImage:
    """One 2-D FITS image opened for section reads.

    Parameters
    ----------
    path : str or Path
        ``.fits`` or ``.fits.gz`` file.
    hdu : int, optional
        HDU index; default the first HDU that holds image data.
    scratch_dir : str or Path, optional
        Where a gzip file is decompressed (default: beside ``path``).

    Raises
    ------
    InputError
        Unreadable, truncated, no image HDU, a table HDU, or not 2-D.
    """

    def __init__(self, path, hdu=None, scratch_dir=None):
        from astropy.io import fits

        self.path = Path(path)
        self.name = self.path.name
        self._scratch = None
        self._file = None
        if not self.path.is_file():
            raise InputError(f"{self.path} does not exist or is not a file")
        read_path = self.path
        try:
            if _is_gzip(self.path):
                read_path = self._decompress(scratch_dir or self.path.parent)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._hdul = fits.open(read_path, memmap=False, do_not_scale_image_data=True,
                                       mode="readonly", lazy_load_hdus=False)
        except InputError:
            self.close()
            raise
        except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
            self.close()
            reason = first_line(exc) or type(exc).__name__
            raise InputError(f"{self.name} is not a readable FITS file ({reason})") from None
        try:
            self.hdu_index = self._choose_hdu(hdu)
            self._hdu = self._hdul[self.hdu_index]
            self.header = self._hdu.header
            self._check_shape()
            self._check_complete(read_path)
        except InputError:
            self.close()
            raise

    def _decompress(self, scratch_dir):
        scratch_dir = Path(scratch_dir)
        target = scratch_dir / f".{self.name}.astrodask-{os.getpid()}.fits"
        self._scratch = target
        try:
            with gzip.open(self.path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.name} is a damaged gzip file ({exc})") from None
        return target

    def _choose_hdu(self, hdu):
        from astropy.io import fits

        hdus = self._hdul
        if hdu is not None:
            if not 0 <= hdu < len(hdus):
                raise InputError(f"{self.name} has {len(hdus)} HDUs; --hdu {hdu} does not exist")
            chosen = hdus[hdu]
            if not chosen.is_image:
                raise InputError(f"HDU {hdu} of {self.name} is a {type(chosen).__name__}, "
                                 "not an image")
            if chosen.header.get("NAXIS", 0) == 0:
                raise InputError(f"HDU {hdu} of {self.name} holds no data")
            return hdu
        for index, candidate in enumerate(hdus):
            if (candidate.is_image or isinstance(candidate, fits.CompImageHDU)) \
                    and _naxis(candidate) > 0:
                return index
        kinds = ", ".join(type(h).__name__ for h in hdus)
        raise InputError(f"{self.name} has no image HDU with data (HDUs: {kinds})")

    def _check_shape(self):
        naxis = _naxis(self._hdu)
        if naxis != 2:
            shape = tuple(self._hdu.header.get(f"NAXIS{i}") for i in range(naxis, 0, -1))
            kind = f"{naxis}-D cube" if naxis > 2 else f"{naxis}-D array"
            raise InputError(f"{self.name} HDU {self.hdu_index} is a {kind} (shape {shape}); "
                             "astrodask ingests one 2-D image per band")
        self.shape = (int(self._hdu.header["NAXIS2"]), int(self._hdu.header["NAXIS1"]))

    def _check_complete(self, read_path):
        from astropy.io import fits

        if isinstance(self._hdu, fits.CompImageHDU):
            self._data = self._hdu.section
            self.compressed = True
            return
        self.compressed = False
        info = self._hdu.fileinfo()
        bitpix = int(self.header["BITPIX"])
        self._dtype = np.dtype(_BITPIX_DTYPES[bitpix])
        self._data_offset = info["datLoc"]
        needed = self._data_offset + self._dtype.itemsize * self.shape[0] * self.shape[1]
        size = os.path.getsize(read_path)
        if size < needed:
            raise InputError(f"{self.name} is truncated: {size} bytes, its header "
                             f"describes {needed}")
        # Plain reads, not a memory map: mapped pages of a big file count towards the
        # process's resident memory as they are touched, so a memmap makes peak RSS grow
        # with the mosaic.
        self._file = open(read_path, "rb")

    @property
    def filter_name(self):
        """The FILTER keyword (stripped), or ``None``."""
        value = self.header.get("FILTER")
        return str(value).strip() if value is not None and str(value).strip() else None

    def sky_header(self):
        """The header without data-layout keywords: WCS, COMMENT, HISTORY and the rest."""
        from astropy.io import fits

        kept = fits.Header()
        for card in self.header.cards:
            if card.keyword not in STRUCTURAL_KEYWORDS:
                kept.append(card, end=True)
        return kept

    def read(self, ys, xs):
        """Read the section ``[ys, xs]`` (0-based slices, step 1).

        Returns
        -------
        values : ndarray, float32
            Physical values (BZERO/BSCALE applied); NaN where flagged.
        flags : ndarray, uint8
            :data:`~astrodask.mosaic.NONFINITE` and :data:`~astrodask.mosaic.BLANK` bits.
        """
        raw = self._read_raw(ys, xs)
        flags = np.zeros(raw.shape, dtype=np.uint8)
        if self.compressed:  # astropy has already scaled and blanked tile-compressed data
            values = raw.astype(np.float32)
        else:
            bscale = float(self.header.get("BSCALE", 1.0))
            bzero = float(self.header.get("BZERO", 0.0))
            if raw.dtype.kind in "iu":
                blank = self.header.get("BLANK")
                if blank is not None:
                    flags[raw == blank] |= BLANK
                if bscale != 1.0 or bzero != 0.0:
                    values = (raw.astype(np.float64) * bscale + bzero).astype(np.float32)
                else:
                    values = raw.astype(np.float32)
            else:
                values = raw.astype(np.float32)
                if bscale != 1.0 or bzero != 0.0:
                    values = (values * np.float32(bscale) + np.float32(bzero))
        flags[~np.isfinite(values)] |= NONFINITE
        values[flags != 0] = np.nan
        return values, flags

    def _read_raw(self, ys, xs):
        if self.compressed:
            return np.asarray(self._data[ys, xs])
        width = self.shape[1]
        itemsize = self._dtype.itemsize
        out = np.empty((ys.stop - ys.start, xs.stop - xs.start), dtype=self._dtype)
        if xs.start == 0 and xs.stop == width:  # whole rows: one contiguous read
            self._file.seek(self._data_offset + ys.start * width * itemsize)
            self._file.readinto(out)
            return out
        for row, y in enumerate(range(ys.start, ys.stop)):
            self._file.seek(self._data_offset + (y * width + xs.start) * itemsize)
            self._file.readinto(out[row])
        return out

    def close(self):
        """Close the file and remove any decompressed scratch copy."""
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        hdul = getattr(self, "_hdul", None)
        if hdul is not None:
            hdul.close()
            self._hdul = None
        if self._scratch is not None:
            self._scratch.unlink(missing_ok=True)
            self._scratch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _naxis(hdu):
    # For a tile-compressed HDU astropy shows the image's header, so NAXIS is the image's.
    return int(hdu.header.get("NAXIS", 0))
