"""The worker plugin that loads the models once per worker.

Registered with ``client.register_plugin``, it also runs on workers that join
later (or are restarted after a crash). Before the first framework import it
sets the thread pools to the worker's share of the cores and, on GPU workers,
restricts the process to its own GPU: dask-cuda gives each worker a rotated
``CUDA_VISIBLE_DEVICES`` whose first entry is its GPU but leaves all visible.

A second plugin, for the clusters astrodask starts itself, stops the workers'
logs of failed tasks, which the caller reports in one line
(:class:`TaskFailuresReportedByCaller`).
"""

import logging
import os

from distributed import WorkerPlugin

from ..framework import configure_framework

#: Prefix of the plugin names; each run adds its own token (:func:`plugin_name`).
PLUGIN_PREFIX = "astrodask-models"

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS")


def plugin_name(token):
    """The plugin name of the run identified by ``token``.

    Each run registers its models under its own name, so two runs sharing a
    cluster never replace each other's models or band statistics, and each
    run's tasks look up their own.
    """
    return f"{PLUGIN_PREFIX}-{token}"


def worker_environment(threads):
    """Environment for worker processes: pools sized to ``threads``, quiet TensorFlow."""
    env = {name: str(threads) for name in THREAD_VARIABLES}
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


#: What a worker logs about a task that failed, by logger: the task with its exception and
#: traceback, and (after a failed chunk read) the reads of the same call that Zarr's event
#: loop abandons.
TASK_FAILURE_RECORDS = {"distributed.worker": "Compute Failed",
                        "asyncio": "Task was destroyed but it is pending"}


class _NotReportedThere(logging.Filter):
    """Drops the records of one logger that start with ``prefix``."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


class TaskFailuresReportedByCaller(WorkerPlugin):
    """Workers stop logging failed tasks: astrodask reports each one itself, in one line.

    For clusters started by astrodask, whose tasks are all its own: without it
    a failed task printed its whole traceback on the user's terminal (twice,
    with its retry) before the one-line error. Installed again on workers
    that restart.
    """

    name = "astrodask-task-failures"

    def __init__(self):
        self._filters = {name: _NotReportedThere(prefix)
                         for name, prefix in TASK_FAILURE_RECORDS.items()}

    def setup(self, worker):
        for name, record_filter in self._filters.items():
            logging.getLogger(name).addFilter(record_filter)

    def teardown(self, worker):
        for name, record_filter in self._filters.items():
            logging.getLogger(name).removeFilter(record_filter)


def restrict_to_own_gpu():
    """Keep only the first entry of ``CUDA_VISIBLE_DEVICES`` (this worker's GPU).

    Must run before TensorFlow or JAX initialise CUDA in this process.
    Returns the GPU id kept, or ``None`` when no GPU list is set.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if not visible or not visible[0]:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[0]
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return visible[0]


class ModelPlugin(WorkerPlugin):
    """Loads the run's models on each worker and keeps them for its tasks.

    Parameters
    ----------
    specs : list of ModelSpec
    config : RunConfig
    grid : TileGrid, optional
        The mosaic's windows: each model is warmed up on an empty window of
        the size it will see (``RunConfig.warm_up``); None: not warmed up.
    threads : int, optional
        Framework threads per worker; default the worker's task threads.
    gpu : bool
        Restrict the worker to its own GPU.
    name : str, optional
        The name it is registered under (:func:`plugin_name` of the run);
        default a fresh one.
    """

    def __init__(self, specs, config, grid=None, threads=None, gpu=False, name=None):
        if name is None:
            import uuid

            name = plugin_name(uuid.uuid4().hex[:8])
        self.name = name
        self.specs = specs
        self.config = config
        self.grid = grid
        self.threads = threads
        self.gpu = gpu
        self.runners = None
        self.gpu_id = None
        self._mosaics = {}

    def setup(self, worker):
        if self.gpu:
            self.gpu_id = restrict_to_own_gpu()
        threads = self.threads or worker.state.nthreads
        for name, value in worker_environment(threads).items():
            os.environ.setdefault(name, value)
        configure_framework(threads)
        from .runners import make_runner

        self.runners = [make_runner(spec, self.config) for spec in self.specs]
        if self.grid is not None:
            for runner in self.runners:
                runner.warm_up(self.grid, self.config.batch_size or 1)

    def teardown(self, worker):
        self.runners = None
        self._mosaics.clear()

    def mosaic(self, path):
        """The mosaic at ``path``, opened once per worker."""
        if path not in self._mosaics:
            from ..mosaic import open_mosaic

            self._mosaics[path] = open_mosaic(path)
        return self._mosaics[path]
