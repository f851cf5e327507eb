"""OME-Zarr multiscale images (NGFF 0.4 on zarr v2, 0.5 on zarr v3): one scale as a volume.

The geometry comes from the multiscales metadata: the scale's ``scale`` is the resolution and
its ``translation`` (world units) divided by the scale is the voxel offset, both converted to
nanometres when the axes name a unit. The array of a scale is a plain zarr array, so reads,
writes, sharding and the format checks are ``ZarrVolume``'s.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chunkflow.errors import VolumeError
from chunkflow.geometry.boxes import vec
from chunkflow.volumes.base import VolumeInfo
from chunkflow.volumes.stores import StorageOptions, location_exists, read_metadata, zarr_store
from chunkflow.volumes.zarr_volume import ZarrVolume, create_array

if TYPE_CHECKING:
    from chunkflow.volumes.options import OutputOptions

NANOMETRES = {
    "angstrom": 0.1,
    "picometer": 1e-3,
    "nanometer": 1.0,
    "micrometer": 1e3,
    "millimeter": 1e6,
    "meter": 1e9,
}


def multiscales(group: str, options: StorageOptions | None = None) -> dict[str, Any] | None:
    """The first multiscales entry of the zarr group at ``group`` (NGFF 0.4 or 0.5), or None."""
    for name in ("zarr.json", ".zattrs"):
        try:
            meta = json.loads(read_metadata(group, name, options) or b"null")
        except ValueError:
            continue
        if not isinstance(meta, dict):
            continue
        attrs = meta.get("attributes", {}) if name == "zarr.json" else meta
        found = attrs.get("ome", attrs).get("multiscales")
        if isinstance(found, list) and found and isinstance(found[0], dict):
            return found[0]
    return None


def _split(path: str, options: StorageOptions | None = None) -> tuple[str, str | None]:
    """(the image group, the scale's dataset path or None) for a group or ``group/<scale>``."""
    path = path.rstrip("/")
    if path.endswith(".ome.zarr") or multiscales(path, options) is not None:
        return path, None
    parent, _, name = path.rpartition("/")
    return (parent, name) if parent else (path, None)


def _transform(transforms: Any, kind: str, ndim: int, path: str) -> list[float]:
    """The ``scale`` or ``translation`` of a list of coordinate transformations (identity when
    absent), one number per axis."""
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == kind:
            try:
                values = [float(v) for v in t[kind]]
            except (KeyError, TypeError, ValueError):
                values = []
            if len(values) != ndim:
                raise VolumeError(
                    f"'{path}' has the {kind} {t.get(kind)!r}; it needs {ndim} numbers, one per axis"
                )
            return values
    return [1.0 if kind == "scale" else 0.0] * ndim


class OmeZarrVolume(ZarrVolume):
    """One scale of an OME-Zarr image: ``image.ome.zarr`` (scale ``mip``, default the first) or
    ``image.ome.zarr/<dataset path>``. As an output (path ending in ``.ome.zarr``), scale 0."""

    def __init__(
        self,
        path: str,
        mode: str = "r",
        mip: int = 0,
        options: StorageOptions | None = None,
        fill_missing: bool | None = None,
    ) -> None:
        root, dataset = _split(path, options)
        meta = multiscales(root, options)
        if meta is None:
            raise VolumeError(f"'{root}' holds no OME-Zarr multiscales metadata; check the path")
        datasets = meta.get("datasets", [])
        paths = [str(d.get("path")) for d in datasets]
        if dataset is not None and mip:
            raise VolumeError(f"'{path}' names a scale already; remove input.mip")
        if dataset is None and mip >= len(paths):
            raise VolumeError(f"'{root}' has no mip {mip} (it has scales {paths}); fix input.mip")
        if dataset is not None and dataset not in paths:
            raise VolumeError(f"'{root}' has no scale '{dataset}' (it has {paths}); fix the path")
        index = mip if dataset is None else paths.index(dataset)
        super().__init__(f"{root}/{paths[index]}", mode, 0, options, fill_missing)
        self.path = path
        self.info = _geometry(self.info, meta, datasets[index], path)

    @classmethod
    def handles(cls, path: str, options: StorageOptions | None = None) -> bool:
        root = _split(path, options)[0]
        return root.endswith(".ome.zarr") or multiscales(root, options) is not None

    @classmethod
    def exists(cls, path: str, options: StorageOptions | None = None) -> bool:
        return location_exists(_split(path, options)[0], options)

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputOptions) -> OmeZarrVolume:
        """An image group with one scale, ``0``, holding the array the blocks write into."""
        import zarr

        root, dataset = _split(path, output.storage_options)
        if dataset is not None:
            raise VolumeError(f"output.path '{path}': name the image group ('*.ome.zarr') itself")
        axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        lead: list[float] = []
        if info.channels is not None:
            axes.insert(0, {"name": "c", "type": "channel"})
            lead = [1.0]
        world = [o * r for o, r in zip(info.voxel_offset, info.resolution, strict=True)]
        image = {
            "name": Path(root).name.removesuffix(".ome.zarr"),
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": lead + list(info.resolution)},
                        {"type": "translation", "translation": [0.0] * len(lead) + world},
                    ],
                }
            ],
        }
        if output.zarr_format == 2:
            attrs: dict[str, Any] = {"multiscales": [{"version": "0.4", **image}]}
        else:
            attrs = {"ome": {"version": "0.5", "multiscales": [image]}}
        zarr.open_group(
            zarr_store(root, "w", output.storage_options),
            mode="w-",
            zarr_format=output.zarr_format,
            attributes=attrs,
        )
        options = output.storage_options
        create_array(
            f"{root}/0", info, output.zarr_format, output.shard_size, options, output.zstd_level
        )
        return cls(root, mode="r+", options=options)


def _geometry(
    info: VolumeInfo, meta: dict[str, Any], dataset: dict[str, Any], path: str
) -> VolumeInfo:
    """``info`` with the resolution and voxel offset of the scale's coordinate transformations."""
    axes = meta.get("axes", [])
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    if names[-3:] != ["z", "y", "x"] or len(names) != len(info.shape) + (info.channels is not None):
        raise VolumeError(
            f"'{path}' has axes {names}; chunkflow reads OME-Zarr images with axes (c,) z, y, x"
        )
    ndim = len(names)
    inner, outer = dataset.get("coordinateTransformations"), meta.get("coordinateTransformations")
    scale = _transform(inner, "scale", ndim, path)
    shift = _transform(inner, "translation", ndim, path)
    outer_scale = _transform(outer, "scale", ndim, path)
    outer_shift = _transform(outer, "translation", ndim, path)
    # world = outer_scale * (scale * voxel + shift) + outer_shift
    shift = [s * o + t for s, o, t in zip(shift, outer_scale, outer_shift, strict=True)]
    scale = [s * o for s, o in zip(scale, outer_scale, strict=True)]
    unit_names = [a.get("unit", "nanometer") if isinstance(a, dict) else "nanometer" for a in axes]
    unknown = sorted(set(unit_names[-3:]) - set(NANOMETRES))
    if unknown:
        raise VolumeError(
            f"'{path}' has the unit {unknown[0]!r}; chunkflow knows {', '.join(NANOMETRES)}"
        )
    units = [NANOMETRES[u] for u in unit_names[-3:]]
    # rounded to 12 digits: 0.004 µm is 4 nm, not 4.000000000000001
    resolution = tuple(float(f"{s * u:.12g}") for s, u in zip(scale[-3:], units, strict=True))
    if any(r <= 0 for r in resolution):
        raise VolumeError(f"'{path}' has scale {scale}; it must be positive")
    raw = [t / s for t, s in zip(shift[-3:], scale[-3:], strict=True)]
    offset = vec(round(o) for o in raw)
    if any(abs(o - r) > 1e-6 for o, r in zip(offset, raw, strict=True)):
        raise VolumeError(
            f"'{path}' has a translation that is not a whole number of voxels ({raw}); "
            "chunkflow needs voxel-aligned scales"
        )
    return replace(info, voxel_offset=offset, resolution=resolution)  # type: ignore[arg-type]
