"""Zarr arrays (format 2 and 3, sharded or not) as volumes; geometry in the attributes."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.errors import ConfigError, VolumeError, first_line
from chunkflow.geometry.boxes import Box, Vec, vec
from chunkflow.volumes.attributes import info_from_attrs, results_attrs
from chunkflow.volumes.base import Volume, VolumeInfo, refuse_mip, shard_size_mismatch
from chunkflow.volumes.stores import StorageOptions, is_url, read_metadata, zarr_store

if TYPE_CHECKING:
    import zarr

    from chunkflow.volumes.options import OutputOptions


ZSTD_LEVEL = 1  # zarr's default, 3, encodes a prediction with over twice the CPU (feed.py)


def is_zarr_array(path: str, options: StorageOptions | None = None) -> bool:
    """Whether ``path`` (a folder or a URL) holds zarr array metadata (format 3 or 2)."""
    if read_metadata(path, ".zarray", options) is not None:
        return True
    try:
        meta = json.loads(read_metadata(path, "zarr.json", options) or b"{}")
        return meta.get("node_type") == "array"
    except ValueError:
        return False


class ZarrVolume(Volume):
    """A zarr array, format 2 or 3, sharded or not (``path`` ends in ``.zarr``, or holds one),
    on disk or in an object store (see ``chunkflow.volumes.stores``)."""

    output_options = frozenset({"zstd_level"})

    def __init__(
        self,
        path: str,
        mode: str = "r",
        mip: int = 0,
        options: StorageOptions | None = None,
        fill_missing: bool | None = None,
    ) -> None:
        """``fill_missing`` None reads a chunk the store does not hold as the fill value, as
        zarr does; for an input, False refuses it and True counts it (``missing_chunks``)."""
        import zarr

        refuse_mip(path, mip)
        self.path = path
        if not self.exists(path, options):
            raise VolumeError(f"volume '{path}' does not exist; check the path")
        store = zarr_store(path, mode, options)
        if fill_missing is not None and mode == "r":
            from zarr.storage import LocalStore

            from chunkflow.volumes.missing_chunks import MissingChunkGuard

            local = isinstance(store, str)
            store = LocalStore(store, read_only=True) if local else store
            store = MissingChunkGuard(store, path, fill_missing)
        try:
            node = zarr.open(store, mode=mode)
        except VolumeError:
            raise
        except Exception as err:  # zarr raises several types for unreadable stores
            reason = first_line(err)
            raise VolumeError(f"'{path}' is not a readable zarr store ({reason})") from None
        if not isinstance(node, zarr.Array):
            raise VolumeError(
                f"'{path}' is a zarr group, not an array; point the path at an array inside it"
            )
        self.array = node
        self.array_path = path  # where its chunks lie (an OME-Zarr volume's path names the image)
        self.zarr_format: int = node.metadata.zarr_format
        self.shard_size: Vec | None = None if node.shards is None else vec(node.shards[-3:])
        self.info = info_from_attrs(node.shape, node.dtype, node.chunks, dict(node.attrs), path)

    @classmethod
    def handles(cls, path: str, options: StorageOptions | None = None) -> bool:
        return path.rstrip("/").endswith(".zarr") or is_zarr_array(path, options)

    def _read(self, index: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[index])

    def _write(self, index: tuple[slice, ...], data: np.ndarray) -> None:
        if holds_no_empty_chunk(self.array, index, data):
            self.array.with_config({"write_empty_chunks": True})[index] = data
        else:
            self.array[index] = data

    def storage_stamp(self, box: Box) -> str | None:
        """The name, size and modification time of each chunk (or shard) object holding
        ``box``, digested; None for a store in a bucket (``stat`` is a request per object)."""
        if is_url(self.path):
            return None
        grid = self.array.shards or self.array.chunks
        bounds = [
            (0, n) if i.start is None else (i.start, i.stop)
            for i, n in zip(self._local(box), self.array.shape, strict=True)
        ]  # a channel axis: all
        cells = [range(lo // g, -(-hi // g)) for (lo, hi), g in zip(bounds, grid, strict=True)]
        digest = hashlib.sha256()
        for coords in itertools.product(*cells):
            key = self.array.metadata.encode_chunk_key(coords)
            try:
                stat = os.stat(os.path.join(self.array_path, key))
                digest.update(f"{key} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                digest.update(f"{key} missing\n".encode())
        return digest.hexdigest()

    @classmethod
    def check_options(cls, output: OutputOptions) -> None:
        super().check_options(output)
        if output.shard_size is not None and output.zarr_format != 3:
            raise ConfigError(
                "output.shard_size needs output.zarr_format 3 (zarr v2 has no sharding); "
                "set zarr_format: 3 or remove shard_size"
            )

    def format_mismatches(self, output: OutputOptions) -> list[str]:
        out = []
        if self.zarr_format != output.zarr_format:
            out.append(f"zarr format {self.zarr_format} (expected {output.zarr_format})")
        if self.shard_size != output.shard_size:
            out.append(shard_size_mismatch(self.shard_size, output.shard_size))
        return out

    def record_fingerprint(self, fingerprint: str, store_id: str) -> None:
        self.info = replace(self.info, fingerprint=fingerprint, store_id=store_id)
        self.array.attrs.update(results_attrs(self.info))

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputOptions) -> ZarrVolume:
        """Create an array at ``path`` with the geometry of ``info``: (c, z, y, x) or (z, y, x)."""
        create_array(
            path,
            info,
            output.zarr_format,
            output.shard_size,
            output.storage_options,
            output.zstd_level,
        )
        return cls(path, mode="r+", options=output.storage_options)


def holds_no_empty_chunk(array: zarr.Array, index: tuple[slice, ...], data: np.ndarray) -> bool:
    """Whether every storage chunk that ``data``, written at ``index``, touches gets a voxel other
    than the fill value from it; False where it cannot tell (a fill value other than 0).

    zarr leaves a chunk equal to the fill value unwritten (and deletes one stored), checking
    each chunk with a broadcast comparison on its one event-loop thread: a third of the CPU of
    writing a 3-channel uint8 output. Where this proves no chunk can be empty, zarr is told not
    to look; the proof is usually a chunk's first voxel.
    """
    if array.fill_value != 0 or data.dtype.kind not in "biuf":
        return False
    cuts = []
    for where, n, size in zip(index, data.shape, array.chunks, strict=True):
        lo = where.start or 0
        inner = range(size - lo % size, n, size)
        cuts.append(list(zip([0, *inner], [*inner, n], strict=True)))
    for cell in itertools.product(*cuts):
        part = data[tuple(slice(a, b) for a, b in cell)]
        if not (part[(0,) * part.ndim] or part.any()):  # nonzero: NaN, -0.0 with others
            return False
    return True


def create_array(
    path: str,
    info: VolumeInfo,
    zarr_format: int = 3,
    shard_size: Vec | None = None,
    options: StorageOptions | None = None,
    zstd_level: int | None = None,
) -> None:
    """A zarr array at ``path`` laid out as ``info`` says (``chunk_size`` the inner chunk when
    sharded), its chunks zstd-compressed at ``zstd_level`` (None: ``ZSTD_LEVEL``), with
    ``voxel_offset`` and ``resolution`` attributes (and the fingerprint and store id, if any);
    ``options``: the store's ``storage_options``."""
    import numcodecs
    import zarr
    from zarr.codecs import ZstdCodec

    level = ZSTD_LEVEL if zstd_level is None else zstd_level
    lead = () if info.channels is None else (info.channels,)
    names = ["c", "z", "y", "x"][-len(lead) - 3 :]
    extra = {"dimension_names": names} if zarr_format == 3 else {}
    if shard_size is not None:
        extra["shards"] = (*lead, *shard_size)
    zarr.create_array(
        store=zarr_store(path, "w", options),
        shape=(*lead, *info.shape),
        chunks=(*lead, *info.chunk_size),
        dtype=info.dtype,
        fill_value=0,
        zarr_format=zarr_format,
        compressors=ZstdCodec(level=level) if zarr_format == 3 else numcodecs.Zstd(level=level),
        attributes={
            "voxel_offset": list(info.voxel_offset),
            "resolution": list(info.resolution),
            **results_attrs(info),
        },
        **extra,
    )
