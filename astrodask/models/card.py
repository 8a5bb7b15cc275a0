"""Model cards: the JSON file that sits beside every weight file.

A card says what a model expects and what it reached: bands, pixel scale,
input normalisation, classes, training data and metrics. The engine refuses a
model whose card's bands do not match the mosaic's bands.

``model.keras`` has its card at ``model.card.json``.
"""

import json
from pathlib import Path

from ..errors import InputError
from ..storage import put_json

WEIGHTS_DIR = Path(__file__).parent / "weights"

REQUIRED_FIELDS = ("name", "architecture", "bands", "pixel_scale_arcsec",
                   "normalisation", "classes")


def card_path(model_path):
    """Return the path of the card that belongs to ``model_path``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".keras") + ".card.json")


def write_model_card(model_path, card):
    """Write ``card`` (a dict) beside ``model_path``, atomically.

    Parameters
    ----------
    model_path : str or Path
        The ``.keras`` file the card describes.
    card : dict
        Must hold at least the keys in ``REQUIRED_FIELDS``.

    Returns
    -------
    Path
        The card's path.
    """
    missing = [key for key in REQUIRED_FIELDS if key not in card]
    if missing:
        raise ValueError(f"model card lacks {', '.join(missing)}")
    path = card_path(model_path)
    put_json(path, card)
    return path


def read_model_card(model_path):
    """Read the card beside ``model_path``; a clear error if it is missing or bad."""
    path = card_path(model_path)
    try:
        card = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"model {model_path} has no model card (expected {path})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"model card {path} is not valid JSON: {exc.msg}") from None
    missing = [key for key in REQUIRED_FIELDS if key not in card]
    if missing:
        raise InputError(f"model card {path} lacks {', '.join(missing)}")
    return card


def resolve_model_path(name_or_path):
    """Map a shipped model name (``morpheus``) or a path to a ``.keras`` file."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        raise InputError(f"{candidate} is a folder; give a .keras file or a shipped model name")
    if candidate.suffix == ".keras":
        if not candidate.exists():
            raise InputError(f"model file {candidate} does not exist")
        return candidate
    shipped = WEIGHTS_DIR / f"{name_or_path}.keras"
    if shipped.exists():
        return shipped
    available = sorted(p.name.removesuffix(".keras") for p in WEIGHTS_DIR.glob("*.keras"))
    raise InputError(f"unknown model {name_or_path!r}; shipped models: "
                     f"{', '.join(available) or 'none'}; or give a path to a .keras file")


def model_card(name_or_path):
    """The model card of a shipped model or a ``.keras`` file.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped model's name (``"maskrcnn_decam"``) or a ``.keras`` path.

    Returns
    -------
    dict
        The card: bands, pixel scale, normalisation, classes, training data
        and metrics.

    Raises
    ------
    InputError
        If the model does not exist or its card is missing or incomplete.

    Examples
    --------
    >>> from astrodask import model_card
    >>> model_card("maskrcnn_decam")["bands"]
    ['g', 'r', 'z']
    """
    return read_model_card(resolve_model_path(name_or_path))
