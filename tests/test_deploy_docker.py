"""The container images (deploy/docker), checked without a Docker engine.

The Dockerfiles are parsed with dockerfile-parse; the entrypoint script is run
for real against this checkout's virtualenv.
"""

import json
import os
from pathlib import Path
import shlex
import subprocess
import sys

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
IMAGES = {"cpu": DOCKER / "cpu.Dockerfile", "gpu": DOCKER / "gpu.Dockerfile"}


def instructions(dockerfile, name):
    return [item["value"] for item in DockerfileParser(path=str(dockerfile)).structure
            if item["instruction"] == name]


def ignore_patterns(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return [line.strip() for line in ignore.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def copy_sources(dockerfile):
    """(source, destination) of each COPY from the build context."""
    pairs = []
    for value in instructions(dockerfile, "COPY"):
        words = shlex.split(value)
        flags = [w for w in words if w.startswith("--")]
        if any(flag.startswith("--from") for flag in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        pairs += [(source, paths[-1]) for source in paths[:-1]]
    return pairs


def test_base_images():
    assert DockerfileParser(path=str(IMAGES["cpu"])).baseimage == "python:3.11-slim"
    gpu_base = DockerfileParser(path=str(IMAGES["gpu"])).baseimage  # ARG default resolved
    assert gpu_base.startswith("nvidia/cuda:12.") and "runtime" in gpu_base
    assert any("python3.11" in run for run in instructions(IMAGES["gpu"], "RUN"))


def test_package_install_lines():
    cpu_runs = " ".join(instructions(IMAGES["cpu"], "RUN"))
    assert "pip install ." in cpu_runs
    gpu_runs = " ".join(instructions(IMAGES["gpu"], "RUN"))
    assert "pip install '.[gpu]'" in gpu_runs
    # Unpinned, pip pairs dask 2026.8 with dask-cuda 0.18 (checked with pip --dry-run).
    assert '"dask-cuda[cu12]==${DASK_CUDA_VERSION}.*"' in gpu_runs
    assert DockerfileParser(path=str(IMAGES["gpu"])).args["DASK_CUDA_VERSION"]
    assert "tensorflow[and-cuda]" in gpu_runs


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_environment_user_and_entrypoint(kind):
    parser = DockerfileParser(path=str(IMAGES[kind]))
    assert parser.envs["KERAS_BACKEND"] == "tensorflow"
    # Same install path in both images: workers load models by the client's path.
    assert parser.envs["VIRTUAL_ENV"] == "/opt/venv"
    user = instructions(IMAGES[kind], "USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    entrypoint = json.loads(instructions(IMAGES[kind], "ENTRYPOINT")[-1])
    assert entrypoint[0] == "tini" and entrypoint[-1] == "astrodask-entrypoint"
    copied = dict((dest, source) for source, dest in copy_sources(IMAGES[kind]))
    assert copied["/usr/local/bin/astrodask-entrypoint"] == "deploy/docker/entrypoint.sh"
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_copied_files_exist_and_are_not_ignored(kind):
    patterns = ignore_patterns(IMAGES[kind])
    for source, _ in copy_sources(IMAGES[kind]):
        assert (ROOT / source).exists(), source
        if (ROOT / ".git").exists():
            tracked = subprocess.run(["git", "ls-files", "--", source], cwd=ROOT,
                                     capture_output=True, text=True).stdout
            assert tracked.strip(), f"{source} is not in git: a fresh clone would lack it"
        top = Path(source).parts[0]
        assert top not in patterns, f"{source} is excluded from the build context"
    # pyproject.toml names README.md as the readme: the package build needs it.
    assert "README.md" in [s for s, _ in copy_sources(IMAGES[kind])]


def test_dockerignore_files():
    cpu, gpu = (ignore_patterns(IMAGES[k]) for k in ("cpu", "gpu"))
    assert cpu == gpu
    for excluded in (".venv", "runs", "demo-output", "bench-output", ".git"):
        assert excluded in cpu


def entrypoint(*args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_entrypoint_runs_astrodask_by_default():
    done = entrypoint("--version")
    assert done.returncode == 0 and done.stdout.startswith("astrodask ")
    done = entrypoint("run", "--help")
    assert done.returncode == 0
    assert "usage: astrodask run" in done.stdout and "--scheduler" in done.stdout


def test_entrypoint_runs_programs_and_legacy_dask_names():
    done = entrypoint("python", "-c", "print('from python')")
    assert done.stdout.strip() == "from python"
    # The Helm chart starts `dask-worker` / `dask-scheduler`, gone from distributed.
    done = entrypoint("dask-worker", "--help")
    assert done.returncode == 0 and "Usage: dask worker" in done.stdout
    done = entrypoint("dask-scheduler", "--help")
    assert done.returncode == 0 and "Usage: dask scheduler" in done.stdout


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_keep_the_allocator_defaults_in_workers(image):
    """dask.yaml lands in /etc/dask and unsets the nanny's MALLOC_TRIM_THRESHOLD_."""
    import copy

    import dask
    import distributed  # noqa: F401 (its import puts its defaults into dask.config)
    import yaml

    assert ("deploy/docker/dask.yaml", "/etc/dask/astrodask.yaml") in copy_sources(IMAGES[image])
    merged = dask.config.update(copy.deepcopy(dask.config.config),
                                yaml.safe_load((DOCKER / "dask.yaml").read_text()))
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", config=merged)
    assert "MALLOC_TRIM_THRESHOLD_" in environ and environ["MALLOC_TRIM_THRESHOLD_"] is None
    assert environ["OMP_NUM_THREADS"] == 1  # the rest of Dask's defaults stay
