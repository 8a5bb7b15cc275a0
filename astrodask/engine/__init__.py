"""Distributed inference: run the models over every tile of a mosaic on Dask."""
