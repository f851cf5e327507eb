"""What a run's input is, beyond the config's text: its stored metadata and a digest of a few
of its storage chunks, read through the volume (values, not encoded bytes).

The result fingerprint hashes it (``RunPlan.input_volume``): other data behind the same path, or
behind the same relative path in another run directory, is another run, while a moved, copied or
re-compressed input keeps its identity (a petabyte run moved to another mount is not recomputed).
The whole input is never hashed; each done-marker records a digest of what its block read
(``DoneMarker.input_digest``), which `chunkflow verify --inputs` reads again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

import numpy as np

from chunkflow.geometry.boxes import Box, elementwise, sub
from chunkflow.volumes import Volume

#: how many storage chunks are sampled, along the volume's diagonal
SAMPLES = 8


def sample_boxes(volume: Volume, count: int = SAMPLES) -> list[Box]:
    """The storage chunks of ``volume`` holding ``count`` points evenly spaced along the
    diagonal of its bounds, its first and last voxels included, without repeats, in order."""
    info, bounds = volume.info, volume.bounds
    last = sub(bounds.stop, (1, 1, 1))
    boxes: list[Box] = []
    for step in range(count):
        point = elementwise(lambda a, b, i=step: a + (b - a) * i // (count - 1), bounds.start, last)
        start = elementwise(
            lambda p, o, c: p - (p - o) % c, point, info.voxel_offset, info.chunk_size
        )
        box = Box.from_shape(start, info.chunk_size).intersect(bounds)
        if box not in boxes:
            boxes.append(box)
    return boxes


def input_identity(volume: Volume) -> dict[str, Any]:
    """The input's metadata (``VolumeInfo``) and ``sample_sha256``, a digest of the values of
    its chunks ``sample_boxes`` with their boxes, dtype and shape. Open ``volume`` with
    ``fill_missing``: a chunk the store lacks then samples as the fill value (the block that
    reads it fails on it, unless ``input.fill_missing``)."""
    digest = hashlib.sha256()
    for box in sample_boxes(volume):
        data = np.ascontiguousarray(volume.read(box))
        digest.update(f"{box} {data.dtype.str} {data.shape};".encode())
        digest.update(data.data)
    return {**asdict(volume.info), "sample_sha256": digest.hexdigest()}
