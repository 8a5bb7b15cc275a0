"""Where the tasks run: an embedded local cluster, local GPUs, or an existing cluster.

dask-cuda is imported only here and only when GPUs are asked for: it cannot
even be imported on a machine without CUDA.
"""

from contextlib import contextmanager
import os
import warnings

from ..errors import DEBUG_ENV, DependencyError, InputError, first_line
from .plugin import TaskFailuresReportedByCaller, worker_environment

#: Dask's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` to every worker it
#: spawns. Any explicit value switches off glibc's adaptive mmap threshold, so
#: every large array a model call allocates becomes a fresh mmap and its page
#: faults: model calls ran 5-9% slower in such workers (BENCHMARKS.md, Engine).
#: Workers started here keep glibc's defaults, as a plain process has; a value
#: the user exported still wins (the child inherits it). The Docker images set
#: the same through ``deploy/docker/dask.yaml``.
SPAWN_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

#: Background chores of the clusters started here, made less frequent. With
#: Dask's defaults an idle 2-worker local cluster used 3% of a core per worker
#: and 5% in the client/scheduler process, 0.25% and 0.75% with these: CPU the
#: models get back on a small machine (BENCHMARKS.md, Engine).
QUIET_CONFIG = {
    "distributed.admin.tick.interval": "1s",             # event-loop watchdog (20 ms)
    "distributed.admin.system-monitor.interval": "5s",   # dashboard CPU/memory plots (0.5 s)
    "distributed.worker.memory.monitor-interval": "1s",  # nanny memory checks (0.1 s)
    "distributed.worker.profile.enabled": False,         # statistical profiler (10 ms)
}


def cluster_config(profile=False):
    """Dask settings for starting a local cluster; ``profile`` keeps the profiler on."""
    settings = {**SPAWN_CONFIG, **QUIET_CONFIG}
    if profile:
        settings.pop("distributed.worker.profile.enabled")
    return settings


def cpu_count():
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_cluster_size(n_workers=None, threads_per_worker=None):
    """Default local cluster: one single-threaded worker per core."""
    threads = threads_per_worker or 1
    workers = n_workers or max(1, cpu_count() // threads)
    return workers, threads


def gpu_count():
    """Number of NVIDIA GPUs NVML sees (0 without a GPU or driver; never raises)."""
    try:
        from distributed.diagnostics.nvml import device_get_count

        return int(device_get_count())
    except Exception:
        return 0


def _gpu_ids(gpus):
    available = gpu_count()
    if available == 0:
        raise InputError("--gpus was given but no NVIDIA GPU is visible on this machine")
    if gpus in ("all", True, [], ()):
        return list(range(available))
    ids = [int(g) for g in gpus]
    bad = [g for g in ids if not 0 <= g < available]
    if bad:
        raise InputError(f"GPU id(s) {bad} do not exist; this machine has {available} GPU(s)")
    return ids


@contextmanager
def connect(config):
    """Yield ``(client, description)`` for ``config``; close what was started.

    Parameters
    ----------
    config : RunConfig
        Uses ``scheduler``, ``scheduler_file``, ``gpus``, ``n_workers``,
        ``threads_per_worker`` and ``report`` (the profiler of a cluster
        started here runs only when a performance report is asked for).
    """
    import dask
    from distributed import Client

    if config.scheduler or config.scheduler_file:
        try:
            if config.scheduler:
                client = Client(config.scheduler, timeout="30s")
            else:
                client = Client(scheduler_file=config.scheduler_file, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            target = config.scheduler or config.scheduler_file
            raise InputError(f"cannot connect to the Dask scheduler at {target} "
                             f"({first_line(exc)})") from None
        try:
            yield client, f"existing cluster at {client.scheduler.address}"
        finally:
            client.close()
        return

    if config.gpus is not None:
        ids = _gpu_ids(config.gpus)
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise DependencyError(f"--gpus needs dask-cuda: pip install 'astrodask[gpu]' "
                                  f"({exc})") from None
        threads = config.threads_per_worker or 1
        with dask.config.set(cluster_config(profile=bool(config.report))):
            cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(map(str, ids)),
                                       threads_per_worker=threads, resources={"GPU": 1},
                                       dashboard_address=":0")
        description = f"dask-cuda LocalCUDACluster, {len(ids)} GPU worker(s) (GPUs {ids})"
    else:
        from distributed import LocalCluster

        workers, threads = local_cluster_size(config.n_workers, config.threads_per_worker)
        with dask.config.set(cluster_config(profile=bool(config.report))):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads,
                                   processes=True, dashboard_address=":0",
                                   env=worker_environment(threads))
        description = f"local cluster, {workers} worker(s) x {threads} thread(s)"
    client = Client(cluster)
    try:
        if not os.environ.get(DEBUG_ENV):
            client.register_plugin(TaskFailuresReportedByCaller())
        yield client, description
    finally:
        _quiet_workers(client)
        client.close()
        _close_quietly(cluster)


#: Loggers of a worker process that report the cluster's own shutdown as errors: a
#: worker whose heartbeat reaches a scheduler that has already closed logs "Failed to
#: communicate with scheduler during heartbeat" with a traceback (seen about once in
#: twenty local clusters on 2 busy cores); after a failed chunk read, the reads Zarr's
#: event loop abandoned end with "exception was never retrieved" as the process exits.
WORKER_LOGGERS = ("distributed.worker", "distributed.core", "distributed.comm", "asyncio")


def _silence_worker_logs():
    """In a worker: log only critical messages from here on (its cluster is closing).

    Nor does it print the warnings and "Exception ignored" reports of objects
    destroyed as the process exits (Zarr's abandoned chunk reads after a
    failed one: "coroutine ... was never awaited").
    """
    import logging
    import sys

    for name in WORKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    sys.unraisablehook = _ignore_unraisable


def _ignore_unraisable(unraisable):
    pass


def _quiet_workers(client):
    """Silence the workers of a cluster started here before it closes (never raises).

    Its outputs are written and marked by now; what a worker logs while the
    scheduler goes away is noise on the user's terminal, not a failure.
    """
    try:
        client.run(_silence_worker_logs)
    except Exception:  # a dead or closing worker: nothing left to silence
        pass


def _close_quietly(cluster):
    """Close a local cluster without the nanny's warnings about slow-exiting workers.

    TensorFlow's thread pools can keep a worker process alive past the nanny's
    grace period at shutdown; the nanny then kills it, which is harmless here
    (all outputs are written and marked before the cluster closes). On a
    machine loaded by other work the close itself can time out; that is
    harmless too, so it is a warning, never the run's failure.
    """
    import logging

    logger = logging.getLogger("distributed.nanny")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        cluster.close()
    except TimeoutError:  # asyncio's TimeoutError is this one since Python 3.11
        warnings.warn("the local Dask cluster did not shut down in time; its worker processes "
                      "are left to exit on their own (outputs are complete)", stacklevel=2)
    finally:
        logger.setLevel(level)


#: Seconds a run waits for a worker that can take its tasks (see :class:`SchedulingWatch`).
WORKER_WAIT_ENV = "ASTRODASK_WORKER_WAIT"
DEFAULT_WORKER_WAIT = 45.0


def worker_wait():
    """Seconds to wait for a suitable worker: ``$ASTRODASK_WORKER_WAIT`` or 45."""
    text = os.environ.get(WORKER_WAIT_ENV, "")
    try:
        value = float(text) if text.strip() else DEFAULT_WORKER_WAIT
    except ValueError:
        raise InputError(f"{WORKER_WAIT_ENV} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise InputError(f"{WORKER_WAIT_ENV} must not be negative, got {text!r}")
    return value


def completed(client, futures=(), **options):
    """``distributed.as_completed`` on ``client``'s own event loop.

    Without ``loop``, ``as_completed`` follows the *current* client. When the
    caller made another client current (a notebook's ``with Client(...)``
    while astrodask connects its own to a scheduler address), it would track
    this client's futures from that client's loop thread, which asyncio does
    not allow across threads: a wake-up can be lost and the loop over
    results then waits for ever (seen once in CI: a merge from the CLI, with
    the test's own client current, hung in its fourth stage).

    Parameters
    ----------
    client : distributed.Client
        The client that submits the futures.
    futures : iterable of distributed.Future
        Futures to track from the start (more with ``.add``).
    **options
        Passed to ``as_completed`` (``with_results``, ``raise_errors``).

    Returns
    -------
    distributed.as_completed
    """
    from distributed import as_completed

    return as_completed(futures, loop=client.loop, **options)


def task_result(future, error, dying, failed):
    """``future.result()``, or one line of ``error`` if the task failed on the cluster.

    Parameters
    ----------
    future : distributed.Future
    error : type
        The :class:`~astrodask.errors.AstrodaskError` to raise (an
        ``AstrodaskError`` raised by the task itself passes unchanged).
    dying : str
        The message when the task's workers kept dying (``KilledWorker``).
    failed : str
        What failed, for the message of any other exception: ``"{failed}
        failed on a worker: {type}: {first line}"``.
    """
    from distributed import KilledWorker

    from ..errors import AstrodaskError

    try:
        return future.result()
    except KilledWorker:
        raise error(dying) from None
    except AstrodaskError:
        raise
    except Exception as exc:
        raise error(f"{failed} failed on a worker: {type(exc).__name__}: "
                    f"{first_line(exc)}") from None


def gathered(client, futures, error, what, progress=None):
    """The results of ``futures`` in their order, or one line of ``error`` if one failed.

    Parameters
    ----------
    client : distributed.Client
    futures : list of distributed.Future
    error : type
        The :class:`~astrodask.errors.AstrodaskError` raised for a failed task
        (an ``AstrodaskError`` raised by the task itself passes unchanged).
    what : str
        What the tasks do, for the message ("writing the residual mosaic").
    progress : callable, optional
        ``progress(done, total)`` as tasks finish.
    """
    for done, future in enumerate(completed(client, futures), start=1):
        if future.status == "error":
            client.cancel([f for f in futures if f is not future])  # nothing left writing
            task_result(future, error, f"workers kept dying while {what} (out of memory?)", what)
        if progress is not None:
            progress(done, len(futures))
    return client.gather(futures)


def task_map(client, function, items, error, what, progress=None, **shared):
    """``[function(*item, **shared) for item in items]``, as tasks on ``client``'s cluster.

    Parameters
    ----------
    client : distributed.Client or None
        None: the calls run here, one after the other.
    function : callable
    items : iterable of tuple
        Each call's positional arguments.
    error, what, progress
        As :func:`gathered` (``progress`` is called here too).
    **shared
        Keyword arguments of every call; they travel with every task, so keep
        them small (or pass futures of scattered data).

    Returns
    -------
    list
        The results in the order of ``items``.
    """
    items = list(items)
    if client is None:
        results = []
        for done, item in enumerate(items, start=1):
            results.append(function(*item, **shared))
            if progress is not None:
                progress(done, len(items))
        return results
    futures = [client.submit(function, *item, pure=False, retries=1, **shared) for item in items]
    return gathered(client, futures, error, what, progress)


def _format_resources(needed):
    return ",".join(f"{name}={amount:g}" for name, amount in sorted(needed.items()))


def unschedulable(client, needed, option="--gpu-workers"):
    """Why no worker of ``client``'s cluster can run tasks that need ``needed``.

    Parameters
    ----------
    client : distributed.Client
    needed : dict
        Dask resources each task asks for (e.g. ``{"GPU": 1}``).
    option : str
        The option that asked for them, named in the message.

    Returns
    -------
    str or None
        A one-line reason when the cluster has workers and none advertises
        the resources; ``None`` when one does, when nothing is needed, or when
        the cluster has no workers yet (they may still be queued, as SLURM
        jobs or pods are, and a cluster with no workers is waited for).
    """
    if not needed:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    for info in workers.values():
        resources = info.get("resources") or {}
        if all(resources.get(name, 0) >= amount for name, amount in needed.items()):
            return None
    if not workers:
        return None
    wanted = _format_resources(needed)
    return (f"none of the {len(workers)} worker(s) of the cluster advertises {wanted}, which "
            f"{option} needs: start workers with `dask worker --resources {wanted}` "
            f"or run without {option}")


class SchedulingWatch:
    """Ends a run whose tasks no worker of the cluster can take.

    The scheduler keeps such tasks waiting for ever (in the ``no-worker``
    state): a run with ``--gpu-workers`` on a cluster without ``GPU=1``
    workers would sit at 0 tiles. The watch checks before the models are
    loaded (:meth:`wait_at_start`) and, while the run makes no progress, in a
    background thread (:meth:`start`): after ``wait`` seconds with workers but
    none suitable it records the reason and calls ``on_stuck``.

    Parameters
    ----------
    client : distributed.Client
    needed : dict
        Resources each task asks for; an empty dict disables the watch.
    option : str
        The option that asked for them (for the message).
    wait : float, optional
        Seconds to wait for a suitable worker; default :func:`worker_wait`.
    poll : float
        Seconds between checks.
    """

    def __init__(self, client, needed, option="--gpu-workers", wait=None, poll=5.0):
        import threading

        self.client = client
        self.needed = dict(needed or {})
        self.option = option
        self.wait = worker_wait() if wait is None else wait
        self.poll = poll
        self.reason = None
        self._progress = None
        self._stop = threading.Event()
        self._thread = None

    def _message(self, reason):
        return f"{reason} (waited {self.wait:.0f} s)"

    def wait_at_start(self):
        """Block until a suitable worker is there (or none at all); the reason if none came."""
        import time

        if not self.needed:
            return None
        deadline = time.monotonic() + self.wait
        while True:
            reason = unschedulable(self.client, self.needed, self.option)
            if reason is None:
                return None
            if time.monotonic() >= deadline:
                self.reason = self._message(reason)
                return self.reason
            time.sleep(min(1.0, self.poll))

    def progressed(self):
        """Tell the watch that a task finished (no check is needed for a while)."""
        import time

        self._progress = time.monotonic()

    def start(self, on_stuck):
        """Watch in a background thread; call ``on_stuck()`` once the run cannot go on."""
        import threading

        if not self.needed:
            return
        self.progressed()
        self._thread = threading.Thread(target=self._watch, args=(on_stuck,), daemon=True,
                                        name="astrodask-scheduling-watch")
        self._thread.start()

    def _watch(self, on_stuck):
        import time

        stuck_since = None
        while not self._stop.wait(self.poll):
            if time.monotonic() - self._progress < self.poll:
                stuck_since = None
                continue
            try:
                reason = unschedulable(self.client, self.needed, self.option)
            except Exception:  # the client is closing: the run is ending anyway
                return
            if reason is None:
                stuck_since = None
                continue
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since >= self.wait:
                self.reason = self._message(reason)
                on_stuck()
                return

    def stop(self):
        """End the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
