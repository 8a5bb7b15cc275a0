"""Per-band numbers given as text: ``"g=1.1,r=1.0"``, or one number for every band."""

import math

from .errors import InputError


def parse_band_values(text, option, example, unit="NUMBER", allow_all=False):
    """Parse ``"BAND=NUMBER,..."`` into ``{band: float}``.

    Parameters
    ----------
    text : str
        The text to parse.
    option : str
        The option's name, for error messages (e.g. ``"--psf-fwhm"``).
    example : str
        A valid value, shown in error messages.
    unit : str
        What the numbers are, in error messages (``BAND=ARCSEC``).
    allow_all : bool
        Also accept a single number, returned under the key ``"*"`` (every band).

    Returns
    -------
    dict
        Band name → float.

    Raises
    ------
    InputError
        Entries that are not ``BAND=NUMBER``, a band named twice, or a number
        that is not finite.
    """
    text = str(text).strip()
    if allow_all and "=" not in text:
        return {"*": _number(text, option, example, unit, text)}
    out = {}
    for entry in text.split(","):
        band, sep_, value = entry.partition("=")
        band = band.strip()
        if not sep_ or not band:
            raise InputError(f"{option} takes BAND={unit},... (e.g. {example}), "
                             f"got {entry.strip()!r}")
        if band in out:
            raise InputError(f"{option} names band {band} twice")
        out[band] = _number(value, option, example, unit, entry.strip())
    return out


def _number(value, option, example, unit, entry):
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise InputError(f"{option} takes BAND={unit},... (e.g. {example}), got {entry!r}")
    return number
