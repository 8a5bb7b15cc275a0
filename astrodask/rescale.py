"""Resample band images onto a finer or coarser pixel grid, block by block.

A factor ``F`` maps input pixel ``u`` (0-based, pixel centres) to output
pixel ``j`` by ``u = (j + 0.5) / F - 0.5``: pixel edges stay on pixel edges,
the output has ``round(n * F)`` pixels per axis and covers the same sky. The
celestial WCS follows exactly (pixel scale / F, CRPIX moved so every sky
position keeps its place). Values are per-pixel fluxes: the cubic spline of
the input (its surface brightness), averaged over each output pixel, times the
output pixel's area in input pixels (``1 / F**2``), so fluxes are conserved.
An output pixel is flagged with every flag of the input pixels it overlaps.

:class:`RescaledImage` wraps a :class:`~astrodask.fits_input.FitsImage` and
reads sections of the rescaled grid, each from the input section under it
plus a margin, so memory is set by the section, never by the image.
"""

import math

import numpy as np

from .errors import InputError

#: Input pixels read beyond a section on each side: the cubic spline's prefilter
#: reaches 0.268**12 ~ 1e-7 of a pixel's value that far.
MARGIN = 12


def check_factor(factor):
    """The rescale factor as a positive finite float.

    Raises
    ------
    InputError
        Not a number, not finite, or not > 0.
    """
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise InputError(f"rescale factor must be a number > 0 (or 'auto'), got {factor!r}") \
            from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"rescale factor must be a number > 0, got {factor!r}")
    return value


def rescaled_length(n, factor):
    """Pixels along an axis of ``n`` input pixels after rescaling by ``factor``."""
    return max(1, int(round(n * factor)))


def rescale_header(header, factor):
    """A copy of ``header`` whose celestial WCS describes the rescaled grid.

    CDi_j and CDELTi are divided by ``factor`` and CRPIXi (1-based) becomes
    ``factor * (CRPIXi - 0.5) + 0.5``; PCi_j, CRVAL and the projection stay.

    Raises
    ------
    InputError
        A distorted WCS (SIP, lookup tables), which this cannot map exactly.
    """
    from astropy.wcs import WCS, FITSFixedWarning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # an invalid WCS is reported by the ingest's own check
            wcs = None
    distorted = wcs is not None and (wcs.sip is not None or wcs.cpdis1 is not None
                                     or wcs.cpdis2 is not None or wcs.det2im1 is not None
                                     or wcs.det2im2 is not None)
    if distorted or any(k.startswith(("A_ORDER", "B_ORDER", "CPDIS", "D2IMDIS"))
                        for k in header):
        raise InputError("--rescale cannot map a distorted WCS (SIP or lookup-table "
                         "distortions) exactly; resample the images to a plain TAN WCS first")
    out = header.copy()
    for axis in (1, 2):
        if f"CRPIX{axis}" in out:
            out[f"CRPIX{axis}"] = factor * (float(out[f"CRPIX{axis}"]) - 0.5) + 0.5
        if f"CDELT{axis}" in out:
            out[f"CDELT{axis}"] = float(out[f"CDELT{axis}"]) / factor
        if f"NAXIS{axis}" in out:
            out[f"NAXIS{axis}"] = rescaled_length(int(out[f"NAXIS{axis}"]), factor)
        for other in (1, 2):
            if f"CD{axis}_{other}" in out:
                out[f"CD{axis}_{other}"] = float(out[f"CD{axis}_{other}"]) / factor
    return out


def _samples(start, stop, factor):
    """Input coordinates sampled for output pixels ``start..stop-1``: one per pixel when
    upsampling, ``ceil(1/F)`` spread over each pixel when downsampling."""
    per_pixel = max(1, math.ceil(1.0 / factor - 1e-9))
    offsets = (np.arange(per_pixel) + 0.5) / per_pixel
    j = np.arange(start, stop)[:, None] + offsets[None, :]
    return j / factor - 0.5, per_pixel


def _input_span(start, stop, factor, n_in):
    """The input pixels (with :data:`MARGIN`) that output pixels ``start..stop-1`` need."""
    lo = int(math.floor(start / factor)) - MARGIN
    hi = int(math.ceil(stop / factor)) + MARGIN
    return max(lo, 0), min(hi, n_in)


def _weights(start, stop, factor, in_lo, in_hi, order):
    """Matrix (out, in) of the spline interpolation averaged over each output pixel."""
    from scipy import ndimage

    coords, per_pixel = _samples(start, stop, factor)
    n_in = in_hi - in_lo
    local = (coords - in_lo).ravel()
    # Interpolating each unit impulse gives the matrix's columns; 'reflect' puts the
    # boundary on the pixel edge, where a cut-off section ends only at the image edge.
    rows = np.repeat(local, n_in)
    cols = np.tile(np.arange(n_in, dtype=float), local.size)
    matrix = ndimage.map_coordinates(np.eye(n_in), [rows, cols], order=order, mode="reflect")
    return matrix.reshape(stop - start, per_pixel, n_in).mean(axis=1)


def _touched(start, stop, factor, n_in):
    """First and last input pixel that each output pixel overlaps."""
    j = np.arange(start, stop)
    first = np.floor(j / factor + 1e-9).astype(int)
    last = np.ceil((j + 1) / factor - 1e-9).astype(int) - 1
    return np.clip(first, 0, n_in - 1), np.clip(np.maximum(last, first), 0, n_in - 1)


def _or_along(flags, first, last, axis):
    """Bitwise OR of ``flags`` over index ranges ``first..last`` along ``axis``."""
    out = np.take(flags, first, axis=axis)
    for step in range(1, int((last - first).max(initial=0)) + 1):
        out |= np.take(flags, np.minimum(first + step, last), axis=axis)
    return out


class RescaledImage:
    """A band image read on a grid rescaled by ``factor``.

    Parameters
    ----------
    image : FitsImage
        The input (anything with ``shape``, ``read(ys, xs)`` and ``sky_header()``).
    factor : float
        > 1 upsamples, < 1 downsamples.
    weight : bool
        The image is an inverse-variance weight map: interpolated linearly,
        scaled to the output pixels' variance, and 0 wherever an overlapped
        input weight is not positive.
    """

    def __init__(self, image, factor, weight=False):
        self._image = image
        self.factor = check_factor(factor)
        self.weight = weight
        self._header = rescale_header(image.sky_header(), self.factor)
        self.shape = tuple(rescaled_length(n, self.factor) for n in image.shape)

    def __getattr__(self, name):  # name, path, header, filter_name... of the input
        return getattr(self._image, name)

    def sky_header(self):
        """The input's header with the WCS of the rescaled grid."""
        return self._header.copy()

    def read(self, ys, xs):
        """Read section ``[ys, xs]`` of the rescaled grid (0-based slices).

        Returns
        -------
        values : ndarray, float32
            NaN where flagged (weights: 0 there instead).
        flags : ndarray, uint8
            OR of the flags of the overlapped input pixels.
        """
        f = self.factor
        (h, w), (out_h, out_w) = self._image.shape, self.shape
        ys = slice(max(ys.start, 0), min(ys.stop, out_h))
        xs = slice(max(xs.start, 0), min(xs.stop, out_w))
        iy0, iy1 = _input_span(ys.start, ys.stop, f, h)
        ix0, ix1 = _input_span(xs.start, xs.stop, f, w)
        values, flags = self._image.read(slice(iy0, iy1), slice(ix0, ix1))
        first_y, last_y = _touched(ys.start, ys.stop, f, h)
        first_x, last_x = _touched(xs.start, xs.stop, f, w)
        out_flags = _or_along(_or_along(flags, first_y - iy0, last_y - iy0, 0),
                              first_x - ix0, last_x - ix0, 1)
        if self.weight:
            return self._resample_weight(values, ys, xs, (iy0, iy1, ix0, ix1), out_flags)
        bad = flags != 0
        # A fill near the local level keeps the spline from ringing around flagged pixels.
        fill = float(np.median(values[~bad])) if (~bad).any() else 0.0
        data = np.where(bad, fill, values).astype(np.float64)
        my = _weights(ys.start, ys.stop, f, iy0, iy1, order=3)
        mx = _weights(xs.start, xs.stop, f, ix0, ix1, order=3)
        out = (my @ data @ mx.T) / (f * f)
        out = out.astype(np.float32)
        out[out_flags != 0] = np.nan
        return out, out_flags

    def _resample_weight(self, values, ys, xs, span, out_flags):
        f = self.factor
        iy0, iy1, ix0, ix1 = span
        bad = ~(values > 0)
        data = np.where(bad, 0.0, values).astype(np.float64)
        my = _weights(ys.start, ys.stop, f, iy0, iy1, order=1)
        mx = _weights(xs.start, xs.stop, f, ix0, ix1, order=1)
        # Output flux = input flux / F**2 (upsampling) or the sum of 1/F**2 input
        # pixels (downsampling): the variance scales by 1/F**4 or 1/F**2. Correlations
        # the interpolation brings are not counted.
        scale = f ** 4 if f >= 1 else f ** 2
        out = (my @ data @ mx.T) * scale
        first_y, last_y = _touched(ys.start, ys.stop, f, self._image.shape[0])
        first_x, last_x = _touched(xs.start, xs.stop, f, self._image.shape[1])
        touched_bad = _or_along(_or_along(bad.astype(np.uint8), first_y - iy0, last_y - iy0, 0),
                                first_x - ix0, last_x - ix0, 1)
        out[touched_bad != 0] = 0.0
        return out.astype(np.float32), out_flags
