"""Run simulation jobs in order, here or in a pool of processes.

Results come back in the order of the jobs, whatever the number of workers,
and at most ``2 * workers`` finished results wait in memory.
"""

from collections import deque

from ..errors import InputError

_PLAN = None


def check_workers(workers):
    """Return ``workers`` as an int, or raise InputError unless it is a positive integer."""
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


def ordered_map(function, jobs, workers=1, initializer=None, initargs=()):
    """Yield ``function(job)`` for each job, in order, with up to ``workers`` processes.

    ``function`` must be importable by name (a module-level function): the
    pool uses the ``spawn`` start method.
    """
    workers = check_workers(workers)
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        for job in jobs:
            yield function(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=int(workers), mp_context=context,
                             initializer=initializer, initargs=initargs) as pool:
        pending = deque()
        todo = iter(jobs)
        for job in todo:
            pending.append(pool.submit(function, job))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = pending.popleft().result()
            for job in todo:
                pending.append(pool.submit(function, job))
                break
            yield done


def _init_worker(plan):
    global _PLAN
    _PLAN = plan


def render_tile(plan, region):
    """Draw one tile: ``(region, RegionResult, noisy images)``."""
    result = plan.render(region)
    noisy = plan.add_noise(result.noiseless, region[:2])
    return region, result, noisy


def _render_in_worker(region):
    return render_tile(_PLAN, region)


def render_tiles(plan, regions, workers=1):
    """Yield :func:`render_tile` results for ``regions``, in order.

    Parameters
    ----------
    plan : FieldPlan
    regions : list of tuple
        ``(y0, x0, y1, x1)`` on the noise-block grid.
    workers : int
        1 renders here; more start a pool of that many processes.
    """
    if workers <= 1 or len(regions) <= 1:
        for region in regions:
            yield render_tile(plan, region)
        return
    yield from ordered_map(_render_in_worker, regions, workers, _init_worker, (plan,))
