"""Content hashes for provenance."""

import hashlib
import json


def file_sha256(path, block_size=8 << 20):
    """Hex SHA-256 of a file, read in blocks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(value):
    """Hex SHA-256 of ``value`` as sorted JSON (what is not JSON is taken as its ``str``):
    the digest of a record of settings, the same whatever order its keys were built in."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
