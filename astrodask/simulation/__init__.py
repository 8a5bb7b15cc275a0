"""Simulated survey fields with known truth, drawn with GalSim.

- :func:`simulate_field`: one field in memory (images, truth table, masks,
  label and morphology maps), for training and tests;
  :func:`simulate_fields` many of them, in parallel processes.
- :func:`simulate`: a field of any size written to a folder, tile by tile
  (FITS per band, truth.parquet, masks.parquet, label and morphology maps).
"""

from .field import SimulatedField, simulate_field, simulate_fields
from .files import simulate
from .truth import ObjectMask, read_object_masks

__all__ = ["SimulatedField", "ObjectMask", "simulate_field", "simulate_fields", "simulate",
           "read_object_masks"]
