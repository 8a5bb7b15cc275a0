"""Render the tiles of a field in order, in this process or in a pool of processes.

Tiles come back in the order asked for, whatever the number of workers, and
at most ``2 * workers`` finished tiles wait in memory.
"""

from collections import deque

_PLAN = None


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
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker, initargs=(plan,)) as pool:
        pending = deque()
        todo = iter(regions)
        for region in todo:
            pending.append(pool.submit(_render_in_worker, region))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = pending.popleft().result()
            for region in todo:
                pending.append(pool.submit(_render_in_worker, region))
                break
            yield done
