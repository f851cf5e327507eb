"""One block job: read the chunk, infer its patches, write the block, then the done-marker."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from chunkflow import __version__
from chunkflow.dtypes import scale_input, to_output_dtype
from chunkflow.errors import ConfigError, VolumeError
from chunkflow.geometry import Box
from chunkflow.grid import Block
from chunkflow.markers import DoneMarker
from chunkflow.plan import RunPlan, make_plan
from chunkflow.settings import Settings
from chunkflow.volumes import Volume, open_volume, read_padded

log = logging.getLogger(__name__)


def where_it_ran(device: str) -> dict[str, Any]:
    """Host, scheduler job and device facts for the marker."""
    env = os.environ
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_node": env.get("SLURMD_NODENAME"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "device": device,
    }


def open_output(plan: RunPlan) -> Volume:
    """The output store, opened once for the job and refused if it disagrees with the plan."""
    try:
        volume = open_volume(plan.settings.output.path, mode="r+")
    except VolumeError as err:
        raise VolumeError(
            f"output: {err} (it is created by the workflow's create_output rule, "
            "or by `chunkflow create-output`)"
        ) from None
    plan.check_output(volume)  # never write into a store laid out for other settings
    return volume


def read_chunk(plan: RunPlan, volume: Volume, block: Block) -> tuple[list[Box], Box, np.ndarray]:
    """The patches of ``block``, the box of input they read, and that input as stored
    (padded beyond the volume's bounds); a VolumeError if it holds NaN or infinite values."""
    patches = plan.patches(block)
    chunk_box = plan.chunk_box(patches)
    raw = read_padded(volume, chunk_box, plan.settings.input.padding)
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise VolumeError(
            f"block {block.id}: the input in {chunk_box} holds NaN or infinite values, which "
            "would spread into every overlapping patch; repair the input or exclude the region"
        )
    return patches, chunk_box, raw


@dataclass
class BlockRunner:
    """Runs blocks of one plan with one loaded model (loaded once, reused for every block)."""

    plan: RunPlan
    _input: Volume = field(init=False)
    _output: Volume = field(init=False)

    def __post_init__(self) -> None:
        settings = self.plan.settings
        self._output = open_output(self.plan)
        self._input = open_volume(settings.input.path, mip=settings.input.mip)

        import torch

        from chunkflow.devices import resolve_model_device
        from chunkflow.inference import Predictor, keep_freed_memory
        from chunkflow.models import load_model

        keep_freed_memory()
        device = resolve_model_device(settings)
        if settings.inference.device == "auto" and device.type == "cpu":
            log.warning(
                "device auto: no usable CUDA device (CUDA_VISIBLE_DEVICES=%s); running on the CPU",
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        if device.type == "cpu":
            torch.set_num_threads(settings.inference.threads)
        self.predictor = Predictor(
            model=load_model(settings.model, device),
            geometry=self.plan.geometry,
            blend=settings.inference.blend,
            batch_size=settings.inference.batch_size,
            device=device,
            precision=settings.inference.precision,
            output_channels=self._output.info.channels,
            tta=settings.inference.tta,
            affinity_axes=settings.model.affinity_axes,
        )

    def run(self, blocks: list[Block]) -> list[DoneMarker]:
        """Compute and write ``blocks`` in order; return their markers (also written to the
        state dir). While the model computes one block, a thread reads the next block's chunk
        and another writes the previous block and then its marker."""
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            next_read = reader.submit(self._read, blocks[0])
            writes: list[Future[DoneMarker]] = []
            for following in [*blocks[1:], None]:
                loaded = next_read.result()
                if following is not None:
                    next_read = reader.submit(self._read, following)
                result = self._compute(loaded)
                if writes:
                    writes[-1].result()  # one block waits to be written at a time: bounded memory
                # the writer needs no input: drop the chunk now, not when the write is done
                writes.append(writer.submit(self._write, replace(loaded, chunk=None), result))
            return [write.result() for write in writes]

    def _read(self, block: Block) -> _Loaded:
        settings = self.plan.settings
        started = time.time()
        patches, chunk_box, raw = read_chunk(self.plan, self._input, block)
        background = settings.input.background
        empty = background is not None and bool(np.all(raw == background))
        chunk = None if empty else scale_input(raw, settings.input.scale)
        return _Loaded(block, patches, chunk_box, chunk, empty, time.time() - started)

    def _compute(self, loaded: _Loaded) -> tuple[np.ndarray, float]:
        """The block's output values (zeros for a chunk of background) and the seconds taken."""
        started = time.time()
        block = loaded.block
        if loaded.skipped:
            info = self._output.info
            shape = block.box.shape if info.channels is None else (info.channels, *block.box.shape)
            result = np.zeros(shape, dtype=info.dtype)
        else:
            prediction = self.predictor.predict(
                loaded.chunk, loaded.chunk_box, loaded.patches, block.box
            )
            result = to_output_dtype(prediction, self.plan.settings.output.dtype)
        return result, time.time() - started

    def _write(self, loaded: _Loaded, computed: tuple[np.ndarray, float]) -> DoneMarker:
        result, infer_seconds = computed
        block = loaded.block
        started = time.time()
        self._output.write(block.box, result)
        write_seconds = time.time() - started
        skipped = loaded.skipped
        read_seconds = loaded.read_seconds
        marker = DoneMarker(
            block=block.id,
            box=block.box.to_json(),
            chunk_box=loaded.chunk_box.to_json(),
            skipped="background" if skipped else None,
            patches=0 if skipped else len(loaded.patches),
            voxels=block.box.size,
            timings_s={
                "read": round(read_seconds, 4),
                "infer": round(infer_seconds, 4),
                "write": round(write_seconds, 4),
                "total": round(read_seconds + infer_seconds + write_seconds, 4),
            },
            ran_on=where_it_ran(str(self.predictor.device)),
            model_sha256=self.plan.model_sha256,
            fingerprint=self.plan.fingerprint,
            chunkflow_version=__version__,
            output_dtype=str(result.dtype),
            output_sha256=hashlib.sha256(np.ascontiguousarray(result).tobytes()).hexdigest(),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        marker.write(self.plan.settings.state_dir)
        what = "background, skipped" if skipped else f"{len(loaded.patches)} patches"
        log.info("block %s: %s, %.2f s", block.id, what, marker.timings_s["total"])
        return marker


@dataclass(frozen=True)
class _Loaded:
    """A block's input, read: its patches, chunk box and scaled chunk (None when skipped, all
    background, or once computed)."""

    block: Block
    patches: list[Box]
    chunk_box: Box
    chunk: np.ndarray | None
    skipped: bool
    read_seconds: float


def run_blocks(
    settings: Settings, block_ids: list[str], expect_fingerprint: str | None = None
) -> list[DoneMarker]:
    """Run the named blocks in one process: the entry point of `chunkflow run-block`."""
    plan = make_plan(settings)
    if expect_fingerprint is not None and expect_fingerprint != plan.fingerprint:
        raise ConfigError(
            f"the result-affecting settings changed since the workflow was planned "
            f"(fingerprint {plan.fingerprint}, planned {expect_fingerprint}); rerun snakemake"
        )
    try:
        blocks = [plan.grid.block_by_id(b) for b in block_ids]
    except KeyError as err:
        raise ConfigError(f"{err.args[0]}; `chunkflow plan` lists the blocks") from None
    return BlockRunner(plan).run(blocks)
