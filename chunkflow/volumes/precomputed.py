"""Neuroglancer precomputed volumes through cloud-volume.

cloud-volume speaks x, y, z (and channel last); this module is the only place that converts to
chunkflow's (c,) z, y, x. Paths are given to cloud-volume unchanged, less a ``precomputed://``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkflow.errors import ChunkflowError, ConfigError, VolumeError, first_line
from chunkflow.geometry.boxes import AXES, Box, Vec, ceil_div, elementwise, vec
from chunkflow.geometry.grid import BlockGrid
from chunkflow.volumes.base import Volume, VolumeInfo, shard_size_mismatch
from chunkflow.volumes.stores import (
    StorageOptions,
    cloudvolume_path,
    names_zarr,
    precomputed_option_error,
)

if TYPE_CHECKING:
    from chunkflow.volumes.options import OutputOptions

PREFIXES = ("precomputed://", "file://", "gs://", "s3://")
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
# where chunkflow records, in the info, what the precomputed format itself cannot say
INFO_KEY = "chunkflow"
# at most 2**10 chunks share one minishard index: small index reads for a viewer
MINISHARD_CHUNKS_BITS = 10
# cloud-volume colours some messages for a terminal
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def cloudpath(path: str) -> str:
    """The path as written, less a ``precomputed://`` (as a viewer takes it)."""
    return path.removeprefix("precomputed://")


def reached(path: str, options: StorageOptions | None = None) -> str:
    """The path as cloud-volume reaches it, with the volume's S3 endpoint spelled in; a
    ConfigError for storage options that cloud-volume lacks."""
    other = sorted(set(options or {}) - {"endpoint_url"})
    if other:
        raise ConfigError(precomputed_option_error(f"storage_options.{other[0]}", path))
    url = cloudpath(path)
    if not url.startswith("s3://"):
        return url
    url = cloudvolume_path(url, options)
    _check_aws_secrets(path, url)
    return url


def _check_aws_secrets(path: str, url: str) -> None:
    """Refuse in one line what cloud-files 6.4 fails on with a KeyError (and a half-built
    connection pool): AWS keys in the environment without ``AWS_SESSION_TOKEN``."""
    from cloudfiles.secrets import aws_credentials

    service, _, rest = url.partition("://")
    try:
        aws_credentials(rest.split("/")[0], service)
    except KeyError:
        raise VolumeError(
            f"cannot reach '{path}': cloud-volume reads AWS_ACCESS_KEY_ID from the environment "
            "only with AWS_SESSION_TOKEN; set that too, or put the keys in "
            "~/.cloudvolume/secrets/aws-secret.json"
        ) from None


def local_dir(path: str) -> Path | None:
    """The folder of a ``file://`` volume; None for a remote one."""
    url = cloudpath(path)
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _open(
    path: str,
    mip: int,
    mode: str,
    info: dict[str, Any] | None = None,
    compress=None,
    options: StorageOptions | None = None,
    fill_missing: bool | None = None,
):
    from cloudvolume import CloudVolume

    if fill_missing is None:  # an unwritten output chunk reads as 0; a missing input chunk fails
        fill_missing = mode != "r"
    return CloudVolume(
        reached(path, options),
        mip=mip,
        info=info,
        progress=False,
        parallel=1,  # one block job is one process: no pools fighting the job's own threads
        bounded=True,
        fill_missing=fill_missing,
        non_aligned_writes=False,
        cache=False,
        compress=compress,
        # a header string: cloud-volume 12.15 hands a bool to S3 as is for shards (refused);
        # and a block rewritten by a rerun must not be served stale from a cache
        cdn_cache="no-cache",
    )


def _read_info(path: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """The volume's info file, fetched once (a CloudVolume is then built from it)."""
    from cloudfiles import CloudFiles
    from cloudvolume.exceptions import InfoUnavailableError

    meta = CloudFiles(reached(path, options)).get_json("info")
    if meta is None:
        raise InfoUnavailableError(path)
    return meta


class PrecomputedVolume(Volume):
    """One scale (``mip``) of a precomputed image. Writes must cover whole storage chunks."""

    output_options = frozenset({"encoding"})

    def __init__(
        self,
        path: str,
        mode: str = "r",
        mip: int = 0,
        options: StorageOptions | None = None,
        fill_missing: bool | None = None,
    ) -> None:
        """``fill_missing`` None: a missing chunk fails a read and reads as 0 when writing;
        True or False: as given (cloud-volume's own ``fill_missing``)."""
        from cloudvolume.exceptions import InfoUnavailableError, ScaleUnavailableError

        self.path = path
        try:
            meta = _read_info(path, options)
            extra = meta.get(INFO_KEY, {})
            compress = extra.get("compress")
            self.cv = _open(path, mip, mode, meta, compress, options, fill_missing)
        except InfoUnavailableError:
            raise VolumeError(
                f"'{path}' has no precomputed info file; check the path (precomputed://file:///…, gs://…, s3://…)"
            ) from None
        except ScaleUnavailableError:
            raise VolumeError(
                f"'{path}' has no mip {mip} (it has mips 0..{len(meta['scales']) - 1}); fix input.mip"
            ) from None
        except ChunkflowError:
            raise
        except Exception as err:  # cloud-volume and cloud-files raise many kinds
            raise VolumeError(
                f"'{path}' is not a readable precomputed volume ({_reason(err)})"
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
            fingerprint=extra.get("fingerprint"),
            store_id=extra.get("store_id"),
        )
        sharding = self.scale.get("sharding")
        self.shard_size: Vec | None = None
        if sharding is not None:
            from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

            xyz = image_shard_shape_from_spec(
                sharding, self.scale["size"], self.scale["chunk_sizes"][0]
            )
            self.shard_size = vec(int(s) for s in xyz[::-1])

    # -- the registry's interface --------------------------------------------------------------

    @classmethod
    def handles(cls, path: str, options: StorageOptions | None = None) -> bool:
        # gs:// and s3:// paths spelled as zarr ('*.zarr', '*.ome.zarr/0') are zarr's
        return path.startswith("precomputed://") or (
            path.startswith(PREFIXES) and not names_zarr(path)
        )

    @classmethod
    def exists(cls, path: str, options: StorageOptions | None = None) -> bool:
        local = local_dir(path)
        if local is not None:
            return local.exists()  # a folder without an info file is refused, not written into
        from cloudfiles import CloudFiles

        try:
            return bool(CloudFiles(reached(path, options)).exists("info"))
        except ChunkflowError:
            raise
        except Exception as err:
            raise VolumeError(
                f"cannot reach '{path}' ({_reason(err)}); check the URL, the endpoint and the "
                "credentials (cloud-volume's secrets or the AWS_* / GOOGLE_* environment)"
            ) from None

    @classmethod
    def check_layout(cls, output: OutputOptions, shape: Vec) -> None:
        """Refuse a data type precomputed lacks, and a ``shard_size`` that no precomputed
        sharding of an output of ``shape`` has."""
        if output.dtype not in DTYPES:
            raise ConfigError(
                f"neuroglancer precomputed has no {output.dtype} data type; "
                "use output.dtype float32 or uint8 with a precomputed output"
            )
        if output.shard_size is not None:
            sharding_spec(shape, output.chunk_size, output.shard_size, output.encoding)

    @classmethod
    def create(cls, path: str, info: VolumeInfo, output: OutputOptions) -> PrecomputedVolume:
        """Write the info of a precomputed image with the geometry of ``info``, sharded when
        ``output.shard_size`` is set."""
        from cloudvolume import CloudVolume

        if info.dtype not in DTYPES:
            raise VolumeError(
                f"neuroglancer precomputed has no {info.dtype} data type; "
                "use output.dtype float32 or uint8 with a precomputed output"
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
        compress = _compress(output.encoding)
        if output.shard_size is not None:
            spec = sharding_spec(info.shape, info.chunk_size, output.shard_size, output.encoding)
            meta["scales"][0]["sharding"] = spec
            compress = False  # the spec gzips each chunk; a gzipped shard file breaks range reads
        meta[INFO_KEY] = {
            "channel_axis": info.channels is not None,
            "compress": compress,
            "fingerprint": info.fingerprint,
            "store_id": info.store_id,
        }
        try:
            _open(path, 0, "w", info=meta, options=output.storage_options).commit_info()
        except ChunkflowError:
            raise
        except Exception as err:
            raise VolumeError(f"cannot create '{path}' ({_reason(err)}); check the path") from None
        return cls(path, mode="r+", options=output.storage_options)

    def record_fingerprint(self, fingerprint: str, store_id: str) -> None:
        results = {"fingerprint": fingerprint, "store_id": store_id}
        self.cv.info[INFO_KEY] = {**self.extra, **results}
        self.cv.commit_info()
        self.extra = self.cv.info[INFO_KEY]
        self.info = replace(self.info, **results)

    def format_mismatches(self, output: OutputOptions) -> list[str]:
        """What of the stored format, beyond the geometry, disagrees with ``output``."""
        out = []
        if self.scale.get("encoding") != "raw":
            out.append(f"encoding {self.scale.get('encoding')} (expected raw)")
        if self.shard_size != output.shard_size:
            out.append(shard_size_mismatch(self.shard_size, output.shard_size))
        elif self.shard_size is not None:  # same shape: then the same shard files, or a race
            wanted = sharding_spec(self.info.shape, self.info.chunk_size, self.shard_size, "raw")
            found = {k: v for k, v in self.scale["sharding"].items() if k != "data_encoding"}
            wanted.pop("data_encoding")
            if found != wanted:
                out.append(f"sharding {found} (expected {wanted})")
        found = _encoding(self.extra.get("compress"))
        if self.shard_size is not None:
            found = self.scale["sharding"]["data_encoding"]
        if found != output.encoding:
            out.append(f"encoding {found} (expected {output.encoding})")
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
        unit = self.shard_size or self.info.chunk_size
        self._check_aligned(box, unit)
        czyx = data if data.ndim == 4 else data[None]
        # cloud-volume writes one whole shard file per call
        pieces = [shard.box for shard in BlockGrid(box, unit)] if self.shard_size else [box]
        for piece in pieces:
            (z0, y0, x0), (z1, y1, x1) = piece.start, piece.stop
            part = czyx[(slice(None), *piece.slices(box.start))]
            self.cv[x0:x1, y0:y1, z0:z1] = part.transpose(3, 2, 1, 0)

    def _check_aligned(self, box: Box, unit: Vec) -> None:
        """Only whole storage chunks (or shards) may be written: a partial one races a neighbour."""
        info = self.info
        for axis, a, b, o, c, end in zip(
            "zyx", box.start, box.stop, info.voxel_offset, unit, info.bounds.stop, strict=True
        ):
            if (a - o) % c or ((b - o) % c and b != end):
                what = "shards" if self.shard_size else "storage chunks"
                raise VolumeError(
                    f"write to {box} (z, y, x) in '{self.path}' does not cover whole {what} "
                    f"of {list(unit)} along {axis}; blocks must be whole multiples of them"
                )


def sharding_spec(shape: Vec, chunk: Vec, shard: Vec, encoding: str) -> dict[str, Any]:
    """The ``neuroglancer_uint64_sharded_v1`` spec whose shards are ``shard`` voxels (z, y, x).

    A shard is 2**k consecutive chunks of the compressed Morton code, which hands out one bit to
    x, y and z in turn (skipping an axis once it spans the grid), so only some shapes exist;
    any other ``shard`` is a one-line ConfigError naming the one that ``k`` gives.
    """
    from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

    counts = elementwise(operator.floordiv, shard, chunk)
    uneven = [a for a, n in zip(AXES, counts, strict=True) if n & (n - 1)]
    if uneven:
        raise ConfigError(
            f"output.shard_size {list(shard)} must hold a power of two chunks along each axis "
            f"for a precomputed output (not along {', '.join(uneven)}); e.g. "
            f"{[c * (1 << (n.bit_length() - 1)) for c, n in zip(chunk, counts, strict=True)]}"
        )
    grid = elementwise(ceil_div, shape, chunk)
    grid_bits = sum((g - 1).bit_length() for g in grid)
    bits = sum(n.bit_length() - 1 for n in counts)
    minishard_bits = max(0, bits - MINISHARD_CHUNKS_BITS)
    spec = {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "identity",
        "preshift_bits": bits - minishard_bits,
        "minishard_bits": minishard_bits,
        "shard_bits": max(0, grid_bits - bits),
        "minishard_index_encoding": "gzip",
        "data_encoding": encoding,
    }
    xyz = image_shard_shape_from_spec(spec, list(shape[::-1]), list(chunk[::-1]))
    made = vec(int(s) for s in xyz[::-1])
    if made != vec(shard):
        raise ConfigError(
            f"output.shard_size {list(shard)} is not a precomputed shard of this output "
            f"({list(shape)} voxels in chunks of {list(chunk)}): {2**bits} chunks make a shard of "
            f"{list(made)}, as the Morton code adds x, y, z in turn; use output.shard_size {list(made)}"
        )
    return spec


def _reason(err: BaseException) -> str:
    """Why cloud-volume failed, in a few words (without a terminal's colours)."""
    return first_line(ValueError(ANSI_ESCAPE.sub("", str(err))))


def _compress(encoding: str) -> str | bool:
    """cloud-volume's ``compress`` for ``output.encoding``: gzip'd raw chunks, or plain ones."""
    return "gzip" if encoding == "gzip" else False


def _encoding(compress: object) -> str:
    """The ``output.encoding`` an info's recorded ``compress`` stands for ("unknown": not ours)."""
    return {"gzip": "gzip", False: "raw"}.get(compress, "unknown")  # type: ignore[call-overload]
