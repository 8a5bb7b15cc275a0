"""SLURM deployment (deploy/slurm), checked without SLURM.

The dask-jobqueue job script is rendered for real (no job is submitted) and
its worker command parsed with Dask's own CLI; the sbatch script runs end to
end with a stand-in ``srun`` (runs the task once, here) and a stand-in
``astrodask`` that parses its arguments with the real parser and records the
cluster it joined through the scheduler file.
"""

import importlib.util
import json
import os
from pathlib import Path
import shlex
import subprocess
import sys
import time

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "deploy" / "slurm"


@pytest.fixture(scope="module")
def slurm_cluster():
    import dask

    spec = importlib.util.spec_from_file_location("slurm_cluster", SLURM / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The scheduler runs in this process: keep its dashboard off port 8787.
    with dask.config.set({"jobqueue.slurm.scheduler-options": {"dashboard_address": ":0"}}):
        yield module


def sbatch_directives(script):
    return [line.split(None, 1)[1] for line in script.splitlines()
            if line.startswith("#SBATCH")]


def test_job_script_asks_for_one_gpu_and_advertises_it(slurm_cluster, tmp_path):
    from distributed.cli import dask_worker

    with slurm_cluster.gpu_cluster(partition="gpu", account="astro", cpus_per_task=6,
                                   memory="32GiB", walltime="01:30:00",
                                   log_directory=str(tmp_path / "logs"),
                                   job_script_prologue=["module load cuda/12"]) as cluster:
        script = cluster.job_script()
    directives = sbatch_directives(script)
    for expected in ("--gres=gpu:1", "-p gpu", "-A astro", "--cpus-per-task=6", "-t 01:30:00",
                     "-n 1"):
        assert expected in directives, (expected, directives)
    assert any(d.startswith("--mem=") for d in directives)
    assert "module load cuda/12" in script.splitlines()
    command = shlex.split(script.strip().splitlines()[-1])
    # A plain Dask worker, not an astrodask wrapper.
    assert command[1:3] == ["-m", "distributed.cli.dask_worker"]
    assert not any("astrodask" in word for word in command)
    params = dask_worker.main.make_context("dask worker", command[3:]).params
    assert params["resources"] == "GPU=1"
    assert params["nthreads"] == 1 and params["memory_limit"].endswith("GiB")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_print_job_script_command(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # dask-jobqueue creates the log folder
    assert slurm_cluster.main(["--print-job-script", "--partition", "gpu"]) == 0
    directives = sbatch_directives(capsys.readouterr().out)
    assert "--gres=gpu:1" in directives and "-p gpu" in directives
    with pytest.raises(SystemExit):
        slurm_cluster.main([])  # neither a mosaic nor --print-job-script


FAKE_ASTRODASK = """#!{python}
import json, sys
from distributed import Client
from astrodask.cli import build_parser

args = build_parser().parse_args(sys.argv[1:])
with Client(scheduler_file=args.scheduler_file, timeout="30s") as client:
    client.wait_for_workers(1, timeout=60)
    workers = client.scheduler_info()["workers"].values()
    record = {{"command": args.command, "mosaic": args.mosaic, "out": args.out,
               "models": args.models, "resources": [w["resources"] for w in workers]}}
with open({record!r}, "w") as f:
    json.dump(record, f)
"""

FAKE_SRUN = """#!/bin/sh
while [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""


def test_sbatch_script_runs_scheduler_gpu_workers_and_astrodask(tmp_path):
    script = SLURM / "astrodask.sbatch"
    assert "--gres=gpu:1" in sbatch_directives(script.read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record.json"
    for name, text in (("astrodask", FAKE_ASTRODASK.format(python=sys.executable,
                                                           record=str(record))),
                       ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
               SLURM_JOB_ID="4242", SLURM_NTASKS="1", TMPDIR=str(tmp_path))
    env.pop("ASTRODASK_VENV", None)
    with open(tmp_path / "job.log", "w") as log:
        done = subprocess.run(["bash", str(script), "/shared/mosaic.zarr", "/shared/results",
                               "--models", "unet"], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=120)
    scheduler_file = str(tmp_path / "astrodask-scheduler-4242.json")
    left = _processes_using(scheduler_file)
    for process in left:  # never leave a scheduler or worker behind, even on failure
        process.kill()
    assert done.returncode == 0, (tmp_path / "job.log").read_text()[-2000:]
    assert not left, "the script left Dask processes running"
    result = json.loads(record.read_text())
    assert result == {"command": "run", "mosaic": "/shared/mosaic.zarr",
                      "out": "/shared/results", "models": "unet",
                      "resources": [{"GPU": 1}]}


def _processes_using(path, wait=5.0):
    """Processes whose command line names ``path``, after giving them ``wait`` s to exit."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if path in " ".join(process.info["cmdline"] or []):
                found.append(process)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
