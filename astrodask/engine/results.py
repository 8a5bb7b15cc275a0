"""The results folder of a run: layout, writers and done markers.

```
RESULTS/
  run.json          what was run on what (mosaic identity, models, config); "complete"
  config.yaml       the resolved configuration
  unet.zarr/        U-Net products, (class, y, x) float32, one chunk per window core
  maskrcnn/         Mask R-CNN instances, one Parquet part per window
  done/             one marker per finished window
  report.html       Dask performance report (with --report)
```

RESULTS is a local folder or an fsspec URL (see :mod:`astrodask.storage`).
Every file is written whole (temporary name and rename locally, a single PUT
on object stores); a window's done marker is written only after all its
outputs.
"""

import json
from pathlib import Path

import numpy as np

from .. import storage
from ..errors import StoreError
from ..hashing import file_sha256, json_sha256

UNET_STORE = "unet.zarr"
INSTANCES_DIR = "maskrcnn"
DONE_DIR = "done"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def write_parquet(table, location):
    """Write a :class:`pyarrow.Table` as Parquet, whole (deterministic bytes)."""
    storage.put_bytes(location, storage.parquet_bytes(table))


def run_key(mosaic, specs, config):
    """Digest of everything that determines a run's outputs.

    The mosaic's content (:attr:`~astrodask.mosaic.Mosaic.content_digest`:
    its inputs' hashes, weights, grid, PSF, ...), each model file's content,
    band mapping and detection settings (its card's, with overrides), the
    model options and the batch partition. Worker counts and cluster options
    are not part of it: they must not change results.
    """
    identity = {
        "mosaic": mosaic.content_digest,
        "models": [(s.kind, s.name, file_sha256(s.path), list(s.band_indices), s.settings)
                   + ((s.fold_fragments,) if s.fold_fragments else ())
                   + ((s.centres, _centres_sha256(s)) if s.centres else ())
                   for s in specs],
        "unet": config.unet.__dict__,
        "maskrcnn": config.maskrcnn.__dict__,
        "batch_size": config.batch_size,
    }
    return json_sha256(identity)


def _centres_sha256(spec):
    """Digest of the centre network's weights beside a Mask R-CNN spec's model file."""
    return file_sha256(Path(spec.path).with_name(spec.centres["weights"]))


class Results:
    """Paths and writers of one results folder (client and workers alike).

    Parameters
    ----------
    location : str or Path
        Local folder or fsspec URL.
    """

    def __init__(self, location):
        self.location = storage.normalise(location)

    def __str__(self):
        return self.location

    def file(self, *parts):
        """Location of an entry of the folder."""
        return storage.join(self.location, *parts)

    @property
    def unet_store(self):
        return self.file(UNET_STORE)

    @property
    def instances_dir(self):
        return self.file(INSTANCES_DIR)

    def done_path(self, iy, ix):
        return self.file(DONE_DIR, f"{iy:05d}-{ix:05d}.json")

    def instances_path(self, iy, ix):
        return self.file(INSTANCES_DIR, f"tile-{iy:05d}-{ix:05d}.parquet")

    def done_tiles(self):
        """Set of ``(iy, ix)`` with a done marker (one listing, not one query per tile)."""
        done = set()
        for name in storage.listdir(self.file(DONE_DIR)):
            stem = name.removesuffix(".json")
            if name.endswith(".json") and "-" in stem:
                iy, ix = stem.split("-")
                done.add((int(iy), int(ix)))
        return done

    def mark_done(self, windows, info):
        """Leave the done markers of ``windows`` (``[(iy, ix), ...]``), written together,
        each holding ``info`` and its window."""
        storage.put_many({self.done_path(iy, ix): storage.json_bytes(dict(info, tile=[iy, ix]))
                          for iy, ix in windows})

    def read_run(self):
        """The ``run.json`` record, or ``None`` if there is none."""
        try:
            return json.loads(storage.get_bytes(self.file(RUN_FILE)))
        except FileNotFoundError:
            return None

    def prepare(self, key, record, config_yaml, restart):
        """Create or re-open the folder for a run with digest ``key``.

        A folder holding another run (different key) is refused unless
        ``restart``; ``restart`` clears previous outputs and markers.
        """
        previous = self.read_run()
        if previous is None and storage.listdir(self.location, hidden=True):
            raise StoreError(f"{self.location} exists and is not an astrodask results folder")
        if previous is not None and previous.get("key") != key and not restart:
            raise StoreError(f"{self.location} holds a run with a different mosaic, models or "
                             "options; pass --restart to recompute there, or use another --out")
        if restart:
            for name in (DONE_DIR, INSTANCES_DIR, UNET_STORE, RUN_FILE):
                storage.remove(self.file(name))
        storage.makedirs(self.location)
        storage.makedirs(self.file(DONE_DIR))
        storage.makedirs(self.instances_dir)
        record = dict(record, key=key, complete=False)
        storage.put_json(self.file(RUN_FILE), record)
        storage.put_bytes(self.file(CONFIG_FILE), config_yaml.encode())
        return record

    def finish(self, record):
        """Mark the run complete."""
        storage.put_json(self.file(RUN_FILE), dict(record, complete=True))

    def create_unet_arrays(self, grid, classes, outputs, attrs):
        """Create the U-Net arrays (class, y, x) chunked one window core per chunk."""
        import zarr
        from zarr.codecs import BloscCodec

        group = zarr.open_group(self.unet_store, mode="a", zarr_format=3)
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
