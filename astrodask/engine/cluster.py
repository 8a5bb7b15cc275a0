"""Where the tasks run: an embedded local cluster, local GPUs, or an existing cluster.

dask-cuda is imported only here and only when GPUs are asked for: it cannot
even be imported on a machine without CUDA.
"""

from contextlib import contextmanager
import os

from ..errors import DependencyError, InputError, first_line
from .plugin import worker_environment


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
        Uses ``scheduler``, ``scheduler_file``, ``gpus``, ``n_workers`` and
        ``threads_per_worker``.
    """
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
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(map(str, ids)),
                                   threads_per_worker=threads, resources={"GPU": 1},
                                   dashboard_address=":0")
        description = f"dask-cuda LocalCUDACluster, {len(ids)} GPU worker(s) (GPUs {ids})"
    else:
        from distributed import LocalCluster

        workers, threads = local_cluster_size(config.n_workers, config.threads_per_worker)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               dashboard_address=":0", env=worker_environment(threads))
        description = f"local cluster, {workers} worker(s) x {threads} thread(s)"
    client = Client(cluster)
    try:
        yield client, description
    finally:
        client.close()
        _close_quietly(cluster)


def _close_quietly(cluster):
    """Close a local cluster without the nanny's warnings about slow-exiting workers.

    TensorFlow's thread pools can keep a worker process alive past the nanny's
    grace period at shutdown; the nanny then kills it, which is harmless here
    (all outputs are written and marked before the cluster closes).
    """
    import logging

    logger = logging.getLogger("distributed.nanny")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        logger.setLevel(level)
