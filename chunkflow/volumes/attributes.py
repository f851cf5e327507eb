"""The attribute conventions for a volume's geometry, shared by the zarr and HDF5 backends."""

from __future__ import annotations

from typing import Any

from chunkflow.errors import VolumeError
from chunkflow.geometry.boxes import vec
from chunkflow.volumes.base import VolumeInfo

#: the attribute in which an output store records the result fingerprint of what it holds
FINGERPRINT_ATTR = "chunkflow_fingerprint"
#: and the identity the store got when created or taken over (``VolumeInfo.store_id``)
STORE_ID_ATTR = "chunkflow_store_id"


def results_attrs(info: VolumeInfo) -> dict[str, str]:
    """The attributes recording what an output store holds: its fingerprint and identity."""
    pairs = ((FINGERPRINT_ATTR, info.fingerprint), (STORE_ID_ATTR, info.store_id))
    return {name: value for name, value in pairs if value}


def info_from_attrs(
    shape: tuple[int, ...],
    dtype: object,
    chunks: tuple[int, ...] | None,
    attrs: dict[str, Any],
    path: str,
) -> VolumeInfo:
    """The geometry of a (z, y, x) or (c, z, y, x) array whose attributes may hold
    ``resolution`` (or funlib's ``voxel_size``) and ``voxel_offset`` (or daisy's ``offset`` in
    world units), and ``FINGERPRINT_ATTR`` and ``STORE_ID_ATTR``; ``chunks`` None means one
    chunk."""
    ndim = len(shape)
    if ndim not in (3, 4):
        raise VolumeError(
            f"'{path}' has {ndim} dimensions; chunkflow reads (z, y, x) or (c, z, y, x) arrays"
        )
    resolution: tuple[float, ...] = (1.0, 1.0, 1.0)
    for name in ("resolution", "voxel_size"):  # funlib.persistence calls it voxel_size
        if name in attrs:
            resolution = _triple(attrs, name, path, ndim)
            break
    if any(r <= 0 for r in resolution):
        raise VolumeError(f"'{path}' has resolution {list(resolution)}; it must be positive")
    if "voxel_offset" in attrs:
        raw_offset = _triple(attrs, "voxel_offset", path, ndim)
    elif "offset" in attrs:  # daisy / funlib convention: offset in world units
        world = _triple(attrs, "offset", path, ndim)
        raw_offset = tuple(o / r for o, r in zip(world, resolution, strict=True))
    else:
        raw_offset = (0.0, 0.0, 0.0)
    offset = vec(round(o) for o in raw_offset)
    if any(abs(o - r) > 1e-6 for o, r in zip(offset, raw_offset, strict=True)):
        raise VolumeError(
            f"'{path}' has an offset that is not a whole number of voxels "
            f"({[float(o) for o in raw_offset]}); fix its offset or resolution attribute"
        )
    fingerprint, store_id = attrs.get(FINGERPRINT_ATTR), attrs.get(STORE_ID_ATTR)
    return VolumeInfo(
        shape=vec(shape[-3:]),
        dtype=str(dtype),
        chunk_size=vec((chunks or shape)[-3:]),
        voxel_offset=offset,
        resolution=resolution,  # type: ignore[arg-type]
        channels=None if ndim == 3 else int(shape[0]),
        fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        store_id=store_id if isinstance(store_id, str) else None,
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
