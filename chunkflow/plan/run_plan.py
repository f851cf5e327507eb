"""A run's plan: the settings resolved against the input volume (ROI, block grid, patches)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from chunkflow.engine.dtypes import scale_input
from chunkflow.engine.models import ModelFiles, check_model_files, model_sha256
from chunkflow.errors import ConfigError, ModelError, VolumeError
from chunkflow.geometry.boxes import (
    Box,
    Vec,
    bounding_box,
    boxes_product,
    elementwise,
    minimum,
    misaligned_axes,
    sub,
)
from chunkflow.geometry.grid import Block, BlockGrid, nearest_multiples
from chunkflow.geometry.placement import (
    Intervals,
    PatchGeometry,
    crop_intervals,
    exact_intervals,
    lattice_count,
)
from chunkflow.plan.input_identity import input_identity
from chunkflow.plan.job_memory import default_piece_size, job_memory_bytes
from chunkflow.settings import OutputSettings, Settings
from chunkflow.volumes import (
    Volume,
    VolumeInfo,
    find_output,
    open_input,
    output_backend,
    refuse_mismatch,
)
from chunkflow.volumes.hdf5 import SPELLING as HDF5_SPELLING
from chunkflow.zoo.package import ZooModel, check_fits, is_package, read_package
from chunkflow.zoo.processing import Processing, Statistics
from chunkflow.zoo.statistics import measure_input


@dataclass(frozen=True)
class RunPlan:
    settings: Settings
    input_info: VolumeInfo
    roi: Box
    grid: BlockGrid
    geometry: PatchGeometry
    # what the input is, not what its path says: its stored metadata and a digest of a few of
    # its chunks (``input_identity``), read when planning
    input_volume: dict[str, Any]

    @cached_property
    def blocks(self) -> list[Block]:
        """The blocks to compute: the whole grid, or those the mask selects (its volume is
        read on first use only: `chunkflow run-block` never needs it)."""
        mask = self.settings.mask
        if mask is None:
            return list(self.grid)
        from chunkflow.plan.mask import masked_blocks

        return masked_blocks(self.grid, self.input_info, mask)

    @property
    def block_ids(self) -> list[str]:
        return [block.id for block in self.blocks]

    def patch_intervals(self, block: Block) -> Intervals:
        """Per axis, the output intervals of the patches making up ``block``: the patches are
        every combination of them (``patches``), counted without listing them."""
        if self.settings.inference.placement == "exact":
            return exact_intervals(self.roi, block.box, self.geometry)
        return crop_intervals(block.box, self.geometry, self.settings.inference.crop_margin)

    def patches(self, block: Block) -> list[Box]:
        """Output boxes of the patches whose predictions make up ``block``, in a fixed order."""
        return list(boxes_product(self.patch_intervals(block)))

    def chunk_box(self, patches: list[Box]) -> Box:
        """The input box a block reads: its patches' input boxes together."""
        return self.geometry.input_box(bounding_box(patches))

    def output_info(self, channels: int) -> VolumeInfo:
        """The output volume covers the ROI and inherits the input's resolution."""
        return VolumeInfo(
            shape=self.roi.shape,
            dtype=self.settings.output.dtype,
            chunk_size=self.settings.output.chunk_size,
            voxel_offset=self.roi.start,
            resolution=self.input_info.resolution,
            channels=channels,
        )

    @property
    def storage_unit(self) -> Vec:
        """What a block or piece must hold whole: an output chunk, or a shard when sharded."""
        output = self.settings.output
        return output.shard_size if output.shard_size is not None else output.chunk_size

    def _memory_args(self) -> tuple[Vec, Vec, int, int, int]:
        """The geometry and channel counts that set a block job's memory (``job_memory``).

        Without model.output_channels, 4 output channels are assumed."""
        info = self.input_info
        itemsize = int(np.dtype(info.dtype).itemsize)
        channels = self.settings.model.output_channels or 4
        return (
            self.geometry.output_size,
            self.geometry.context,
            info.channels or 1,
            itemsize,
            channels,
        )

    @cached_property
    def piece_size(self) -> Vec:
        """The pieces a block streams through memory in: ``piece_size`` as configured, else the
        largest that fits ``job_memory.PIECE_BUDGET_BYTES`` (whole storage units)."""
        if self.settings.piece_size is not None:
            return minimum(self.settings.piece_size, self.settings.block_size)
        return default_piece_size(self.settings.block_size, self.storage_unit, *self._memory_args())

    def job_memory_bytes(self) -> int:
        """The estimated peak memory of one block job (see ``chunkflow.plan.job_memory``)."""
        return job_memory_bytes(self.piece_size, self.settings.block_size, *self._memory_args())

    @cached_property
    def model_files(self) -> ModelFiles:
        """The model's bytes, read once: a plan that loads its model hashes what it loads
        (``model_sha256``). Refused in one line if the file changed since this plan hashed it."""
        files = ModelFiles.read(self.settings.model)
        hashed = self.__dict__.get("model_sha256")  # the digest taken from the file before
        if hashed is not None and hashed != files.sha256:
            raise ModelError(
                f"model '{self.settings.model.path}' changed while this process used it "
                f"(sha256 {hashed[:12]}…, now {files.sha256[:12]}…); rerun once the file "
                "stays as it is"
            )
        return files

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the model file(s): of the bytes loaded once they are (``model_files``),
        else of the files, read in pieces (planning holds no model in memory)."""
        if "model_files" in self.__dict__:
            return self.model_files.sha256
        return model_sha256(self.settings.model)

    @cached_property
    def fingerprint(self) -> str:
        """The result fingerprint: every setting that can change the written numbers, and the
        model's content and the input's identity (``Settings.result_fingerprint``)."""
        return self.settings.result_fingerprint(self.model_sha256, self.input_volume)

    def check_output(self, volume: Volume, results: bool = True) -> None:
        """Refuse the open output ``volume`` if it disagrees with this plan (ROI, dtype, chunks,
        resolution, format options, and model.output_channels when set), without loading the
        model; with ``results``, also unless it records this plan's fingerprint.

        Without model.output_channels the store's channel count is taken as given: only a model
        forward pass can check it.
        """
        channels = self.settings.model.output_channels or volume.info.channels
        refuse_mismatch(volume, self.output_info(channels), self.settings.output)
        if results:
            refuse_other_results(volume, self.fingerprint)

    def existing_output(self, results: bool = True) -> Volume | None:
        """The output store opened for writing and checked by ``check_output``; None when
        nothing exists at ``output.path`` yet."""
        volume = find_output(self.settings.output, mode="r+")
        if volume is None:
            return None
        self.check_output(volume, results)
        return volume

    @cached_property
    def package(self) -> ZooModel | None:
        """What the bioimage.io package ``model.path`` names says; None for a model file."""
        path = self.settings.model.path
        return read_package(path) if is_package(path) else None

    @cached_property
    def _processing(self) -> tuple[Processing, Processing] | None:
        package = self.package
        if package is None:
            return None
        statistics = Statistics.from_config(self.settings.model.statistics)
        return (
            Processing(package.preprocessing, statistics),
            Processing(package.postprocessing, statistics),
        )

    def network_input(self, raw: np.ndarray) -> np.ndarray:
        """The network's float32 input made from ``raw`` (the input as stored): scaled as
        ``input.scale`` says, or a package's preprocessing of it (``raw`` is kept)."""
        if self._processing is None:
            return scale_input(raw, self.settings.input.scale)
        return self._processing[0](raw.astype(np.float32))

    def postprocess(self, values: np.ndarray) -> np.ndarray:
        """A package's postprocessing of the blended prediction ``values`` (float32, consumed);
        for a model file, ``values`` as they are."""
        return values if self._processing is None else self._processing[1](values)

    def whole_roi_patch_count(self) -> int:
        """Patches one pass over the whole ROI would run (the exact lattice)."""
        z, y, x = elementwise(
            lattice_count, self.roi.shape, self.geometry.output_size, self.geometry.stride
        )
        return z * y * x


def refuse_other_results(volume: Volume, fingerprint: str) -> None:
    """Refuse the open output ``volume``, untouched, unless it records the result
    ``fingerprint``: its blocks hold another run's results (or of unknown settings)."""
    if volume.info.fingerprint != fingerprint:
        raise other_results(volume, fingerprint)


def other_results(volume: Volume, fingerprint: str) -> VolumeError:
    """The one-line error for an output that does not record the result ``fingerprint``."""
    stored = volume.info.fingerprint
    held = f"fingerprint {stored}" if stored else "no result fingerprint"
    return VolumeError(
        f"output '{volume.path}' holds the results of other settings ({held}; this config's is "
        f"{fingerprint}); set output.replace: true to recompute every block into it, or choose "
        "another output.path"
    )


def _resolve_roi(settings: Settings, bounds: Box) -> Box:
    offset = settings.roi_offset if settings.roi_offset is not None else bounds.start
    size = settings.roi_size if settings.roi_size is not None else sub(bounds.stop, offset)
    if any(s <= 0 for s in size):
        raise ConfigError(
            f"roi.offset {list(offset)} lies outside the input bounds {bounds}; fix roi.offset"
        )
    roi = Box.from_shape(offset, size)
    if not bounds.contains(roi):
        raise ConfigError(
            f"the ROI {roi} reaches outside the input volume {bounds}; "
            "shrink roi.size or move roi.offset (the ROI must lie inside the input)"
        )
    return roi


def _check_block_size(block_size: Vec, output: OutputSettings, key: str = "block_size") -> None:
    """Blocks (and the pieces they stream in) must hold whole storage objects: chunks, or shards
    when the output is sharded."""
    unit, name = output.chunk_size, "output.chunk_size"
    if output.shard_size is not None:
        unit, name = output.shard_size, "output.shard_size"
    bad = misaligned_axes(block_size, unit)
    if not bad:
        return
    pairs = [nearest_multiples(b, c) for b, c in zip(block_size, unit, strict=True)]
    lower = [lo if b % c else b for (lo, _), b, c in zip(pairs, block_size, unit, strict=True)]
    upper = [hi if b % c else b for (_, hi), b, c in zip(pairs, block_size, unit, strict=True)]
    options = " or ".join(str(o) for o in dict.fromkeys(map(str, (lower, upper))))
    raise ConfigError(
        f"{key} {list(block_size)} is not a whole multiple of {name} "
        f"{list(unit)} along {', '.join(bad)}; nearest valid {key.removesuffix('_size')} sizes: {options}"
    )


def _check_sizes(settings: Settings) -> None:
    _check_block_size(settings.block_size, settings.output)
    if settings.piece_size is not None:
        _check_block_size(settings.piece_size, settings.output, "piece_size")


def _check_patch_fits(roi: Box, output_patch: Vec) -> None:
    for axis, size, patch in zip("zyx", roi.shape, output_patch, strict=True):
        if patch > size:
            raise ConfigError(
                f"model.output_patch_size is {patch} along {axis} but the ROI is only {size} voxels: "
                "padding only supplies context, the predicted patch must fit in the ROI; "
                "use a smaller patch (model.input_patch_size, and model.output_patch_size if "
                "set) or a larger roi.size"
            )


def _location(path: str) -> str:
    """Where ``path`` keeps its data, comparable with another: a URL as it is (less a
    ``precomputed://`` prefix; ``file://`` as a local path), a local path resolved (an HDF5
    dataset as a folder of its file), with a trailing separator."""
    path = path.removeprefix("precomputed://").removeprefix("file://")
    if "://" not in path:
        hdf5 = HDF5_SPELLING.match(path)  # file.h5:/dataset, as the HDF5 backend reads it
        file, dataset = (hdf5["file"], hdf5["dataset"] or "") if hdf5 else (path, "")
        path = os.path.realpath(file) + dataset
    return path.rstrip("/") + "/"


def _check_apart(settings: Settings) -> None:
    """Refuse, in one line, an output that lies in the input (or holds it), and a state dir
    inside either: writing there would change data that is read, or mix the run's files in."""
    where = {
        "input.path": _location(settings.input.path),
        "output.path": _location(settings.output.path),
        "state_dir": _location(settings.state_dir),
    }
    for a, b in (
        ("output.path", "input.path"),
        ("state_dir", "input.path"),
        ("state_dir", "output.path"),
    ):
        inner, outer = sorted((where[a], where[b]), key=len, reverse=True)
        if inner.startswith(outer):
            raise ConfigError(
                f"{a} '{where[a].rstrip('/')}' and {b} '{where[b].rstrip('/')}' lie one inside "
                f"the other; give {a} a place of its own"
            )


def _with_statistics(settings: Settings, volume: Volume) -> Settings:
    """``settings`` with the input statistics a package's preprocessing needs: those given in
    ``model.statistics`` (refused in one line if some are missing), else measured now
    (``chunkflow.zoo.statistics``)."""
    model = settings.model
    if not is_package(model.path):
        return settings
    package = read_package(model.path)
    check_fits(package, volume.info.channels or 1, model.path)
    needs = Processing(package.preprocessing).needs
    if not needs:
        return settings
    channels = volume.info.channels or 1
    per_channel = any(  # statistics over axes that leave the channel out
        s.needs and "channel" not in (getattr(s, "axes", None) or ("channel",))
        for s in package.preprocessing
    )
    if channels > 1 and per_channel:
        raise ConfigError(
            f"model.path '{model.path}': the package normalises each of the input's {channels} "
            "channels by its own statistics, which chunkflow does not support yet; use a "
            "package that normalises them together, or a single-channel input"
        )
    if model.statistics is not None:
        missing = Statistics.from_config(model.statistics).missing(needs)
        if missing:
            raise ConfigError(
                f"model.statistics lacks {', '.join(missing)}, which the package's preprocessing "
                "needs; add them, or remove model.statistics to have them measured"
            )
        return settings
    measured = measure_input(volume, needs).as_config()
    return replace(settings, model=replace(model, statistics=measured))


def make_plan(settings: Settings) -> RunPlan:
    """Resolve ``settings`` against the input volume (its metadata, and a few of its chunks
    for its identity: ``input_identity``)."""
    # the checks that need no volume first: a mistake there costs no I/O
    check_model_files(settings.model)
    sharded = settings.output.shard_size is not None
    if not sharded:
        _check_sizes(settings)
    try:
        backend = output_backend(settings.output.path, settings.output.storage_options)
    except VolumeError as err:
        raise ConfigError(f"output.path: {err}") from None
    try:  # opened once, for its metadata and identity: no block reads through this handle
        volume = open_input(replace(settings.input, fill_missing=True))
        input_info, identity = volume.info, input_identity(volume)
    except VolumeError as err:
        raise ConfigError(f"input.path: {err}") from None
    _check_apart(settings)  # once the input is known to be a volume
    settings = _with_statistics(settings, volume)
    roi = _resolve_roi(settings, input_info.bounds)
    model = settings.model
    _check_patch_fits(roi, model.output_patch_size)
    backend.check_layout(settings.output, roi.shape)
    if sharded:  # after the layout check: a shard's shape may depend on the output's
        _check_sizes(settings)
    geometry = PatchGeometry(
        model.input_patch_size, model.output_patch_size, settings.inference.overlap
    )
    grid = BlockGrid(roi, settings.block_size)
    return RunPlan(settings, input_info, roi, grid, geometry, identity)
