"""What every volume backend offers: metadata, and reads/writes of boxes in voxel coordinates."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from chunkflow.errors import VolumeError
from chunkflow.geometry import Box, Vec


@dataclass(frozen=True)
class VolumeInfo:
    """Geometry and type of a volume. ``shape`` and ``chunk_size`` are spatial (z, y, x);
    ``channels`` is None for a volume without a channel axis, else the size of axis 0."""

    shape: Vec
    dtype: str
    chunk_size: Vec
    voxel_offset: Vec = (0, 0, 0)
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: int | None = None

    @property
    def bounds(self) -> Box:
        """The volume's extent in global voxel coordinates (its voxel offset included)."""
        return Box.from_shape(self.voxel_offset, self.shape)

    def differences(self, other: VolumeInfo) -> list[str]:
        """Human-readable fields in which ``other`` differs from this one."""
        out = []
        for field in ("shape", "dtype", "chunk_size", "voxel_offset", "resolution", "channels"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if field == "resolution":
                mine, theirs = tuple(float(v) for v in mine), tuple(float(v) for v in theirs)
            if mine != theirs:
                out.append(f"{field} {_show(theirs)} (expected {_show(mine)})")
        return out


def _show(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


class Volume(ABC):
    """An open volume. Boxes are in global voxel coordinates and must lie inside ``bounds``."""

    info: VolumeInfo
    path: str

    @property
    def bounds(self) -> Box:
        return self.info.bounds

    def _local(self, box: Box) -> tuple[slice, ...]:
        if not self.bounds.contains(box):
            raise VolumeError(f"box {box} lies outside the bounds {self.bounds} of '{self.path}'")
        spatial = box.slices(self.info.voxel_offset)
        return spatial if self.info.channels is None else (slice(None), *spatial)

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box``: shape (z, y, x), or (c, z, y, x) with a channel axis."""
        return self._read(self._local(box))

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (same layout as ``read`` returns) into ``box``."""
        expected = box.shape if self.info.channels is None else (self.info.channels, *box.shape)
        if tuple(data.shape) != tuple(expected):
            raise VolumeError(
                f"data of shape {data.shape} does not fit box {box} (needs {expected})"
            )
        self._write(self._local(box), data.astype(self.info.dtype, copy=False))

    @abstractmethod
    def _read(self, index: tuple[slice, ...]) -> np.ndarray: ...

    @abstractmethod
    def _write(self, index: tuple[slice, ...], data: np.ndarray) -> None: ...
