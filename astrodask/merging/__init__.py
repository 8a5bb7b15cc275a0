"""Merge stage: per-window pieces → one seamless set of objects, maps and a catalog."""
