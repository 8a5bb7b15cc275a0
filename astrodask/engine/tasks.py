"""The task that Dask runs: one batch of tiles on one worker."""

import os
import time

from distributed import get_worker

from .plugin import PLUGIN_NAME
from .results import Results
from .runners import process_tiles


def process_batch(batch, mosaic_path, results_path):
    """Run the worker's models on ``batch`` (list of ``(iy, ix)``) and write the outputs.

    Only indices and paths travel through the scheduler; pixels are read from
    and written to the stores by the worker itself.
    """
    plugin = get_worker().plugins[PLUGIN_NAME]
    start = time.perf_counter()
    summary = process_tiles(plugin.runners, plugin.mosaic(mosaic_path),
                            Results(results_path), batch)
    summary.update(seconds=time.perf_counter() - start, pid=os.getpid(), gpu=plugin.gpu_id)
    return summary
