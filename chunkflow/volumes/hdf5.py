"""HDF5 datasets as volumes, spelled ``file.h5:/group/dataset`` (also ``.hdf5``, ``.hdf``).

HDF5 takes no concurrent writers, so an output is written as parts: each write (one block) goes
to its own file ``<file>.parts/<z>_<y>_<x>.h5`` (named by the box's start, written to a temporary
name and renamed), and the dataset in ``file.h5`` is a virtual dataset (h5py VDS) over the parts,
built by ``finish`` once every block is done. Until then it reads as zeros; its metadata
(shape, dtype, chunks, voxel offset, resolution, result fingerprint) is there from the start, for
the output checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkflow.errors import VolumeError
from chunkflow.geometry.boxes import Box
from chunkflow.volumes.attributes import info_from_attrs, results_attrs
from chunkflow.volumes.base import Volume, VolumeInfo, refuse_mip

if TYPE_CHECKING:
    from chunkflow.volumes.options import OutputOptions
    from chunkflow.volumes.stores import StorageOptions

SPELLING = re.compile(r"^(?P<file>.+\.(h5|hdf5|hdf))(:(?P<dataset>/.*))?$")


def split(path: str) -> tuple[str, str]:
    """(file, dataset) of ``file.h5:/group/dataset``; a one-line error without the dataset."""
    match = SPELLING.match(path)
    if not match or not match["dataset"] or match["dataset"] == "/":
        raise VolumeError(
            f"'{path}': name the HDF5 dataset too, e.g. '{path.split(':')[0]}:/volumes/raw'"
        )
    return match["file"], match["dataset"]


def _datasets(file: str) -> list[str]:
    import h5py

    found: list[str] = []
    with h5py.File(file, "r") as f:
        f.visititems(
            lambda name, node: found.append("/" + name) if hasattr(node, "shape") else None
        )
    return found


class HDF5Volume(Volume):
    """A dataset of an HDF5 file: read directly; written as parts joined by a virtual dataset."""

    assembles_parts = True

    def __init__(
        self,
        path: str,
        mode: str = "r",
        mip: int = 0,
        options: StorageOptions | None = None,
        fill_missing: bool | None = None,
    ) -> None:
        """``fill_missing`` is taken as given: an HDF5 file is whole or unreadable (a chunk it
        never allocated was never written, and reads as the fill value)."""
        import h5py

        refuse_mip(path, mip)
        self.path = path
        self.file, self.dataset = split(path)
        if not Path(self.file).is_file():
            raise VolumeError(f"volume '{path}': the file '{self.file}' does not exist")
        try:
            with h5py.File(self.file, "r") as f:
                node = f.get(self.dataset)
                if not isinstance(node, h5py.Dataset):
                    raise VolumeError(
                        f"'{self.file}' has no dataset '{self.dataset}' "
                        f"(it has {', '.join(_datasets(self.file)) or 'none'}); fix the path"
                    )
                attrs = dict(node.attrs)
                chunks = tuple(attrs.pop("chunk_size", ())) or node.chunks
                self.info = info_from_attrs(node.shape, node.dtype, chunks, attrs, path)
        except OSError as err:
            raise VolumeError(f"'{self.file}' is not a readable HDF5 file ({err})") from None
        self.parts = Path(f"{self.file}.parts")

    @classmethod
    def handles(cls, path: str, options: StorageOptions | None = None) -> bool:
        return SPELLING.match(path) is not None

    @classmethod
    def exists(cls, path: str, options: StorageOptions | None = None) -> bool:
        match = SPELLING.match(path)
        return match is not None and Path(match["file"]).exists()

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputOptions) -> HDF5Volume:
        """The file with an empty virtual dataset carrying the metadata; no parts yet."""
        if output.shard_size is not None:
            raise VolumeError("output.shard_size applies to zarr outputs; remove it for HDF5")
        file, dataset = split(path)
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        _write_vds(file, dataset, info, [], Path(f"{file}.parts"))
        return cls(path, mode="r+")

    def format_mismatches(self, output: OutputOptions) -> list[str]:
        if output.shard_size is not None:
            return [f"sharding (HDF5 has none; expected shard_size {list(output.shard_size)})"]
        return []

    def record_fingerprint(self, fingerprint: str, store_id: str) -> None:
        import h5py

        self.info = replace(self.info, fingerprint=fingerprint, store_id=store_id)
        with h5py.File(self.file, "r+") as f:
            f[self.dataset].attrs.update(results_attrs(self.info))

    def _read(self, index: tuple[slice, ...]) -> np.ndarray:
        import h5py

        with h5py.File(self.file, "r") as f:
            return np.asarray(f[self.dataset][index])

    def _write(self, index: tuple[slice, ...], data: np.ndarray) -> None:
        """``data`` becomes one part file, replacing an earlier part of the same box whole."""
        import h5py

        self.parts.mkdir(exist_ok=True)
        final = self.parts / part_name(self._global(index))
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        chunks = tuple(min(c, s) for c, s in zip(self._chunks(), data.shape, strict=True))
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=data, chunks=chunks)
        os.replace(tmp, final)

    def _chunks(self) -> tuple[int, ...]:
        lead = () if self.info.channels is None else (self.info.channels,)
        return (*lead, *self.info.chunk_size)

    def finish(self, boxes: Sequence[Box]) -> None:
        """Rebuild the virtual dataset over the parts of ``boxes`` (all of them must exist)."""
        missing = [b for b in boxes if not (self.parts / part_name(b)).is_file()]
        if missing:
            raise VolumeError(
                f"{len(missing)} piece(s) of '{self.path}' are not written yet (e.g. {missing[0]}); "
                "rerun the workflow (with the piece_size the blocks were written in)"
            )
        _write_vds(self.file, self.dataset, self.info, boxes, self.parts)


def part_name(box: Box) -> str:
    return "_".join(str(s) for s in box.start) + ".h5"


def _write_vds(
    file: str, dataset: str, info: VolumeInfo, boxes: Sequence[Box], parts: Path
) -> None:
    """Write ``file`` (to a temporary name, then renamed) with ``dataset`` a virtual dataset
    mapping each box to its part file, by a path relative to ``file``."""
    import h5py

    lead = () if info.channels is None else (info.channels,)
    layout = h5py.VirtualLayout(shape=(*lead, *info.shape), dtype=info.dtype)
    for box in boxes:
        source = h5py.VirtualSource(
            f"{parts.name}/{part_name(box)}", "data", shape=(*lead, *box.shape)
        )
        layout[(..., *box.slices(info.voxel_offset))] = source
    tmp = Path(file).with_name(f".{Path(file).name}.{os.getpid()}.tmp")
    attrs: dict[str, Any] = {
        "voxel_offset": list(info.voxel_offset),
        "resolution": list(info.resolution),
        "chunk_size": list(info.chunk_size),
        **results_attrs(info),
    }
    with h5py.File(tmp, "w") as f:
        f.create_virtual_dataset(dataset, layout, fillvalue=0).attrs.update(attrs)
    os.replace(tmp, file)
