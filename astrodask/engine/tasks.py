"""The task that Dask runs: one batch of tiles on one worker."""

import os
import time

from distributed import get_worker

from .results import Results
from .runners import process_tiles


class MissingPluginError(RuntimeError):
    """The worker holds no models for this run (its plugin was removed or never set up)."""


def process_batch(batch, mosaic_path, results_path, plugin_name):
    """Run the models of one run on ``batch`` (list of ``(iy, ix)``) and write the outputs.

    Only indices and paths travel through the scheduler; pixels are read from
    and written to the stores by the worker itself. ``plugin_name`` names the
    :class:`~astrodask.engine.plugin.ModelPlugin` of the run this task belongs
    to: other runs on the same cluster have their own.
    """
    plugin = get_worker().plugins.get(plugin_name)
    if plugin is None or plugin.runners is None:
        raise MissingPluginError(f"this worker has no models for run plugin {plugin_name} "
                                 "(the run ended, or the worker lost it)")
    start = time.perf_counter()
    summary = process_tiles(plugin.runners, plugin.mosaic(mosaic_path),
                            Results(results_path), batch)
    summary.update(seconds=time.perf_counter() - start, pid=os.getpid(), gpu=plugin.gpu_id)
    return summary
