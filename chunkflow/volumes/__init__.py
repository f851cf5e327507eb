"""Volumes by path: open an existing one, or create the output (refusing a mismatching one).

The format follows from the path: the first backend in ``BACKENDS`` whose ``handles(path)`` is
true serves it (see ``chunkflow.volumes.base.Volume`` for what a backend implements). A volume in
an object store may come with ``options``, its ``storage_options`` (see
``chunkflow.volumes.stores``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chunkflow.errors import VolumeError
from chunkflow.volumes.base import Volume, VolumeInfo
from chunkflow.volumes.hdf5 import HDF5Volume
from chunkflow.volumes.ome_zarr import OmeZarrVolume
from chunkflow.volumes.padding import read_padded
from chunkflow.volumes.precomputed import PrecomputedVolume
from chunkflow.volumes.stores import StorageOptions
from chunkflow.volumes.zarr_volume import ZarrVolume

if TYPE_CHECKING:
    from chunkflow.volumes.options import InputOptions, OutputOptions

__all__ = [
    "BACKENDS",
    "Volume",
    "VolumeInfo",
    "backend_for",
    "check_output_options",
    "create_or_check",
    "find_output",
    "open_input",
    "open_output",
    "open_volume",
    "output_backend",
    "StorageOptions",
    "read_padded",
    "refuse_mismatch",
    "volume_exists",
]

# Order matters: the more specific spellings first.
BACKENDS: list[type[Volume]] = [PrecomputedVolume, HDF5Volume, OmeZarrVolume, ZarrVolume]

FORMATS_HINT = (
    "name zarr stores '*.zarr', OME-Zarr images '*.ome.zarr', HDF5 datasets 'file.h5:/dataset'"
)


def _serving(path: str, options: StorageOptions | None = None) -> type[Volume] | None:
    return next((b for b in BACKENDS if b.handles(path, options)), None)


def check_output_options(output: OutputOptions) -> None:
    """Refuse, from the config alone, storage options the output's format does not have; an
    output whose format is unknown is refused by the plan."""
    backend = _serving(output.path, output.storage_options)
    if backend is not None:
        backend.check_options(output)


def backend_for(path: str, options: StorageOptions | None = None) -> type[Volume]:
    """The backend serving ``path``; a one-line VolumeError when none does."""
    backend = _serving(path, options)
    if backend is not None:
        return backend
    if not volume_exists(path, options):
        raise VolumeError(f"volume '{path}' does not exist; check the path")
    raise VolumeError(f"cannot tell the format of '{path}'; {FORMATS_HINT}")


def output_backend(path: str, options: StorageOptions | None = None) -> type[Volume]:
    """The backend that creates (or checks) the output at ``path``, existing or not."""
    backend = _serving(path, options)
    if backend is None:
        raise VolumeError(f"cannot tell the output format of '{path}'; {FORMATS_HINT}")
    return backend


def volume_exists(path: str, options: StorageOptions | None = None) -> bool:
    """Whether anything sits at ``path``, as the backends that handle its spelling see it."""
    return (
        any(b.exists(path, options) for b in BACKENDS if b.handles(path, options))
        or Path(path).exists()
    )


def open_volume(
    path: str,
    mode: str = "r",
    mip: int = 0,
    options: StorageOptions | None = None,
    fill_missing: bool | None = None,
) -> Volume:
    """Open scale ``mip`` of the volume at ``path``; the format follows from the path.
    ``fill_missing``: whether a chunk the store lacks reads as the fill value (None: the
    format's own default; False: a VolumeError naming it)."""
    backend = backend_for(path, options)
    return backend(path, mode=mode, mip=mip, options=options, fill_missing=fill_missing)  # type: ignore[call-arg]


def open_input(input: InputOptions) -> Volume:
    """The run's input volume, at the configured scale, reached with its storage options; a
    chunk missing from its store is an error unless ``input.fill_missing``."""
    return open_volume(
        input.path, mip=input.mip, options=input.storage_options, fill_missing=input.fill_missing
    )


def open_output(output: OutputOptions, mode: str = "r") -> Volume:
    """The run's output volume, reached with its storage options; a one-line VolumeError that
    says how to recover when something exists there that cannot be opened."""
    try:
        return open_volume(output.path, mode=mode, options=output.storage_options)
    except VolumeError as err:
        if not volume_exists(output.path, output.storage_options):
            raise
        raise VolumeError(
            f"{err}; if this output is damaged (e.g. its metadata lost), move it aside or "
            "delete it and rerun: every block is computed anew"
        ) from None


def find_output(output: OutputOptions, mode: str = "r") -> Volume | None:
    """``open_output``, or None when nothing exists at the output's path yet."""
    if not volume_exists(output.path, output.storage_options):
        return None
    return open_output(output, mode)


def refuse_mismatch(volume: Volume, info: VolumeInfo, output: OutputOptions) -> None:
    """Refuse the open output ``volume``, untouched, unless it matches ``info`` and the format
    options of ``output``."""
    diffs = info.differences(volume.info) + volume.format_mismatches(output)
    if diffs:
        raise VolumeError(
            f"output '{volume.path}' exists with different {'; '.join(diffs)}; "
            "delete it or choose another output.path"
        )


def create_or_check(path: str, info: VolumeInfo, output: OutputOptions) -> tuple[Volume, bool]:
    """Create the output volume, or reuse an existing one that matches ``info`` exactly.

    Returns the volume and whether it was created. A mismatching store is refused, never touched.
    """
    options = output.storage_options
    backend = output_backend(path, options)
    if backend.exists(path, options):
        existing = open_volume(path, mode="r+", options=options)
        refuse_mismatch(existing, info, output)
        return existing, False
    return backend.create(path, info, output), True
