"""A Mask R-CNN evaluation as text, as a JSON file, and in the model's card."""

from ..models.card import read_model_card, resolve_model_path, write_model_card
from ..storage import put_json
from .maskrcnn_eval import card_metrics, completeness_table, metrics_table


def evaluation_tables(result, iou_types=None):
    """The headline metrics and the completeness of an evaluation as Markdown tables.

    Parameters
    ----------
    result : dict
        What :func:`astrodask.evaluate_maskrcnn` returns.
    iou_types : sequence of {"bbox", "mask"}, optional
        Overlap measures to show (default: every one evaluated).

    Returns
    -------
    str
        One table of AP, AP50, AP75, APs/m/l and precision at 80% recall per
        overlap measure (Mask R-CNN and SEP side by side), then the share of
        truth objects found per S/N bin.
    """
    iou_types = iou_types or list(result["maskrcnn"])
    parts = [f"IoU on {t}:\n{metrics_table(result, t)}" for t in iou_types]
    parts.append("Found (box IoU >= 0.5) by the simulator's S/N:\n" + completeness_table(result))
    return "\n\n".join(parts)


def write_evaluation(result, path):
    """Write an evaluation as JSON.

    Parameters
    ----------
    result : dict
        What :func:`astrodask.evaluate_maskrcnn` returns.
    path : str or Path
        Local path or fsspec URL.

    Returns
    -------
    str or Path
        ``path``.
    """
    put_json(path, result, indent=1, sort_keys=False, default=float)
    return path


def store_evaluation(model, result, flips=None):
    """Store an evaluation's metrics in a model's card.

    Parameters
    ----------
    model : str or Path
        Shipped model name or ``.keras`` path (not a training run folder).
    result : dict
        What :func:`astrodask.evaluate_maskrcnn` returns for this model.
    flips : bool, optional
        The ``detection_flips`` override the evaluation was run with. The
        card's ``evaluation`` entry is of the model's own settings; an
        evaluation with another setting goes beside it, as
        ``evaluation_with_flips`` or ``evaluation_without_flips``.

    Returns
    -------
    Path
        The card written.

    Raises
    ------
    InputError
        If ``model`` is not a ``.keras`` file or shipped model with a card.
    """
    path = resolve_model_path(model)
    card = read_model_card(path)
    used = result["settings"]["detection_flips"]
    own = card.get("config", {}).get("detection_flips", False)
    key = ("evaluation" if flips is None or used == own
           else f"evaluation_{'with' if used else 'without'}_flips")
    card[key] = card_metrics(result)
    return write_model_card(path, card)
