"""``astrodask.run``: every tile of a mosaic through the models, on Dask.

One task per batch of tiles; workers read tiles from the mosaic store and
write their own outputs, so only tile indices and small summaries pass through
the scheduler. Finished tiles carry done markers: re-running resumes.
"""

from collections import Counter
from dataclasses import dataclass, field, replace
import datetime
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .. import storage
from .._version import __version__
from ..config import RunConfig, dump_config, load_config
from ..errors import AstrodaskError, InputError, first_line
from ..mosaic import open_mosaic
from ..sky import band_levels
from .results import Results, run_key
from .specs import detection_settings, resolve_models


class EngineError(AstrodaskError):
    """A task failed on the cluster or a worker kept dying."""


@dataclass
class RunSummary:
    """What a run did.

    Attributes
    ----------
    results : str
        The results folder (local path or URL).
    tiles_total, tiles_run, tiles_skipped : int
        Windows in the mosaic, computed now, and found done.
    seconds : float
        Wall time of the compute phase.
    cluster : str
        Description of where it ran.
    dashboard : str or None
        Dask dashboard address.
    models : list of str
        Names of the models that ran.
    workers : collections.Counter
        Batches processed per worker process id.
    """

    results: str
    tiles_total: int
    tiles_run: int
    tiles_skipped: int
    seconds: float
    cluster: str
    dashboard: str = None
    models: list = field(default_factory=list)
    workers: Counter = field(default_factory=Counter)

    @property
    def tiles_per_second(self):
        """Tiles computed per second of the compute phase."""
        return self.tiles_run / self.seconds if self.seconds > 0 else 0.0

    def text(self):
        """Human-readable lines about the run (what ``astrodask run`` prints).

        Returns
        -------
        str
            One or two lines, without a final newline.
        """
        lines = [f"results in {self.results}: {self.tiles_run} tiles computed, "
                 f"{self.tiles_skipped} already done, of {self.tiles_total} "
                 f"({', '.join(self.models)})"]
        if self.tiles_run:
            lines.append(f"{self.seconds:.1f} s on {self.cluster}: "
                         f"{self.tiles_per_second:.2f} tiles/s")
        return "\n".join(lines)


def resolve_config(config=None, **overrides):
    """A validated :class:`RunConfig` from a config object, dict or YAML path plus overrides.

    Parameters
    ----------
    config : RunConfig, dict, str or Path, optional
        Starting point: a configuration, its dict form or a YAML file
        (default: :class:`RunConfig` defaults).
    **overrides
        :class:`RunConfig` fields. ``None`` values are ignored, so options
        that were not given leave the file's values alone. ``unet`` and
        ``maskrcnn`` take a dict of their options, merged into the file's
        (again without the ``None`` values). Text forms are accepted where
        the command line has them (``models="unet,maskrcnn"``,
        ``band_map="H=f160w"``, ``gpus="0,1"``).

    Returns
    -------
    RunConfig

    Raises
    ------
    InputError
        On an unknown option or a bad value.

    Examples
    --------
    >>> from astrodask import resolve_config
    >>> config = resolve_config(models="unet", band_map="H=f160w,J=f125w",
    ...                         unet={"mode": "faithful", "stride": None})
    >>> config.models, config.band_map, config.unet.mode, config.unet.stride
    (['unet'], {'H': 'f160w', 'J': 'f125w'}, 'faithful', 4)
    """
    if config is None:
        config = RunConfig()
    elif isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    updates = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(updates) - set(RunConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown run option(s): {', '.join(sorted(unknown))}")
    for name in ("unet", "maskrcnn"):
        if isinstance(updates.get(name), dict):
            updates[name] = _merged(getattr(config, name), updates[name], name)
    return replace(config, **updates).validate()


def _merged(options, changes, name):
    """``options`` (a dataclass) with the non-``None`` entries of ``changes``."""
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(type(options).__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown {name} option(s): {', '.join(sorted(unknown))}")
    return replace(options, **changes)


def prepare_spec(spec, mosaic, config, with_unet=False):
    """Give a Mask R-CNN spec its input statistics and detection settings.

    The statistics are the mosaic's sigma-clipped band statistics (eq. 1),
    measured at ingest on a fixed pixel lattice over the whole mosaic, so
    every tile is standardised as the whole mosaic would be. The detection
    settings are the card's, with the run's overrides; so is the folding of
    irregular fragments (card ``fold_irregular_fragments``, run option
    ``fold_fragments``), which needs a U-Net in the run (``with_unet``), and
    the centre network (card ``centres``, run option ``centres``).
    """
    if spec.kind != "maskrcnn":
        return spec
    mean, std = band_levels(mosaic, [mosaic.bands[i] for i in spec.band_indices])
    use, _, reference = _star_galaxy_choice(mosaic, spec, config)
    fold = config.maskrcnn.fold_fragments
    if fold is None:
        fold = spec.card.get("fold_irregular_fragments")
    centres = spec.card.get("centres")
    if config.maskrcnn.centres is True and not centres:
        raise InputError(f"model {spec.name} has no centre network in its card")
    if centres and config.maskrcnn.centres is not False:
        centres = {**centres, **{name: _centre_setting(spec, config, name)
                                 for name in ("deblend_contrast", "reclaim_sigma")}}
    else:
        centres = None
    return replace(spec, stats=(tuple(map(float, mean)), tuple(map(float, std))),
                   settings=detection_settings(spec.card, config.maskrcnn.overrides()),
                   star_galaxy=reference if use else None,
                   fold_fragments=float(fold) if fold and with_unet else None,
                   centres=centres,
                   deblend=None if centres else _instance_deblending(spec, config))


def _instance_deblending(spec, config):
    """The card's ``deblend_instances`` with the run's ``deblend_snr``, or None when off.

    The run option wins (0: off); the card's section holds ``min_snr`` and
    optionally ``min_contrast`` and ``min_separation``; instances under the
    card's ``catalog_min_score`` (``min_score``) are left alone.
    """
    section = dict(spec.card.get("deblend_instances") or {})
    if config.maskrcnn.deblend_snr is not None:
        section["min_snr"] = float(config.maskrcnn.deblend_snr)
    if not section.get("min_snr"):
        return None
    if spec.card.get("catalog_min_score") is not None:
        section.setdefault("min_score", float(spec.card["catalog_min_score"]))
    return section


def _centre_setting(spec, config, name):
    """A centre-network setting of the run (``deblend_contrast``, ``reclaim_sigma``), or None.

    The run option wins (0: off); else the card's ``centres.<name>``.
    """
    option = getattr(config.maskrcnn, name)
    if option is not None:
        return float(option) or None
    return spec.card["centres"].get(name) or None


def _star_galaxy_choice(mosaic, spec, config):
    """(use, why, reference): whether the card's PSF-aware model sets the classes."""
    from ..star_galaxy import missing_psf, psf_reference, use_psf_classes

    reference = psf_reference(mosaic.psf, mosaic.bands)
    use, why = use_psf_classes(config.maskrcnn.psf_classes, spec.card,
                               reference["fwhm_px"] if reference else None,
                               missing_psf(mosaic.psf, mosaic.bands))
    return use, why, reference


def _check_window_lattice(config, grid, specs):
    """Faithful mode: windows of neighbouring tiles must fall on one lattice.

    Sliding windows start at the tile's corner, so the stride must divide the
    tile origins (multiples of the core, minus the halo); otherwise the
    outputs of two tiles disagree where they meet.
    """
    stride = config.unet.stride
    if config.unet.mode != "faithful" or not any(s.kind == "unet" for s in specs):
        return
    if grid.core % stride or grid.halo % stride:
        raise InputError(f"faithful mode with stride {stride} needs the tile core "
                         f"({grid.core}) and halo ({grid.halo}) to be multiples of it; "
                         "choose a stride that divides both")


def _check_psf(mosaic, specs):
    """Warn when the mosaic's PSF lies outside the FWHM range a model was trained on.

    A model card's ``trained_psf_fwhm_px`` (``[lo, hi]``, over all bands) is
    compared with the store's PSF (measured or given at ingest) in the bands
    that feed the model, with :data:`astrodask.psf.FWHM_TOLERANCE` of slack
    (a measurement 2% under the range of the very simulation a model was
    trained on is not a reason to resample). Stores without a PSF and cards
    without the key pass silently. One warning line per model, naming the
    ``--rescale`` factor that brings the median FWHM to the middle of the
    range (for a store already resampled, the factor from the original grid).
    """
    import statistics
    import warnings

    from ..psf import FWHM_TOLERANCE, rescale_for_fwhm

    psf = mosaic.psf
    if not psf:
        return
    for spec in specs:
        trained = spec.card.get("trained_psf_fwhm_px")
        if not trained:
            continue
        lo, hi = (float(v) for v in trained)
        fwhms = {b: psf[b].fwhm_px for b in (mosaic.bands[i] for i in spec.band_indices)
                 if b in psf and psf[b].fwhm_px is not None}
        outside = {b: v for b, v in fwhms.items()
                   if not lo / (1 + FWHM_TOLERANCE) <= v <= hi * (1 + FWHM_TOLERANCE)}
        if not outside:
            continue
        middle = (lo + hi) / 2
        factor = rescale_for_fwhm(statistics.median(fwhms.values()), middle)
        factor *= mosaic.rescale_factor
        measured = ", ".join(f"{b} {v:.2f}" for b, v in outside.items())
        source = "original FITS " if mosaic.rescale_factor != 1.0 else ""
        what = ("its detections may be unreliable (star/galaxy comes from the "
                "concentration against the PSF instead)" if spec.star_galaxy
                else "its detections and classes may be unreliable")
        warnings.warn(f"{spec.name} was trained on PSF FWHM {lo:g}-{hi:g} px but the mosaic's "
                      f"is {measured} px: {what}; "
                      f"re-ingest the {source}bands with `astrodask ingest --rescale "
                      f"{factor:.3g}` to bring the FWHM to about {middle:.1f} px", stacklevel=3)


def _star_galaxy_record(mosaic, specs, config):
    """How each Mask R-CNN of the run tells stars from galaxies (for run.json).

    Warns in one line when the card's PSF-aware model should classify (the
    option is on, or the mosaic's FWHM lies outside the network's training)
    but cannot, for want of a measured PSF concentration.
    """
    import statistics
    import warnings

    from ..star_galaxy import use_psf_classes

    record = {}
    for spec in specs:
        if spec.kind != "maskrcnn":
            continue
        use, why, reference = _star_galaxy_choice(mosaic, spec, config)
        record[spec.name] = {"psf_aware": use, "why": why, **(reference or {})}
        if use or reference or not spec.card.get("star_galaxy") \
                or config.maskrcnn.psf_classes == "off":
            continue
        # would the card's model classify, had the store a measured concentration?
        given = [p.fwhm_px for p in (mosaic.psf or {}).values() if p.fwhm_px is not None]
        fwhm = statistics.median(given) if given else None
        if fwhm is None or use_psf_classes(config.maskrcnn.psf_classes, spec.card, fwhm)[0]:
            warnings.warn(f"{spec.name}: star/galaxy from the network alone: {why}",
                          stacklevel=3)
    return record


def default_batch_size(specs):
    """Tiles per task when none is configured: 4 with a Mask R-CNN, else 1."""
    return 4 if any(s.kind == "maskrcnn" for s in specs) else 1


def batches_of(indices, size):
    """Fixed partition of the tile list; the same for every run of one configuration."""
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def run(mosaic, out, *, config=None, client=None, progress=None, on_start=None, **overrides):
    """Run the configured models over every tile of ``mosaic``.

    Parameters
    ----------
    mosaic : str, Path or Mosaic
        A store written by :func:`astrodask.ingest`.
    out : str or Path
        Results folder (created; re-used to resume).
    config : RunConfig, dict or path to YAML, optional
        Run options; keyword ``overrides`` (e.g. ``models=["unet"]``,
        ``batch_size=8``, ``restart=True``) take precedence.
    client : distributed.Client, optional
        Use this client (e.g. from a notebook) instead of starting a cluster.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after each finished batch.
    on_start : callable, optional
        ``on_start(summary)`` once the cluster is up (``summary.cluster`` and
        ``summary.dashboard`` are set), before the first task runs.

    Returns
    -------
    RunSummary

    Examples
    --------
    The U-Net over the store of the example of :func:`astrodask.ingest`, on
    an in-process Dask cluster (without ``client``, a local cluster of one
    worker process per core is started and closed):

    >>> import astrodask
    >>> from distributed import Client
    >>> client = Client(processes=False, n_workers=1, dashboard_address=":0")
    >>> summary = astrodask.run("mosaic.zarr", "results", models="unet", client=client)
    >>> summary.tiles_run, summary.models
    (4, ['morpheus_decam'])
    >>> client.close()

    In a script, start clusters under ``if __name__ == "__main__":``.
    """
    config = resolve_config(config, **overrides)
    if not hasattr(mosaic, "read_tile"):
        mosaic = open_mosaic(mosaic)
    specs = resolve_models(config.models, mosaic.bands, config.band_map)
    with_unet = any(s.kind == "unet" for s in specs)
    specs = [prepare_spec(s, mosaic, config, with_unet) for s in specs]
    _check_window_lattice(config, mosaic.tile_grid, specs)
    _check_psf(mosaic, specs)
    if config.batch_size is None:
        config = replace(config, batch_size=default_batch_size(specs))
    results = Results(out)
    if config.report == "":
        config = replace(config, report=results.file("report.html"))
    record = {
        "mosaic": mosaic.path,
        "mosaic_inputs": mosaic.attrs["inputs"],
        "mosaic_digest": mosaic.content_digest,
        "tile_grid": mosaic.tile_grid.to_dict(),
        "psf": mosaic.attrs.get("psf"),
        "rescale": mosaic.attrs.get("rescale"),
        "models": [{"kind": s.kind, "name": s.name, "path": s.path, "card": s.card,
                    "band_indices": list(s.band_indices), "settings": s.settings,
                    "fold_fragments": s.fold_fragments, "centres": s.centres,
                    "deblend_instances": s.deblend}
                   for s in specs],
        "config": config.to_dict(),
        "star_galaxy": _star_galaxy_record(mosaic, specs, config),
        "astrodask_version": __version__,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record = results.prepare(run_key(mosaic, specs, config), record, dump_config(config),
                             config.restart)
    unet = [s for s in specs if s.kind == "unet"]
    if unet:
        results.create_unet_arrays(mosaic.tile_grid, unet[0].card["classes"],
                                   config.unet.outputs, {"model": unet[0].name})

    all_batches = batches_of(mosaic.tile_grid.indices(), config.batch_size)
    finished = results.done_tiles()
    todo = [b for b in all_batches if not all(tile in finished for tile in b)]
    total = len(mosaic.tile_grid)
    skipped = total - sum(len(b) for b in todo)
    summary = RunSummary(results=results.location, tiles_total=total, tiles_run=0,
                         tiles_skipped=skipped, seconds=0.0, cluster="(nothing to run)",
                         models=[s.name for s in specs])
    if todo:
        _compute(summary, todo, mosaic, results, specs, config, client, progress, on_start)
    results.finish(dict(record, finished=datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds")))
    return summary


def _compute(summary, todo, mosaic, results, specs, config, client, progress, on_start):
    from .cluster import SchedulingWatch, completed, connect
    from .plugin import ModelPlugin, plugin_name
    from .tasks import process_batch

    cluster = nullcontext((client, "given client")) if client is not None else connect(config)
    with cluster as (client, description):
        summary.cluster = description
        summary.dashboard = getattr(client, "dashboard_link", None)
        if on_start is not None:
            on_start(summary)
        on_gpus = config.gpus is not None or config.gpu_workers
        # Resources go with each submit: annotations made at graph build are lost (dask#7036).
        extra = {"resources": {"GPU": 1}} if on_gpus else {}
        watch = SchedulingWatch(client, extra.get("resources"),
                                option="--gpus" if config.gpus is not None else "--gpu-workers")
        if watch.wait_at_start():
            raise EngineError(watch.reason)
        # One token names this run's plugin and task keys: runs sharing a cluster
        # each keep their own models and statistics.
        token = uuid.uuid4().hex[:8]
        plugin = ModelPlugin(specs, config, grid=mosaic.tile_grid if config.warm_up else None,
                             threads=config.threads_per_worker, gpu=on_gpus,
                             name=plugin_name(token))
        try:
            _register(client, plugin)
            report_tmp = _report_tmp(config.report) if config.report else None
            report = _report_context(report_tmp, client)
            done = summary.tiles_skipped
            if progress is not None:
                progress(done, summary.tiles_total)
            start = time.perf_counter()
            with report:
                futures = {client.submit(process_batch, batch, mosaic.path,
                                         results.location, plugin.name,
                                         key=f"astrodask-{token}-{i}",
                                         pure=False, retries=1, **extra): batch
                           for i, batch in enumerate(todo)}
                watch.start(lambda: client.cancel(list(futures)))
                try:
                    for future in completed(client, futures):
                        if watch.reason:
                            raise EngineError(watch.reason)
                        batch_summary = _result(future, futures[future])
                        watch.progressed()
                        summary.tiles_run += batch_summary["tiles"]
                        summary.workers[batch_summary["pid"]] += 1
                        done += batch_summary["tiles"]
                        if progress is not None:
                            progress(done, summary.tiles_total)
                except BaseException:
                    client.cancel(list(futures))
                    raise
                finally:
                    watch.stop()
            summary.seconds = time.perf_counter() - start
            if config.report:
                _finish_report(config.report, report_tmp)
        finally:
            _unregister(client, plugin.name)


def _register(client, plugin):
    """Load the run's models on every worker (and on workers that join later)."""
    try:
        client.register_plugin(plugin, name=plugin.name)
    except Exception as exc:
        raise EngineError(f"could not load the models on the workers: {type(exc).__name__}: "
                          f"{first_line(exc)}") from None


def _unregister(client, name):
    """Remove the run's plugin: the workers drop its models (also after errors and Ctrl-C)."""
    try:
        client.unregister_worker_plugin(name)
    except Exception:  # nothing registered, or the scheduler is gone: nothing to undo
        pass


def _result(future, batch):
    from .cluster import task_result

    return task_result(future, EngineError,
                       f"workers kept dying on tiles {batch} (out of memory?); finished tiles "
                       "are kept: fix the cause and run again to resume", f"tiles {batch}")


@contextmanager
def _report_context(tmp, client):
    """Dask's performance report into ``tmp`` (nothing when None), of ``client``'s cluster.

    ``performance_report`` reports on the *current* client; a notebook's own
    client may be current while the run has connected its own.
    """
    if tmp is None:
        yield
        return
    from distributed import performance_report

    with client.as_current(), performance_report(filename=str(tmp)):
        yield


def _report_tmp(location):
    import tempfile

    name = storage.normalise(location).rsplit("/", 1)[-1]
    return Path(tempfile.gettempdir()) / f".astrodask-{uuid.uuid4().hex[:8]}-{name}"


def _finish_report(location, tmp):
    try:
        storage.put_bytes(location, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)

