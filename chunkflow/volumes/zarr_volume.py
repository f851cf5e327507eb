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
    resolution: tuple[float, ...] = (1.0, 1.0, 1.0)
    for name in ("resolution", "voxel_size"):  # funlib.persistence calls it voxel_size
        if name in attrs:
            resolution = _triple(attrs, name, path, array.ndim)
            break
    if any(r <= 0 for r in resolution):
        raise VolumeError(f"'{path}' has resolution {list(resolution)}; it must be positive")
    if "voxel_offset" in attrs:
        raw_offset = _triple(attrs, "voxel_offset", path, array.ndim)
    elif "offset" in attrs:  # daisy / funlib convention: offset in world units
        world = _triple(attrs, "offset", path, array.ndim)
        raw_offset = tuple(o / r for o, r in zip(world, resolution, strict=True))
    else:
        raw_offset = (0.0, 0.0, 0.0)
    offset = vec(round(o) for o in raw_offset)
    if any(abs(o - r) > 1e-6 for o, r in zip(offset, raw_offset, strict=True)):
        raise VolumeError(
            f"'{path}' has an offset that is not a whole number of voxels "
            f"({[float(o) for o in raw_offset]}); fix its offset or resolution attribute"
        )
    channels = None if array.ndim == 3 else int(array.shape[0])
    return VolumeInfo(
        shape=vec(array.shape[-3:]),
        dtype=str(array.dtype),
        chunk_size=vec(array.chunks[-3:]),
        voxel_offset=offset,
        resolution=resolution,  # type: ignore[arg-type]
        channels=channels,
    )


def _triple(attrs: dict, name: str, path: str, ndim: int) -> tuple[float, float, float]:
    """Attribute ``name`` as z, y, x numbers: 3 of them, or one per axis of a (c, z, y, x) array."""
    value = attrs[name]
    try:
        numbers = [] if isinstance(value, str) else [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in {3, ndim}:
        raise VolumeError(
            f"'{path}' has attribute {name} = {value!r}; it must list 3 numbers (z, y, x)"
        )
    return tuple(numbers[-3:])  # type: ignore[return-value]


class ZarrVolume(Volume):
    def __init__(self, path: str, mode: str = "r") -> None:
        import zarr

        self.path = path
        if not Path(path).exists():
            raise VolumeError(f"volume '{path}' does not exist; check the path")
        try:
            node = zarr.open(path, mode=mode)
        except Exception as err:  # zarr raises several types for unreadable stores
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise VolumeError(f"'{path}' is not a readable zarr store ({reason})") from None
        if not isinstance(node, zarr.Array):
            raise VolumeError(
                f"'{path}' is a zarr group, not an array; point the path at an array inside it"
            )
        self.array = node
        self.zarr_format: int = node.metadata.zarr_format
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
