"""Neuroglancer precomputed volumes through cloud-volume.

cloud-volume speaks x, y, z (and channel last); this module is the only place that converts to
chunkflow's (c,) z, y, x. Paths are given to cloud-volume unchanged, less a ``precomputed://``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkflow.errors import VolumeError, first_line
from chunkflow.geometry import Box, vec
from chunkflow.volumes.base import Volume, VolumeInfo

if TYPE_CHECKING:
    from chunkflow.config import OutputSettings

PREFIXES = ("precomputed://", "file://", "gs://", "s3://")
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
# where chunkflow records, in the info, what the precomputed format itself cannot say
INFO_KEY = "chunkflow"


def cloudpath(path: str) -> str:
    """The path as cloud-volume takes it."""
    return path.removeprefix("precomputed://")


def _local_dir(path: str) -> Path | None:
    url = cloudpath(path)
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _open(path: str, mip: int, mode: str, info: dict[str, Any] | None = None, compress=None):
    from cloudvolume import CloudVolume

    fill_missing = mode != "r"  # an unwritten output chunk reads as 0; a missing input chunk fails
    return CloudVolume(
        cloudpath(path),
        mip=mip,
        info=info,
        progress=False,
        parallel=1,  # one block job is one process: no pools fighting the job's own threads
        bounded=True,
        fill_missing=fill_missing,
        non_aligned_writes=False,
        cache=False,
        compress=compress,
    )


class PrecomputedVolume(Volume):
    """One scale (``mip``) of a precomputed image. Writes must cover whole storage chunks."""

    def __init__(self, path: str, mode: str = "r", mip: int = 0) -> None:
        from cloudvolume.exceptions import InfoUnavailableError, ScaleUnavailableError

        self.path = path
        try:
            meta = _open(path, 0, mode).info
            extra = meta.get(INFO_KEY, {})
            self.cv = _open(path, mip, mode, info=meta, compress=extra.get("compress"))
        except InfoUnavailableError:
            raise VolumeError(
                f"'{path}' has no precomputed info file; check the path (precomputed://file:///…, gs://…, s3://…)"
            ) from None
        except ScaleUnavailableError:
            raise VolumeError(
                f"'{path}' has no mip {mip} (it has mips 0..{len(meta['scales']) - 1}); fix input.mip"
            ) from None
        except Exception as err:  # cloud-volume and cloud-files raise many kinds
            raise VolumeError(
                f"'{path}' is not a readable precomputed volume ({first_line(err)})"
            ) from None
        self.mip = mip
        self.scale: dict[str, Any] = self.cv.scale
        self.extra: dict[str, Any] = extra
        channels = int(self.cv.num_channels)
        self.info = VolumeInfo(
            shape=vec(int(s) for s in self.scale["size"][::-1]),
            dtype=str(self.cv.dtype),
            chunk_size=vec(int(c) for c in self.scale["chunk_sizes"][0][::-1]),
            voxel_offset=vec(int(o) for o in self.scale["voxel_offset"][::-1]),
            resolution=tuple(float(r) for r in self.scale["resolution"][::-1]),  # type: ignore[arg-type]
            channels=channels if channels > 1 or extra.get("channel_axis") else None,
        )

    # -- the registry's interface --------------------------------------------------------------

    @classmethod
    def handles(cls, path: str) -> bool:
        return path.startswith(PREFIXES)

    @classmethod
    def exists(cls, path: str) -> bool:
        local = _local_dir(path)
        if local is not None:
            return local.exists()  # a folder without an info file is refused, not written into
        from cloudfiles import CloudFiles

        try:
            return bool(CloudFiles(cloudpath(path)).exists("info"))
        except Exception as err:
            raise VolumeError(
                f"cannot reach '{path}' ({first_line(err)}); check the URL and credentials"
            ) from None

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputSettings) -> PrecomputedVolume:
        """Write the info of an unsharded precomputed image with the geometry of ``info``."""
        from cloudvolume import CloudVolume

        if info.dtype not in DTYPES:
            raise VolumeError(
                f"neuroglancer precomputed has no {info.dtype} data type; "
                "use output.dtype float32 or uint8 with a precomputed output"
            )
        if output.shard_size is not None:
            raise VolumeError(
                "chunkflow writes unsharded precomputed outputs; remove output.shard_size "
                "(zarr v3 only) or write a zarr output"
            )
        meta = CloudVolume.create_new_info(
            num_channels=info.channels or 1,
            layer_type="image",
            data_type=info.dtype,
            encoding="raw",
            resolution=list(info.resolution[::-1]),
            voxel_offset=list(info.voxel_offset[::-1]),
            volume_size=list(info.shape[::-1]),
            chunk_size=list(info.chunk_size[::-1]),
        )
        meta[INFO_KEY] = {
            "channel_axis": info.channels is not None,
            "compress": _compress(output.encoding),
        }
        try:
            _open(path, 0, "w", info=meta).commit_info()
        except Exception as err:
            raise VolumeError(
                f"cannot create '{path}' ({first_line(err)}); check the path"
            ) from None
        return cls(path, mode="r+")

    def format_mismatches(self, output: OutputSettings) -> list[str]:
        """What of the stored format, beyond the geometry, disagrees with ``output``."""
        out = []
        if self.scale.get("encoding") != "raw":
            out.append(f"encoding {self.scale.get('encoding')} (expected raw)")
        if "sharding" in self.scale:
            out.append("sharded chunks (expected unsharded)")
        found, wanted = self.extra.get("compress"), _compress(output.encoding)
        if found != wanted:
            out.append(f"encoding {_encoding(found)} (expected {output.encoding})")
        return out

    # -- reads and writes ----------------------------------------------------------------------

    def _read(self, index: tuple[slice, ...]) -> np.ndarray:
        box = self._global(index)
        if box.empty:
            lead = () if self.info.channels is None else (self.info.channels,)
            return np.zeros((*lead, *box.shape), dtype=self.info.dtype)
        (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
        from cloudvolume.exceptions import EmptyVolumeException

        try:
            cutout = np.asarray(self.cv[x0:x1, y0:y1, z0:z1])
        except EmptyVolumeException:
            raise VolumeError(
                f"'{self.path}' lacks storage chunks inside {box} (z, y, x); the volume is incomplete"
            ) from None
        # one voxel comes back as (c, 1, 1, 1): reshape, which is exact when x, y, z are all 1
        xyzc = cutout.reshape(x1 - x0, y1 - y0, z1 - z0, int(self.cv.num_channels))
        czyx = np.ascontiguousarray(xyzc.transpose(3, 2, 1, 0))
        return czyx if self.info.channels is not None else czyx[0]

    def _write(self, index: tuple[slice, ...], data: np.ndarray) -> None:
        box = self._global(index)
        self._check_aligned(box)
        czyx = data if data.ndim == 4 else data[None]
        (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
        self.cv[x0:x1, y0:y1, z0:z1] = czyx.transpose(3, 2, 1, 0)

    def _check_aligned(self, box: Box) -> None:
        """Only whole storage chunks may be written (a partial one would race a neighbour)."""
        info = self.info
        for axis, a, b, o, c, end in zip(
            "zyx",
            box.start,
            box.stop,
            info.voxel_offset,
            info.chunk_size,
            info.bounds.stop,
            strict=True,
        ):
            if (a - o) % c or ((b - o) % c and b != end):
                raise VolumeError(
                    f"write to {box} (z, y, x) in '{self.path}' does not cover whole storage chunks "
                    f"of {list(info.chunk_size)} along {axis}; blocks must be whole multiples of output.chunk_size"
                )


def _compress(encoding: str) -> str | bool:
    """cloud-volume's ``compress`` for ``output.encoding``: gzip'd raw chunks, or plain ones."""
    return "gzip" if encoding == "gzip" else False


def _encoding(compress: object) -> str:
    """The ``output.encoding`` an info's recorded ``compress`` stands for ("unknown": not ours)."""
    return {"gzip": "gzip", False: "raw"}.get(compress, "unknown")  # type: ignore[call-overload]
