"""Volumes by path: open an existing one, or create the output (refusing a mismatching one)."""

from __future__ import annotations

from pathlib import Path

from chunkflow.errors import VolumeError
from chunkflow.volumes.base import Volume, VolumeInfo
from chunkflow.volumes.padding import read_padded
from chunkflow.volumes.zarr_volume import ZarrVolume

__all__ = [
    "Volume",
    "VolumeInfo",
    "check_existing",
    "create_or_check",
    "open_volume",
    "read_padded",
]


def open_volume(path: str, mode: str = "r") -> Volume:
    """Open the volume at ``path``; the format follows from the path."""
    if (
        path.rstrip("/").endswith(".zarr")
        or Path(path, "zarr.json").exists()
        or Path(path, ".zarray").exists()
    ):
        return ZarrVolume(path, mode=mode)
    if not Path(path).exists():
        raise VolumeError(f"volume '{path}' does not exist; check the path")
    raise VolumeError(f"cannot tell the format of '{path}'; name zarr stores '*.zarr'")


def check_existing(path: str, info: VolumeInfo, zarr_format: int = 3) -> Volume:
    """Open the existing volume at ``path``; refuse it, untouched, unless it matches ``info``."""
    existing = open_volume(path, mode="r+")
    diffs = info.differences(existing.info)
    found_format = getattr(existing, "zarr_format", zarr_format)
    if found_format != zarr_format:
        diffs.append(f"zarr format {found_format} (expected {zarr_format})")
    if diffs:
        raise VolumeError(
            f"output '{path}' exists with different {'; '.join(diffs)}; "
            "delete it or choose another output.path"
        )
    return existing


def create_or_check(path: str, info: VolumeInfo, zarr_format: int = 3) -> tuple[Volume, bool]:
    """Create the output volume, or reuse an existing one that matches ``info`` exactly.

    Returns the volume and whether it was created. A mismatching store is refused, never touched.
    """
    if Path(path).exists():
        return check_existing(path, info, zarr_format), False
    if not path.rstrip("/").endswith(".zarr"):
        raise VolumeError(f"output.path '{path}' must end in .zarr")
    return ZarrVolume.create(path, info, zarr_format), True
