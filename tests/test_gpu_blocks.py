"""benchmarks/gpu_blocks.py: its tiny mode runs on CPU (TensorFlow, and JAX without
TensorFlow), and its per-worker GPU check tells a worker on its own GPU from one that is not."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_blocks.py"


def load_script():
    return load_benchmark("gpu_blocks")


def run_script(tmp_path, *args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def table_rows(stdout):
    return [line.split(" | ")[:3] for line in stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| model") and "---" not in line]


def test_tiny_mode_on_cpu(tmp_path):
    result = run_script(tmp_path, "--tiny")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "9 windows (morpheus_decam, maskrcnn_decam) on local cluster" in out
    assert "workers that imported TensorFlow: 1 of 1" in out
    rows = table_rows(out)
    for batch in ("1", "2"):
        assert ["| maskrcnn_decam", "one pass", batch] in rows
        assert ["| maskrcnn_decam", "8 fused flips", batch] in rows
        assert ["| morpheus", "fast: network", batch] in rows
        assert ["| morpheus_decam", "fast: network", batch] in rows
    assert ["| morpheus", "fast: classify_tile", "1"] in rows


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_tiny_blocks_on_jax_without_tensorflow(tmp_path):
    # a tensorflow package that cannot be imported, first on the path: as on a JAX-only machine
    hidden = tmp_path / "hide" / "tensorflow"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('no tensorflow on this machine')\n")
    result = run_script(tmp_path, "--tiny", "--skip-mosaic", "--batches", "1",
                        env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                             "PYTHONPATH": f"{hidden.parent}{os.pathsep}{ROOT}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend jax" in result.stdout
    assert "TensorFlow imported by this process: False" in result.stdout
    assert len(table_rows(result.stdout)) == 6


def test_gpus_without_gpu_is_one_line(tmp_path):
    result = run_script(tmp_path, "--tiny", "--gpus", "--skip-blocks")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpu_blocks: error: --gpus was given but no NVIDIA GPU is visible on this machine"]


def test_gpu_check_tells_own_gpu_from_others():
    check = load_script().check_own_gpus

    def worker(pid, visible, seen=("gpu:0",)):
        return {"pid": pid, "visible": visible, "framework_gpus": list(seen),
                "tensorflow": False}

    good = [worker(10, "0"), worker(11, "1")]
    lines, ok = check(good, {0: {10, 99}, 1: {11}})
    assert ok and all(line.endswith("own GPU only") for line in lines)
    # a worker that also made a context on the other GPU
    assert not check(good, {0: {10, 11}, 1: {11}})[1]
    # restriction missing: the framework sees both GPUs / the rotated list was kept
    assert not check([worker(10, "0", ("gpu:0", "gpu:1"))], {0: {10}})[1]
    assert not check([worker(10, "0,1")], {0: {10}})[1]
    # two workers on one GPU
    assert not check([worker(10, "0"), worker(11, "0")], {0: {10, 11}})[1]
    # pids NVML does not list (a container's pid namespace): the in-process checks decide
    lines, ok = check(good, {0: {1234}, 1: set()})
    assert ok and "pid not listed" in lines[0]
    assert check(good, None)[0][0].endswith("own GPU only")
