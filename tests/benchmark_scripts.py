"""Import a script of ``benchmarks/`` as a module, for the tests of its functions."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name):
    """The module ``benchmarks/<name>.py``, executed afresh."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def latency_store():
    """``latency://``: an in-memory asynchronous store whose requests wait 5 ms each
    (``benchmarks/store_latency.py``), emptied after the test; yields the module and its
    request counts."""
    module = load_benchmark("store_latency")
    requests = module.register(latency=0.005)
    yield module, requests
    module.SlowMemoryFileSystem.store.clear()
