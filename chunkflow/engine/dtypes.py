"""Voxel values between the stores' dtypes and the network's float32 (numpy only)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TILE_VOXELS = 1 << 18  # a conversion's passes run over this many values at once (1 MB float32)


def scale_input(data: np.ndarray, mode: str) -> np.ndarray:
    """float32 network input; with ``auto`` integers map to [0, 1] (uint8 / 255)."""
    if mode == "auto" and np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        scaled = data.astype(np.float32)  # then in place: no temporaries
        if info.min:
            scaled -= np.float32(info.min)
        scaled /= np.float32(info.max - info.min)
        return scaled
    return data.astype(np.float32, copy=False)


def to_output_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    """float32 predictions as the output dtype; uint8 clips to [0, 1], scales by 255, rounds.

    Works in place where it can (``data`` is consumed): no block-sized temporaries, and float32
    data is returned as it is. uint8 is made tile by tile (``TILE_VOXELS``), so its four passes
    read the values from the CPU's cache, not from memory.
    """
    if dtype != "uint8":
        return data.astype(dtype, copy=False)
    out = np.empty(data.shape, dtype=np.uint8)
    source, target = np.atleast_2d(data), np.atleast_2d(out)  # views
    for where in tiles(source.shape):
        values = source[where]
        np.clip(values, 0.0, 1.0, out=values)
        values *= 255.0
        np.rint(values, out=values)
        target[where] = values
    return out


def tiles(shape: tuple[int, ...]) -> Iterator[tuple[int | slice, ...]]:
    """Index tuples that cut an array of ``shape`` (at least 2 axes) into C-ordered tiles of
    whole rows, about ``TILE_VOXELS`` values each (at least one row)."""
    rows = max(1, TILE_VOXELS // max(1, shape[-1]))
    for lead in np.ndindex(*shape[:-2]):
        for start in range(0, shape[-2], rows):
            yield (*lead, slice(start, start + rows))
