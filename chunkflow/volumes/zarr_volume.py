"""Zarr arrays (format 2 and 3) as volumes; voxel offset and resolution live in the attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chunkflow.errors import VolumeError
from chunkflow.geometry import vec
from chunkflow.volumes.base import Volume, VolumeInfo


def _info_from_array(array, path: str) -> VolumeInfo:
    if array.ndim not in (3, 4):
        raise VolumeError(
            f"'{path}' has {array.ndim} dimensions; chunkflow reads (z, y, x) or (c, z, y, x) arrays"
        )
    attrs = dict(array.attrs)
    resolution = tuple(float(r) for r in attrs.get("resolution", (1.0, 1.0, 1.0)))
    if "voxel_offset" in attrs:
        offset = vec(attrs["voxel_offset"])
    elif "offset" in attrs:  # daisy / funlib convention: offset in world units
        offset = vec(round(o / r) for o, r in zip(attrs["offset"], resolution, strict=True))
    else:
        offset = (0, 0, 0)
    channels = None if array.ndim == 3 else int(array.shape[0])
    return VolumeInfo(
        shape=vec(array.shape[-3:]),
        dtype=str(array.dtype),
        chunk_size=vec(array.chunks[-3:]),
        voxel_offset=offset,
        resolution=resolution,  # type: ignore[arg-type]
        channels=channels,
    )


class ZarrVolume(Volume):
    def __init__(self, path: str, mode: str = "r") -> None:
        import zarr

        self.path = path
        if not Path(path).exists():
            raise VolumeError(f"volume '{path}' does not exist; check the path")
        try:
            node = zarr.open(path, mode=mode)
        except Exception as err:  # zarr raises several types for unreadable stores
            raise VolumeError(f"'{path}' is not a readable zarr store ({err})") from None
        if not isinstance(node, zarr.Array):
            raise VolumeError(
                f"'{path}' is a zarr group, not an array; point the path at an array inside it"
            )
        self.array = node
        self.info = _info_from_array(node, path)

    def _read(self, index: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[index])

    def _write(self, index: tuple[slice, ...], data: np.ndarray) -> None:
        self.array[index] = data

    @staticmethod
    def create(path: str, info: VolumeInfo, zarr_format: int = 3) -> ZarrVolume:
        """Create an array at ``path`` with the geometry of ``info``: (c, z, y, x) or (z, y, x)."""
        import zarr

        lead = () if info.channels is None else (info.channels,)
        names = ["c", "z", "y", "x"][-len(lead) - 3 :]
        extra = {"dimension_names": names} if zarr_format == 3 else {}
        zarr.create_array(
            store=path,
            shape=(*lead, *info.shape),
            chunks=(*lead, *info.chunk_size),
            dtype=info.dtype,
            fill_value=0,
            zarr_format=zarr_format,
            attributes={
                "voxel_offset": list(info.voxel_offset),
                "resolution": list(info.resolution),
            },
            **extra,
        )
        return ZarrVolume(path, mode="r+")
