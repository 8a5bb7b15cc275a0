"""``astrodask demo``: the pipeline end to end on a simulated field.

Simulates a field with known truth, ingests it, runs every shipped model that
takes the field's bands on a local Dask cluster, merges the results into a
catalog and maps, and times each stage.
"""

from dataclasses import dataclass, field
from pathlib import Path
import shutil
import time

from .errors import InputError

#: Default demo field: small enough for a laptop, large enough for several tiles.
DEFAULT_SIZE = (1024, 1024)


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and how long each stage took."""

    out: Path
    simulation: dict
    mosaic: object
    run: object
    merge: object
    models: list
    seconds: dict = field(default_factory=dict)


def demo_models(bands):
    """The kinds of shipped models (``unet``, ``maskrcnn``) that take ``bands``."""
    from .engine.specs import usable_kinds

    return usable_kinds(bands)


def demo(out="demo-output", preset="decam", size=DEFAULT_SIZE, seed=0, n_workers=None,
         overwrite=True, progress=None):
    """Run simulate → ingest → run → merge on a built-in field.

    Parameters
    ----------
    out : str or Path
        Folder for everything the demo writes (``field/``, ``mosaic.zarr``, ``results/``).
    preset : {"decam", "hst"}
        Simulator preset; the shipped models for its bands are run.
    size : tuple of int or str
        Field size ``(ny, nx)`` in pixels, or ``"WIDTHxHEIGHT"`` text.
    seed : int
        Simulation seed.
    n_workers : int, optional
        Local Dask workers (default one per core).
    overwrite : bool
        Replace a previous demo in ``out``.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    DemoResult
    """
    from .engine.run import run
    from .ingestion import ingest
    from .merging.run import merge
    from .simulation import simulate

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace the previous demo")
        if not (out / "demo.txt").exists() and any(out.iterdir()):
            raise InputError(f"{out} exists and was not written by astrodask demo; "
                             "refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "demo.txt").write_text("written by astrodask demo\n")

    def stage_progress(stage):
        return None if progress is None else (lambda d, t: progress(stage, d, t))

    seconds = {}
    start = time.perf_counter()
    sim = simulate(out / "field", size=size, preset=preset, seed=seed,
                   progress=stage_progress("simulate"))
    seconds["simulate"] = time.perf_counter() - start
    models = demo_models(sim["bands"])
    if not models:
        raise InputError(f"no shipped model takes the {preset} bands {','.join(sim['bands'])}")

    start = time.perf_counter()
    images = [out / "field" / f"{band}.fits" for band in sim["bands"]]
    mosaic = ingest(images, out / "mosaic.zarr", progress=stage_progress("ingest"))
    seconds["ingest"] = time.perf_counter() - start

    start = time.perf_counter()
    summary = run(mosaic, out / "results", models=models, n_workers=n_workers,
                  progress=stage_progress("run"))
    seconds["run"] = time.perf_counter() - start

    start = time.perf_counter()
    merged = merge(summary.results, mosaic=mosaic, progress=stage_progress("merge"))
    seconds["merge"] = time.perf_counter() - start
    return DemoResult(out=out, simulation=sim, mosaic=mosaic, run=summary, merge=merged,
                      models=models, seconds=seconds)
