"""Held-out evaluation of a Mask R-CNN (and the SEP baseline) on simulated fields."""

import time

import numpy as np

from ..evaluate import completeness, evaluation_report

#: First seed of held-out fields; training pools use seeds far below it.
TEST_SEED = 1_000_000

#: Bin edges of the completeness table, in the simulator's optimal S/N.
SNR_EDGES = (0.0, 7.0, 10.0, 15.0, 30.0, 100.0, np.inf)


def evaluate_on_simulations(model, n_fields=12, size=512, seed=TEST_SEED, preset="decam",
                            baseline=True, iou_types=("bbox", "mask"), settings=None, log=print,
                            conditions=None):
    """Simulate held-out fields, run the model (and SEP), and score both.

    Parameters
    ----------
    model : MaskRCNN or str or Path
        A model, a ``.keras`` path, a shipped model name or a training run
        directory (its latest checkpoint).
    n_fields, size : int
        Number and side (pixels) of the square test fields; each is run as one
        ``size`` x ``size`` block.
    seed : int
        Seed of the first field (then ``seed + 1``, ...); keep it away from
        the training seeds.
    baseline : bool
        Also run the SEP baseline on the same images.
    iou_types : tuple of {"bbox", "mask"}
        Overlap measures to report.
    settings : dict, optional
        Detection settings overriding the model's (see
        :func:`astrodask.models.maskrcnn.model.detect`), e.g. ``detection_flips``;
        ``detection_flips_min_area`` is 0 unless given here.
    conditions : Conditions or str, optional
        Observing conditions of the test fields
        (:class:`astrodask.simulation.conditions.Conditions`, or the name of
        one of :data:`~astrodask.simulation.conditions.HELD_OUT`); default the
        preset's own.

    Returns
    -------
    dict
        ``{"settings": ..., "maskrcnn": {iou_type: report}, "sep": {...},
        "seconds_per_field": {...}}`` with reports from
        :func:`astrodask.evaluate.evaluation_report`.
    """
    from ..errors import InputError
    from ..models.card import resolve_model_path
    from ..models.maskrcnn import detect, load_maskrcnn, normalise_bands

    if n_fields < 1 or size < 64:
        raise InputError(f"need at least one field of at least 64 px, got {n_fields} of {size}")
    from ..models.maskrcnn.normalise import band_statistics
    from ..simulation import simulate_field
    from ..simulation.conditions import apply_conditions
    from ..simulation.presets import get_preset
    from .maskrcnn_data import example_from_field

    if not hasattr(model, "config"):
        from pathlib import Path

        from .maskrcnn import STATE_FILE, load_checkpoint

        if (Path(model) / STATE_FILE).exists():
            model, _ = load_checkpoint(model)
        else:
            model = load_maskrcnn(resolve_model_path(model))
    # a block metric of the network: with flips they are fused on every field
    # (``detection_flips_min_area`` is the engine's choice of windows, for speed)
    settings = {"detection_flips_min_area": 0, **(settings or {})}
    config = model.config.replace(**settings)
    conditions = resolve_conditions(conditions)
    survey = get_preset(preset) if conditions is None else apply_conditions(preset, conditions)
    truths, model_dets, sep_dets, snrs = [], [], [], []
    seconds = {"maskrcnn": 0.0, "sep": 0.0}
    psf_r50 = psf_half_light_radius(survey) if baseline else None
    for i in range(n_fields):
        field = simulate_field(shape=(size, size), preset=preset, seed=seed + i,
                               conditions=conditions)
        example = example_from_field(field, scale=config.normalisation_scale)
        truths.append(example.truth())
        snr_of = dict(zip(np.asarray(field.truth["id"]).tolist(), np.asarray(field.truth["snr"])))
        snrs.append(np.array([snr_of[int(oid)] for oid in example.ids]))
        mean, std = band_statistics(field.images)
        image = normalise_bands(field.images, mean, std, config.normalisation_scale)
        start = time.perf_counter()
        model_dets.append(detect(model, image, **settings)[0])
        seconds["maskrcnn"] += time.perf_counter() - start
        if baseline:
            from ..baselines.sep_baseline import sep_detect

            start = time.perf_counter()
            sep_dets.append(sep_detect(field.images, psf_r50))
            seconds["sep"] += time.perf_counter() - start
        log(f"field {i + 1}/{n_fields}: {len(example.boxes)} true objects, "
            f"{len(model_dets[-1])} Mask R-CNN detections"
            + (f", {len(sep_dets[-1])} SEP detections" if baseline else ""))
    result = {
        "settings": {"n_fields": n_fields, "size": size, "seed": seed, "preset": preset,
                     "detection_nms_threshold": config.detection_nms_threshold,
                     "detection_min_confidence": config.detection_min_confidence,
                     "detection_flips": config.detection_flips,
                     "conditions": None if conditions is None else conditions.to_dict()},
        "seconds_per_field": {k: v / n_fields for k, v in seconds.items()},
        "truth_counts": {"star": int(sum((t.class_ids == 1).sum() for t in truths)),
                         "galaxy": int(sum((t.class_ids == 2).sum() for t in truths))},
        "maskrcnn": {t: evaluation_report(truths, model_dets, iou_type=t) for t in iou_types},
        "completeness_by_snr": {"maskrcnn": completeness(truths, model_dets, snrs, SNR_EDGES)},
    }
    if baseline:
        result["sep"] = {t: evaluation_report(truths, sep_dets, iou_type=t) for t in iou_types}
        result["completeness_by_snr"]["sep"] = completeness(truths, sep_dets, snrs, SNR_EDGES)
    return result


def resolve_conditions(conditions):
    """A :class:`~astrodask.simulation.conditions.Conditions` from itself, a dict, a
    :data:`~astrodask.simulation.conditions.HELD_OUT` name, or None."""
    from ..errors import InputError
    from ..simulation.conditions import HELD_OUT, Conditions

    if conditions is None or isinstance(conditions, Conditions):
        return conditions
    if isinstance(conditions, dict):
        return Conditions(**conditions)
    if conditions not in HELD_OUT:
        raise InputError(f"unknown conditions {conditions!r}; held-out settings: "
                         f"{', '.join(HELD_OUT)}")
    return HELD_OUT[conditions]


def psf_half_light_radius(preset):
    """Mean half-light radius (pixels) of a preset's PSFs (the SEP star rule's scale).

    The simulator's own PSFs: SEP is told the true PSF, which no real survey
    knows this well.
    """
    from ..simulation.optics import band_models
    from ..simulation.presets import get_preset

    preset = get_preset(preset)
    return float(np.mean([m.psf.calculateHLR() / preset.pixel_scale
                          for m in band_models(preset)]))


def metrics_table(result, iou_type="bbox"):
    """Markdown table of the headline metrics, Mask R-CNN and SEP side by side."""
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "precision_at_80_recall")
    lines = ["| method | class | " + " | ".join(names) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for method in ("maskrcnn", "sep"):
        if method not in result:
            continue
        metrics = result[method][iou_type]["metrics"]
        for cls in ("star", "galaxy", "combined"):
            values = " | ".join("n/a" if np.isnan(metrics[cls][n]) else f"{metrics[cls][n]:.3f}"
                                for n in names)
            lines.append(f"| {'Mask R-CNN' if method == 'maskrcnn' else 'SEP'} | {cls} | {values} |")
    return "\n".join(lines)


def completeness_table(result):
    """Markdown table of the fraction of truth objects found (box IoU >= 0.5) per S/N bin."""
    methods = [m for m in ("maskrcnn", "sep") if m in result["completeness_by_snr"]]
    names = {"maskrcnn": "Mask R-CNN", "sep": "SEP"}
    lines = ["| S/N | objects | " + " | ".join(f"{names[m]} found | {names[m]} right class"
                                                for m in methods) + " |",
             "| --- | --- | " + " | ".join("--- | ---" for _ in methods) + " |"]
    for i, row in enumerate(result["completeness_by_snr"]["maskrcnn"]):
        span = f"{row['low']:g}–{row['high']:g}" if row["high"] is not None else f"≥ {row['low']:g}"
        cells = []
        for m in methods:
            bin_ = result["completeness_by_snr"][m][i]
            cells += ["n/a" if np.isnan(bin_[k]) else f"{bin_[k]:.2f}"
                      for k in ("found", "found_right_class")]
        lines.append(f"| {span} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def card_metrics(result):
    """The part of an evaluation that goes into a model card (metrics, test set, SEP)."""
    out = {"test_set": {**result["settings"], **{"truth_counts": result["truth_counts"]},
                        "seconds_per_field": result["seconds_per_field"]},
           "completeness_by_snr": result["completeness_by_snr"]}
    for method in ("maskrcnn", "sep"):
        if method in result:
            out[method] = {iou_type: {"metrics": report["metrics"],
                                      "confusion_iou50": report["confusion_iou50"],
                                      "confusion_iou75": report["confusion_iou75"]}
                           for iou_type, report in result[method].items()}
    return out
