"""What the volume layer reads of a run's options: the input's location and the output's
layout. ``chunkflow.settings`` provides both (``InputSettings``, ``OutputSettings``); volumes
know nothing else of a run."""

from __future__ import annotations

from typing import Protocol

from chunkflow.geometry.boxes import Vec
from chunkflow.volumes.stores import StorageOptions


class InputOptions(Protocol):
    """Where a volume is read: its path, its scale, how to reach its store."""

    @property
    def path(self) -> str: ...
    @property
    def mip(self) -> int: ...
    @property
    def storage_options(self) -> StorageOptions | None: ...
    @property
    def fill_missing(self) -> bool: ...


class OutputOptions(Protocol):
    """How an output store is laid out and reached."""

    @property
    def path(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def chunk_size(self) -> Vec: ...
    @property
    def zarr_format(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def shard_size(self) -> Vec | None: ...
    @property
    def zstd_level(self) -> int | None: ...
    @property
    def storage_options(self) -> StorageOptions | None: ...
