"""Geometry: boxes and vectors, the block grid, patch lattices, pieces."""
