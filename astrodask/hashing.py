"""Content hashes for provenance."""

import hashlib


def file_sha256(path, block_size=8 << 20):
    """Hex SHA-256 of a file, read in blocks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()
