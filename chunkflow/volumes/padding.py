"""Reading a box that may reach beyond the volume: the outside is mirrored (without or with the
edge voxel repeated), the edge voxel repeated, or zero."""

from __future__ import annotations

import numpy as np

from chunkflow.geometry.boxes import Box
from chunkflow.volumes.base import Volume


def reflect_indices(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[lo, hi)`` without repeating the edge voxel."""
    idx = np.arange(start, stop) - lo
    n = hi - lo
    if n == 1:
        return np.full(idx.shape, lo)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - idx) + lo


def symmetric_indices(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[lo, hi)``, the edge voxel repeated."""
    idx = np.mod(np.arange(start, stop) - lo, 2 * (hi - lo))
    return np.where(idx < hi - lo, idx, 2 * (hi - lo) - 1 - idx) + lo


def edge_indices(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """Indices ``start..stop-1`` clamped into ``[lo, hi)``: the edge voxel repeated outward."""
    return np.clip(np.arange(start, stop), lo, hi - 1)


INDICES = {"reflect": reflect_indices, "symmetric": symmetric_indices, "edge": edge_indices}
PADDINGS = (*INDICES, "zero")


def read_padded(volume: Volume, box: Box, mode: str) -> np.ndarray:
    """The voxels of ``box`` (global coordinates); outside the volume as ``mode`` says (one of
    ``PADDINGS``).

    The result depends only on the volume and the box, never on how the work is split.
    """
    if mode not in PADDINGS:
        raise ValueError(f"padding mode {mode!r}: use one of {', '.join(PADDINGS)}")
    bounds = volume.bounds
    inside = box.intersect(bounds)
    if inside == box:
        return volume.read(box)
    channel_shape = () if volume.info.channels is None else (volume.info.channels,)
    if mode == "zero":
        out = np.zeros(channel_shape + box.shape, dtype=volume.info.dtype)
        if not inside.empty:
            out[(...,) + inside.slices(box.start)] = volume.read(inside)
        return out
    per_axis = [
        INDICES[mode](a, b, lo, hi)
        for a, b, lo, hi in zip(box.start, box.stop, bounds.start, bounds.stop, strict=True)
    ]
    source = Box(tuple(int(i.min()) for i in per_axis), tuple(int(i.max()) + 1 for i in per_axis))
    data = volume.read(source)
    local = np.ix_(*(i - s for i, s in zip(per_axis, source.start, strict=True)))
    return data[(...,) + local]
