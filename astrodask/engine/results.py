"""The results folder of a run: layout, atomic writers and done markers.

```
RESULTS/
  run.json          what was run on what (mosaic identity, models, config); "complete"
  config.yaml       the resolved configuration
  unet.zarr/        U-Net products, (class, y, x) float32, one chunk per window core
  maskrcnn/         Mask R-CNN instances, one Parquet part per window
  done/             one marker per finished window
  report.html       Dask performance report (with --report)
```

Every file is written under a temporary name and renamed when whole; a
window's done marker is written only after all its outputs.
"""

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import StoreError
from ..hashing import file_sha256

UNET_STORE = "unet.zarr"
INSTANCES_DIR = "maskrcnn"
DONE_DIR = "done"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def write_bytes_atomic(path, data):
    """Write ``data`` to ``path`` via a temporary file in the same folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path, obj):
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet_atomic(table, path):
    """Write a :class:`pyarrow.Table` to ``path`` atomically (deterministic bytes)."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_key(mosaic, specs, config):
    """Digest of everything that determines a run's outputs.

    The mosaic's input hashes and tile grid, each model file's content and
    band mapping, the model options and the batch partition. Worker counts
    and cluster options are not part of it: they must not change results.
    """
    digest = hashlib.sha256()
    identity = {
        "inputs": [i["sha256"] for i in mosaic.attrs["inputs"]],
        "tile_grid": mosaic.tile_grid.to_dict(),
        "models": [(s.kind, s.name, file_sha256(s.path), list(s.band_indices)) for s in specs],
        "unet": config.unet.__dict__,
        "maskrcnn": config.maskrcnn.__dict__,
        "batch_size": config.batch_size,
    }
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Results:
    """Paths and writers of one results folder (client and workers alike)."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def done_dir(self):
        return self.path / DONE_DIR

    @property
    def instances_dir(self):
        return self.path / INSTANCES_DIR

    @property
    def unet_store(self):
        return self.path / UNET_STORE

    def done_path(self, iy, ix):
        return self.done_dir / f"{iy:05d}-{ix:05d}.json"

    def instances_path(self, iy, ix):
        return self.instances_dir / f"tile-{iy:05d}-{ix:05d}.parquet"

    def is_done(self, iy, ix):
        return self.done_path(iy, ix).exists()

    def mark_done(self, iy, ix, info):
        write_json_atomic(self.done_path(iy, ix), dict(info, tile=[iy, ix]))

    def read_run(self):
        """The ``run.json`` record, or ``None`` if there is none."""
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except FileNotFoundError:
            return None

    def prepare(self, key, record, config_yaml, restart):
        """Create or re-open the folder for a run with digest ``key``.

        A folder holding another run (different key) is refused unless
        ``restart``; ``restart`` clears previous outputs and markers.
        """
        previous = self.read_run() if self.path.exists() else None
        if self.path.exists() and previous is None and any(self.path.iterdir()):
            raise StoreError(f"{self.path} exists and is not an astrodask results folder")
        if previous is not None and previous.get("key") != key and not restart:
            raise StoreError(f"{self.path} holds a run with a different mosaic, models or "
                             "options; pass --restart to recompute there, or use another --out")
        if restart:
            for name in (DONE_DIR, INSTANCES_DIR, UNET_STORE, RUN_FILE):
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self.done_dir.mkdir(exist_ok=True)
        record = dict(record, key=key, complete=False)
        write_json_atomic(self.path / RUN_FILE, record)
        write_bytes_atomic(self.path / CONFIG_FILE, config_yaml.encode())
        return record

    def finish(self, record):
        """Mark the run complete."""
        write_json_atomic(self.path / RUN_FILE, dict(record, complete=True))

    def create_unet_arrays(self, grid, classes, outputs, attrs):
        """Create the U-Net arrays (class, y, x) chunked one window core per chunk."""
        import zarr
        from zarr.codecs import BloscCodec

        group = zarr.open_group(str(self.unet_store), mode="a", zarr_format=3)
        for name in outputs:
            if name in group:
                continue
            group.create_array(name, shape=(len(classes), grid.height, grid.width),
                               chunks=(len(classes), grid.core, grid.core), dtype="float32",
                               fill_value=np.nan,
                               compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                               dimension_names=("class", "y", "x"))
        group.attrs["astrodask"] = dict(attrs, classes=list(classes), outputs=list(outputs))
        return group
