"""engine.cluster.task_map: the same calls here or as tasks, failures as one line."""

import pytest

from astrodask.engine.cluster import task_map
from astrodask.errors import StoreError


def _scaled(value, offset, factor=1):
    if value < 0:
        raise ValueError(f"negative value {value}\nsecond line")
    return (value + offset) * factor


def test_calls_run_here_in_order_with_progress():
    seen = []
    result = task_map(None, _scaled, [(1, 1), (2, 1), (3, 0)], StoreError, "scaling",
                      progress=lambda done, total: seen.append((done, total)), factor=10)
    assert result == [20, 30, 30] and seen == [(1, 3), (2, 3), (3, 3)]


def test_tasks_on_a_cluster_give_the_same_and_fail_in_one_line():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        seen = []
        items = [(k, 1) for k in range(6)]
        assert task_map(client, _scaled, items, StoreError, "scaling", factor=2,
                        progress=lambda done, total: seen.append(total)) == \
            task_map(None, _scaled, items, StoreError, "scaling", factor=2)
        assert seen == [6] * 6
        with pytest.raises(StoreError, match=r"^scaling failed on a worker: ValueError: "
                                             r"negative value -1$"):
            task_map(client, _scaled, [(1, 0), (-1, 0)], StoreError, "scaling")
