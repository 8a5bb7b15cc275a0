"""benchmarks/gpu_session.sh (every check of a lent GPU machine in one call) and the
training-step timing it runs: what can be checked without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_session_script_without_wheels_stops_with_one_line(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "GPU_WHEELS": str(tmp_path),
                                 "OUT": str(tmp_path / "out")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gpu_session: no wheels in {tmp_path}/ (run benchmarks/gpu_wheels.sh here, carry .whl)"]


def test_the_session_script_runs_scripts_that_exist():
    text = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    scripts = [word for line in text.splitlines() if line.startswith("part ")
               for word in line.split() if word.startswith("benchmarks/")]
    assert len(scripts) == 4
    for script in scripts:
        assert (ROOT / script).is_file(), script


def _train_step_speed(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step_speed.py"),
                           *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_train_step_speed_times_only_the_modes_asked_for():
    result = _train_step_speed("--modes", "compiled", "--steps", "2", "--batch-size", "1",
                               "--crop", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "per step" in line]
    assert len(lines) == 1 and lines[0].startswith("compiled")
    assert "eager / compiled" not in result.stdout
    bad = _train_step_speed("--modes", "fast")
    assert bad.returncode == 2 and "--modes takes compiled and/or eager" in bad.stderr
