"""A band's AB zero point from what its FITS header states.

The catalog's magnitudes are ``zp - 2.5 log10(flux)`` with ``flux`` in the
image's own unit, so ``zp`` is the AB magnitude of one unit of pixel value.
Headers state it in one of these ways, taken in this order:

1. ``MAGZERO``: the zero point itself (the simulator's files, many survey
   coadds);
2. ``PHOTFLAM`` and ``PHOTPLAM`` with a count-rate ``BUNIT`` (or none): the
   HST/STScI calibration, ``zp = -2.5 log10(PHOTFLAM) - 5 log10(PHOTPLAM) -
   2.408`` (the STScI AB formula; PHOTFLAM in erg/cm²/s/Å per unit, PHOTPLAM
   in Å);
3. a ``BUNIT`` that is a spectral flux density, ``zp = -2.5 log10(1 unit /
   3631 Jy)``: ``nanomaggy`` (SDSS, DECaLS: 22.5), ``Jy``, ``uJy`` (23.9),
   ``nJy`` (31.4), or a surface brightness (``MJy/sr``, JWST) with
   ``PIXAR_SR``, the pixel's solid angle.

Without any of them the zero point is unknown and the magnitudes are NaN.
Resampling at ingest (``--rescale``) conserves each pixel's flux, so the
zero point of the input holds for the resampled pixels too (for a surface
brightness: the input's ``PIXAR_SR`` times the input's pixel values still
gives the flux of the resampled pixels, whose values are scaled by the
area ratio).
"""

import math

#: AB magnitude zero point flux density (Jy).
AB_ZERO_JY = 3631.0
#: The STScI AB formula's constant: ``-2.5 log10(PHOTFLAM) - 5 log10(PHOTPLAM) + this``.
STSCI_AB_OFFSET = -2.408


def ab_zeropoint(header):
    """The AB zero point of an image with ``header``, and where it came from.

    Parameters
    ----------
    header : mapping
        The band's FITS header (``astropy.io.fits.Header`` or a dict).

    Returns
    -------
    zeropoint : float or None
    source : str or None
        ``"MAGZERO"``, ``"PHOTFLAM/PHOTPLAM"``, ``"BUNIT <unit>"`` or
        ``"BUNIT <unit> x PIXAR_SR"``; None with no zero point.
    """
    magzero = _positive_or_finite(header.get("MAGZERO"), positive=False)
    if magzero is not None:
        return magzero, "MAGZERO"
    bunit = header.get("BUNIT")
    unit = _unit(bunit)
    photflam = _positive_or_finite(header.get("PHOTFLAM"))
    photplam = _positive_or_finite(header.get("PHOTPLAM"))
    if photflam is not None and photplam is not None and (not _stated(bunit)
                                                          or _is_rate(bunit)):
        return (-2.5 * math.log10(photflam) - 5.0 * math.log10(photplam) + STSCI_AB_OFFSET,
                "PHOTFLAM/PHOTPLAM")
    if unit is None:
        return None, None
    jansky = _in_jansky(unit)
    if jansky is not None:
        return -2.5 * math.log10(jansky / AB_ZERO_JY), f"BUNIT {header.get('BUNIT')}".strip()
    pixar = _positive_or_finite(header.get("PIXAR_SR"))
    per_sr = _in_jansky(unit, per_steradian=True)
    if per_sr is not None and pixar is not None:
        return (-2.5 * math.log10(per_sr * pixar / AB_ZERO_JY),
                f"BUNIT {header.get('BUNIT')} x PIXAR_SR".strip())
    return None, None


def _positive_or_finite(value, positive=True):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or (positive and value <= 0):
        return None
    return value


#: Spellings of ``BUNIT`` seen in survey headers that astropy does not read as they are
#: (SDSS's plural), matched without case.
UNIT_SPELLINGS = {"nanomaggies": "nanomaggy", "maggies": "maggy"}
#: Count rates as headers spell them (``ELECTRONS/S`` of HST drizzled images; astropy
#: would read that ``S`` as siemens), matched without case or spaces.
RATE_PATTERN = r"(electrons?|e-|counts?|cts?|adu|dn)(/s|/sec|s-1|s\*\*-1|s\^-1)"


def _stated(text):
    return text is not None and bool(str(text).strip())


def _is_rate(text):
    """``BUNIT`` text that is a count rate (electrons or counts per second)."""
    import re

    return re.fullmatch(RATE_PATTERN, str(text).strip().lower().replace(" ", "")) is not None


def _unit(text):
    """``BUNIT`` as an astropy unit, or None (absent, or not a unit astropy reads)."""
    import re
    import warnings

    import astropy.units as u

    if not _stated(text):
        return None
    text = str(text).strip()
    respelled = re.sub("|".join(UNIT_SPELLINGS), lambda m: UNIT_SPELLINGS[m.group(0).lower()],
                       text, flags=re.IGNORECASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        for candidate in dict.fromkeys((text, respelled)):
            for fmt in ("generic", "fits"):
                try:
                    unit = u.Unit(candidate, format=fmt)
                except ValueError:
                    continue
                if not isinstance(unit, u.UnrecognizedUnit):
                    return unit
    return None


def _in_jansky(unit, per_steradian=False):
    """One ``unit`` in Jy (or Jy/sr), or None where it is not a flux density (per sr).

    Maggies (SDSS) are AB-referenced: one maggy is 3631 Jy.
    """
    import astropy.units as u

    target = u.Jy / u.sr if per_steradian else u.Jy
    maggies = u.mgy / u.sr if per_steradian else u.mgy
    if unit.is_equivalent(target):
        value = (1 * unit).to_value(target)
    elif unit.is_equivalent(maggies):
        value = (1 * unit).to_value(maggies) * AB_ZERO_JY
    else:
        return None
    return value if math.isfinite(value) and value > 0 else None
