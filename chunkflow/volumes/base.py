"""What every volume backend offers: metadata, and reads/writes of boxes in voxel coordinates."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from chunkflow.errors import ConfigError, VolumeError
from chunkflow.geometry.boxes import Box, Vec
from chunkflow.volumes.stores import StorageOptions, location_exists

if TYPE_CHECKING:
    from chunkflow.volumes.options import OutputOptions


@dataclass(frozen=True)
class VolumeInfo:
    """Geometry and type of a volume. ``shape`` and ``chunk_size`` are spatial (z, y, x);
    ``channels`` is None for a volume without a channel axis, else the size of axis 0.
    ``fingerprint``: the result fingerprint an output store records (None: none recorded), and
    ``store_id``: the identity it got when created or taken over for that fingerprint, which
    done-markers and piece state record; neither is part of the geometry that ``differences``
    compares."""

    shape: Vec
    dtype: str
    chunk_size: Vec
    voxel_offset: Vec = (0, 0, 0)
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: int | None = None
    fingerprint: str | None = None
    store_id: str | None = None

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


def shard_size_mismatch(found: Vec | None, wanted: Vec | None) -> str:
    """The format mismatch line for a stored shard size (``none``: unsharded)."""
    show = lambda size: "none" if size is None else list(size)  # noqa: E731
    return f"shard_size {show(found)} (expected {show(wanted)})"


def refuse_mip(path: str, mip: int) -> None:
    """Single-scale formats have only mip 0."""
    if mip:
        raise VolumeError(
            f"'{path}' has one scale, not mip {mip}; input.mip applies to precomputed and "
            "OME-Zarr inputs"
        )


class Volume(ABC):
    """An open volume. Boxes are in global voxel coordinates and must lie inside ``bounds``.

    A backend (one storage format) subclasses this and is listed in
    ``chunkflow.volumes.BACKENDS``, where the first whose ``handles(path)`` is true serves a
    path. It offers:

    - ``Backend(path, mode="r", mip=0, options=None)``: open scale ``mip`` of an existing volume
      (``mode`` ``"r"`` or ``"r+"``; ``options``: the volume's ``storage_options``), raising a one-line ``VolumeError`` for anything unusable (single-scale
      formats refuse ``mip > 0`` with ``refuse_mip``); it sets ``path`` and ``info``.
    - ``handles(path, options)``: whether the path is spelled (or, when it exists, stored) in
      this format.
    - ``exists(path, options)``: whether a volume (or something else) already sits at the path.
    - ``create(path, info, output)``: create an output volume with the geometry of ``info`` and
      the format options of ``output`` (its ``storage_options`` too); formats that cannot be written raise ``VolumeError``.
    - ``check_options(output)``: refuse, from the config alone, storage options this format lacks
      (the format-specific ones not in its ``output_options``).
    - ``check_layout(output, shape)``: refuse, before any job, storage options that an output of
      ``shape`` voxels cannot have in this format.
    - ``format_mismatches(output)``: how an existing volume's format options differ from
      ``output`` (the geometry is compared by ``VolumeInfo.differences``).
    - ``create`` stores ``info.fingerprint`` in the volume's metadata, ``Backend(path)`` reads it
      back into ``info``, and ``record_fingerprint(fingerprint)`` replaces it.
    - ``_read`` / ``_write``: local index → array; ``finish(boxes)`` after every block is
      written, for a format that sets ``assembles_parts``.
    """

    info: VolumeInfo
    path: str
    #: whether blocks are written as parts that ``finish`` assembles into the volume (HDF5)
    assembles_parts: bool = False
    #: the format-specific output options this format takes: ``encoding`` (precomputed),
    #: ``zstd_level`` (zarr); ``check_options`` refuses the others
    output_options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def handles(cls, path: str, options: StorageOptions | None = None) -> bool:
        """Whether ``path`` names a volume of this format (by its spelling or its content)."""

    @classmethod
    def exists(cls, path: str, options: StorageOptions | None = None) -> bool:
        """Whether anything exists at ``path`` (a volume to check, or something to refuse)."""
        return location_exists(path, options)

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputOptions) -> Volume:
        """Create the output volume at ``path``; the default: this format is read-only."""
        raise VolumeError(f"chunkflow cannot write {cls.__name__} outputs ('{path}')")

    @classmethod
    def check_options(cls, output: OutputOptions) -> None:
        """Raise a ConfigError for storage options this format does not have, judged from the
        config alone: by default the format-specific ones not in ``output_options``."""
        if output.zstd_level is not None and "zstd_level" not in cls.output_options:
            raise ConfigError(
                "output.zstd_level applies to zarr outputs only; remove it or write to a .zarr path"
            )
        if output.encoding != "raw" and "encoding" not in cls.output_options:
            raise ConfigError(
                f"output.encoding {output.encoding} applies to precomputed outputs only; "
                "remove it or write to a precomputed:// path"
            )

    @classmethod
    def check_layout(cls, output: OutputOptions, shape: Vec) -> None:
        """Raise a ConfigError if an output of ``shape`` cannot be stored as ``output`` asks;
        every layout the config allows is possible by default."""
        return None

    def format_mismatches(self, output: OutputOptions) -> list[str]:
        """How this volume's format options differ from ``output``'s, e.g. ``zarr format 2
        (expected 3)``; none by default."""
        return []

    def record_fingerprint(self, fingerprint: str, store_id: str) -> None:
        """Record ``fingerprint`` as the results this store holds, and its new ``store_id``; the
        default: read-only."""
        raise VolumeError(f"chunkflow cannot write {type(self).__name__} outputs ('{self.path}')")

    def storage_stamp(self, box: Box) -> str | None:
        """A digest of what the storage objects holding ``box`` are now (their names, sizes and
        modification times), to tell whether they changed since they were read; None when the
        backend cannot tell without reading them (then every check reads them again)."""
        return None

    def finish(self, boxes: Sequence[Box]) -> None:
        """Make the output whole once every block in ``boxes`` is written; nothing by default."""
        return None

    @property
    def bounds(self) -> Box:
        return self.info.bounds

    def _local(self, box: Box) -> tuple[slice, ...]:
        if not self.bounds.contains(box):
            raise VolumeError(f"box {box} lies outside the bounds {self.bounds} of '{self.path}'")
        spatial = box.slices(self.info.voxel_offset)
        return spatial if self.info.channels is None else (slice(None), *spatial)

    def _global(self, index: tuple[slice, ...]) -> Box:
        """The global box of a local index made by ``_local`` (its inverse)."""
        offset = self.info.voxel_offset
        spatial = index[-3:]
        start = tuple(s.start + o for s, o in zip(spatial, offset, strict=True))
        return Box(start, tuple(s.stop + o for s, o in zip(spatial, offset, strict=True)))

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
