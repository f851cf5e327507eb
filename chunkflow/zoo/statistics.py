"""The input's dataset-wide statistics that a package's preprocessing needs, measured once when
planning: over the whole input volume when it holds at most ``STATISTICS_VOXELS`` voxels, else
over that many voxels' worth of its storage chunks, spread evenly over the volume in storage
order. The same volume always gives the same chunks and the same numbers; the plan records them
in ``model.statistics`` (the result fingerprint hashes them)."""

from __future__ import annotations

import math

import numpy as np

from chunkflow.geometry.boxes import Box, add, mul
from chunkflow.volumes import Volume
from chunkflow.zoo.processing import Needs, Statistics, measure

STATISTICS_VOXELS = 1 << 24  # 16.8 M voxels (64 MiB as float32)


def statistics_boxes(volume: Volume, voxels: int = STATISTICS_VOXELS) -> list[Box]:
    """The boxes whose values are measured: the whole volume, or ``voxels // chunk`` storage
    chunks evenly spaced in z-major order over its chunk grid."""
    bounds, chunk = volume.bounds, volume.info.chunk_size
    if bounds.size <= voxels:
        return [bounds]
    counts = tuple(math.ceil(s / c) for s, c in zip(bounds.shape, chunk, strict=True))
    total = math.prod(counts)
    wanted = min(total, max(1, voxels // math.prod(chunk)))
    boxes = []
    for i in range(wanted):
        index = np.unravel_index(i * total // wanted, counts)
        start = add(bounds.start, mul(tuple(int(v) for v in index), chunk))
        boxes.append(Box.from_shape(start, chunk).intersect(bounds))
    return boxes


def measure_input(volume: Volume, needs: Needs) -> Statistics:
    """The statistics ``needs`` asks for, of ``volume``'s values (``statistics_boxes``)."""
    values = [volume.read(box).astype(np.float32).reshape(-1) for box in statistics_boxes(volume)]
    return measure(np.concatenate(values), needs)
