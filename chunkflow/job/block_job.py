"""One block job: read the chunk, infer its patches, write the block, then the done-marker."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from chunkflow import __version__
from chunkflow.errors import ChunkflowError, ConfigError, ModelError, VolumeError
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.grid import Block
from chunkflow.geometry.pieces import PieceLayout
from chunkflow.job.piece_state import (
    INPUT_DIGEST,
    DamagedState,
    PieceState,
    PiecesWritten,
    chain_digest,
    input_digest,
    output_digest,
)
from chunkflow.job.piece_values import piece_values
from chunkflow.plan.costs import format_seconds
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import DoneMarker
from chunkflow.state.processes import record_process
from chunkflow.state.run_state import RunState
from chunkflow.volumes import Volume, open_input, open_output, read_padded
from chunkflow.volumes.retries import retries_so_far
from chunkflow.volumes.stores import use_allowed_cpus

log = logging.getLogger(__name__)


def where_it_ran(device: str, cpus: int, peak_gpu_mb: float | None = None) -> dict[str, Any]:
    """Host, scheduler job, device and CPU facts for the marker; on CUDA the most memory the
    block held on the GPU."""
    env = os.environ
    gpu = {} if peak_gpu_mb is None else {"peak_gpu_memory_mb": peak_gpu_mb}
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_node": env.get("SLURMD_NODENAME"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "device": device,
        "cpus": cpus,
        **gpu,
    }


def open_checked_output(plan: RunPlan) -> Volume:
    """The output store, opened once for the job and refused if it disagrees with the plan."""
    try:
        volume = open_output(plan.settings.output, mode="r+")
    except VolumeError as err:
        raise VolumeError(
            f"output: {err} (it is created by the workflow's create_output rule, "
            "or by `chunkflow create-output`)"
        ) from None
    plan.check_output(volume)  # never write into a store laid out for other settings
    return volume


def read_patch_input(
    plan: RunPlan, volume: Volume, patches: list[Box], where: str
) -> tuple[Box, np.ndarray]:
    """The input box that ``patches`` read and that input as stored (padded beyond the
    volume's bounds); a VolumeError naming ``where`` if it holds NaN or infinite values."""
    chunk_box = plan.chunk_box(patches)
    raw = read_padded(volume, chunk_box, plan.settings.input.padding)
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise VolumeError(
            f"{where}: the input in {chunk_box} holds NaN or infinite values, which "
            "would spread into every overlapping patch; repair the input or exclude the region"
        )
    return chunk_box, raw


@dataclass(frozen=True)
class _Input:
    """A piece's input, read: its patches, their input box, the input as stored, its digest and,
    once made, the network's input (None for a piece that computes no patch)."""

    patches: list[Box]
    chunk_box: Box | None
    raw: np.ndarray | None
    digest: str | None
    seconds: float
    scaled: Any = None  # the values' network input (``chunkflow.job.piece_values``)


@dataclass
class _Clock:
    """Seconds spent per stage over a block (reads and writes run beside the compute; their
    sum is ``total``), ``io_wait``: the seconds the compute waited for them, I/O that was not
    hidden, and ``wall``: the block's wall-clock seconds."""

    read: float = 0.0
    infer: float = 0.0
    write: float = 0.0
    io_wait: float = 0.0
    started: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, float]:
        stages = {"read": self.read, "infer": self.infer, "write": self.write}
        times = {**stages, "total": sum(stages.values()), "io_wait": self.io_wait}
        times["wall"] = time.time() - self.started
        return {k: round(v, 4) for k, v in times.items()}

    def waited(self, started: float) -> None:
        """Count the seconds since ``started`` (``time.time()``) as waiting on I/O."""
        self.io_wait += time.time() - started


@dataclass(frozen=True)
class _IOCounts:
    """This process's I/O counters: object-store requests retried, missing input chunks read
    as the fill value (``input.fill_missing``)."""

    retries: int
    missing: int

    @classmethod
    def now(cls) -> _IOCounts:
        from chunkflow.volumes.missing_chunks import missing_so_far

        return cls(retries_so_far(), missing_so_far())

    def since(self, earlier: _IOCounts) -> _IOCounts:
        return _IOCounts(self.retries - earlier.retries, self.missing - earlier.missing)


PROGRESS_EVERY_S = 30.0  # a block job's progress lines come at most this often


@dataclass
class ProgressLines:
    """A block job's progress, printed to stderr (the job's log): after each computed piece,
    at most every ``PROGRESS_EVERY_S`` seconds (every piece with -v), and after the last piece
    always::

        chunkflow: block z0_y1_x0: piece 3/8, patches 120/400, 1.25 Mvoxel/s, about 42 s to go

    The rate counts this job's pieces only (a resumed block's earlier pieces took no time here).
    """

    block: str
    pieces: int
    patches: int
    voxels_ahead: int  # in the pieces this job computes
    pieces_done: int = 0
    patches_done: int = 0
    computed: int = 0  # voxels of the pieces computed by this job
    started: float = field(default_factory=time.monotonic)
    shown: float = -math.inf

    @classmethod
    def resuming(cls, layout: PieceLayout, written: int) -> ProgressLines:
        """The report of ``layout``'s block, whose first ``written`` pieces are written."""
        ahead = layout.pieces[written:]
        return cls(
            layout.block.id,
            len(layout.pieces),
            layout.patch_count,
            sum(piece.box.size for piece in ahead),
            written,
            sum(math.prod(map(len, layout.owned_intervals(p))) for p in layout.pieces[:written]),
        )

    def piece_done(self, patches: int, voxels: int) -> None:
        self.pieces_done += 1
        self.patches_done += patches
        self.computed += voxels
        now = time.monotonic()
        every = 0.0 if log.isEnabledFor(logging.INFO) else PROGRESS_EVERY_S
        if self.pieces_done < self.pieces and now - self.shown < every:
            return
        self.shown = now
        rate = self.computed / max(now - self.started, 1e-9)
        print(
            f"chunkflow: block {self.block}: piece {self.pieces_done}/{self.pieces}, patches "
            f"{self.patches_done}/{self.patches}, {rate / 1e6:.3g} Mvoxel/s, about "
            f"{format_seconds((self.voxels_ahead - self.computed) / rate)} to go",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class BlockRunner:
    """Runs blocks of one plan with one loaded model (loaded once, reused for every block).

    A block streams through memory piece by piece (``chunkflow.geometry.pieces``) in three
    stages: while the model computes one piece (and adds the sums carried into it, nothing
    else: on a GPU node this thread feeds the device), a thread reads, digests and scales the
    next piece's input, and another checks and converts the previous piece's output, then
    writes it, its carried partial sums and the block's progress (``chunkflow.job.piece_state``),
    so a killed job resumes at its first unwritten piece. The values live on the host or, with
    ``values_on_device`` (None: on CUDA, for a model file), on the model's device, where the
    input is scaled and the output converted (``chunkflow.job.piece_values``).
    """

    plan: RunPlan
    state: RunState  # where the blocks' markers and piece progress go
    values_on_device: bool | None = None
    _input: Volume = field(init=False)
    _output: Volume = field(init=False)
    cpus: int = field(init=False)  # the CPUs the job may run on

    def __post_init__(self) -> None:
        settings = self.plan.settings
        self._output = open_checked_output(self.plan)
        self._input = open_input(settings.input)

        import torch

        from chunkflow.engine.devices import PeakMemory, resolve_model_device
        from chunkflow.engine.inference import Predictor, keep_freed_memory
        from chunkflow.engine.models import load_model

        keep_freed_memory()
        self.cpus = use_allowed_cpus()  # zarr's codec threads: the job's CPUs, not the node's
        device = resolve_model_device(settings)
        self._gpu_memory = PeakMemory(device)
        if settings.inference.device == "auto" and device.type == "cpu":
            log.warning(
                "device auto: no usable CUDA device (CUDA_VISIBLE_DEVICES=%s); running on the CPU",
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        if device.type == "cpu":
            torch.set_num_threads(settings.inference.threads)
        self.predictor = Predictor(
            model=load_model(self.plan.model_files, device),  # the bytes the marker names
            geometry=self.plan.geometry,
            blend=settings.inference.blend,
            batch_size=settings.inference.batch_size,
            device=device,
            precision=settings.inference.precision,
            output_channels=self._output.info.channels,
            tta=settings.inference.tta,
            affinity_axes=settings.model.affinity_axes,
        )
        self.plan.model_sha256  # noqa: B018 (of the bytes loaded; then they need no memory)
        self.plan.__dict__.pop("model_files", None)
        self._values = piece_values(self.plan, self.predictor, self.values_on_device)

    def run(self, blocks: list[Block]) -> list[DoneMarker]:
        """Compute and write ``blocks`` in order; return their done-markers (also written to
        the state dir, each once its block is whole)."""
        return [self._stream(block) for block in blocks]

    def _stream(self, block: Block) -> DoneMarker:
        """Compute ``block``; meanwhile its job record names this process (for `status`)."""
        record = self.state.job_record(block.id)
        record_process(record)
        try:
            return self._stream_block(block, restarted=False)
        finally:  # a job that ends, however, is no longer running; one killed leaves its record
            record.unlink(missing_ok=True)

    def _stream_block(self, block: Block, restarted: bool) -> DoneMarker:
        plan = self.plan
        layout = PieceLayout(block, plan.piece_size, plan.patch_intervals(block))
        pieces = layout.pieces
        state = PieceState(self.state, block.id, plan.piece_size, self._output.info.store_id)
        progress = self._resume(state, layout) if len(pieces) > 1 else PiecesWritten()
        clock = _Clock()
        counts = _IOCounts.now()
        self._gpu_memory.reset()
        first = None
        if progress.written == 0:  # the input as stored: the reader makes the network's input
            first = self._read(layout, pieces[0])
            clock.read += first.seconds
            clock.io_wait += first.seconds
            progress = self._all_background(layout, first, clock)
        if progress.skipped:
            progress = self._write_zeros(layout, state, progress, clock)
        else:
            try:
                progress = self._compute_pieces(layout, state, progress, first, clock)
            except DamagedState as err:  # an earlier job's state: never trusted, never stuck
                if restarted:  # damaged again: another process works on this block too
                    raise ChunkflowError(
                        f"block {block.id}: {err} again after computing the block anew; is "
                        "another job computing this block? (`chunkflow status`)"
                    ) from None
                log.warning("block %s: %s; computing the block anew", block.id, err)
                state.clear()
                return self._stream_block(block, restarted=True)
        return self._finish(layout, state, progress, clock, _IOCounts.now().since(counts))

    def _resume(self, state: PieceState, layout: PieceLayout) -> PiecesWritten:
        """The progress of an earlier job on this block, if its carried sums are all there."""
        progress = state.resume()
        if progress.written == 0:
            return progress
        written, pieces = progress.written, layout.pieces
        pairs = [
            (s, t)
            for t in pieces[written:]
            for s in layout.sources(t)
            if layout.position(s) < written
        ]
        missing = state.missing_carries(pairs)
        if missing:
            log.warning(
                "block %s: %d carried sums of the earlier job are missing (e.g. %s); starting "
                "the block over",
                layout.block.id,
                len(missing),
                missing[0],
            )
            state.clear()
            return PiecesWritten()
        log.info("block %s: resuming at piece %d of %d", layout.block.id, written + 1, len(pieces))
        return progress

    def _read(self, layout: PieceLayout, piece: Block) -> _Input:
        """The piece's input as stored (``_network_input`` makes the network's from it)."""
        started = time.time()
        patches = layout.patches(piece)
        if not patches:
            return _Input(patches, None, None, None, time.time() - started)
        where = f"block {layout.block.id}, piece {piece.id}"
        chunk_box, raw = read_patch_input(self.plan, self._input, patches, where)
        digest = input_digest(raw)
        return _Input(patches, chunk_box, raw, digest, time.time() - started)

    def _network_input(self, read: _Input) -> _Input:
        """``read`` with the network's input made from it (by the values' side), its seconds
        counted with the read's."""
        if read.raw is None:
            return read
        started = time.time()
        scaled = self._values.network_input(read.raw)
        return replace(read, scaled=scaled, seconds=read.seconds + time.time() - started)

    def _read_for_network(self, layout: PieceLayout, piece: Block) -> _Input:
        """The piece's input as stored and the network's (the reader's task)."""
        return self._network_input(self._read(layout, piece))

    def _all_background(self, layout: PieceLayout, first: _Input, clock: _Clock) -> PiecesWritten:
        """A skipped block's progress if the block's whole input is background
        (``input.background``), else none: the pieces' inputs are read only until one is not
        (``first``, piece 0's, is read already)."""
        background = self.plan.settings.input.background
        if background is None:
            return PiecesWritten()
        chain = None
        for piece in layout.pieces:
            read = first if piece == layout.pieces[0] else self._read(layout, piece)
            if read is not first:
                clock.read += read.seconds
                clock.io_wait += read.seconds
            if read.raw is not None:
                if not np.all(read.raw == background):
                    return PiecesWritten()
                chain = chain_digest(chain, read.digest)
        return PiecesWritten(skipped=True, input_digest=chain)

    def _compute_pieces(
        self,
        layout: PieceLayout,
        state: PieceState,
        progress: PiecesWritten,
        first: _Input | None,
        clock: _Clock,
    ) -> PiecesWritten:
        pieces = layout.pieces
        if progress.written >= len(pieces):  # killed after its last piece, before its marker
            return progress
        streamed = len(pieces) > 1
        report = ProgressLines.resuming(layout, progress.written)
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            start = progress.written
            next_read = (
                reader.submit(self._network_input, first)
                if first is not None
                else reader.submit(self._read_for_network, layout, pieces[start])
            )
            recent: dict[tuple[str, str], np.ndarray] = {}  # carried by the previous piece
            pending: Future[PiecesWritten] | None = None
            for k in range(start, len(pieces)):
                piece = pieces[k]
                waiting = time.time()
                read = next_read.result()
                clock.waited(waiting)
                if k > start or first is None:  # the first piece's read is counted already
                    clock.read += read.seconds
                if k + 1 < len(pieces):
                    next_read = reader.submit(self._read_for_network, layout, pieces[k + 1])
                computing = time.time()
                own, outgoing, sources = self._compute(layout, state, piece, read, recent)
                recent = {(piece.id, t.id): carried for t, carried in outgoing.items()}
                clock.infer += time.time() - computing
                if pending is not None:
                    waiting = time.time()
                    progress = pending.result()  # one piece is written at a time: bounded memory
                    clock.waited(waiting)
                pending = writer.submit(
                    self._convert_and_write,
                    layout,
                    state if streamed else None,
                    piece,
                    own,
                    outgoing,
                    sources,
                    replace(progress, input_digest=chain_digest(progress.input_digest, read.digest))
                    if read.digest
                    else progress,
                    clock,
                )
                report.piece_done(len(read.patches), piece.box.size)
            waiting = time.time()
            if pending is not None:
                progress = pending.result()
            clock.waited(waiting)
            return progress

    def _compute(
        self,
        layout: PieceLayout,
        state: PieceState,
        piece: Block,
        read: _Input,
        recent: dict[tuple[str, str], np.ndarray],
    ) -> tuple[Any, dict[Block, np.ndarray], list[Block]]:
        """The piece's output (float32, handed over to the writer), the partial sums it carries
        to later pieces (on the host), and the pieces that carried sums to it."""
        values, reach = self._values, layout.reach(piece)
        if read.scaled is None:
            total = values.zeros((self._output.info.channels or 1, *reach.shape))
        else:
            total = values.predict(
                read.scaled, read.chunk_box, read.patches, reach, layout.intervals
            )
        sources = layout.sources(piece)
        for source in sources:
            carried = recent.get((source.id, piece.id))
            if carried is None:
                carried = state.load_carry(source, piece)
            overlap = layout.reach(source).intersect(piece.box)
            values.add(total, (slice(None), *overlap.slices(reach.start)), carried)
        outgoing = {
            target: values.carried(
                total, (slice(None), *reach.intersect(target.box).slices(reach.start))
            )
            for target in layout.targets(piece)
        }
        own = values.hand_over(total[(slice(None), *piece.box.slices(reach.start))])
        return own, outgoing, sources

    def _convert_and_write(
        self,
        layout: PieceLayout,
        state: PieceState | None,
        piece: Block,
        own: Any,
        outgoing: dict[Block, np.ndarray],
        sources: list[Block],
        progress: PiecesWritten,
        clock: _Clock,
    ) -> PiecesWritten:
        """``_write_piece`` of the piece's float32 output ``own``, checked, post-processed (a
        package's postprocessing) and converted to the output's dtype in the writer's thread
        (on the device where the values are there): the model's thread only computes."""
        started = time.time()
        result = self._values.output(own, lambda v: self._check_finite(layout, piece, v))
        clock.write += time.time() - started
        return self._write_piece(state, piece, result, outgoing, sources, progress, clock)

    def _check_finite(self, layout: PieceLayout, piece: Block, values: np.ndarray) -> None:
        """Fail the block on a NaN or infinite prediction; with ``inference.non_finite: zero``
        write 0 there instead."""
        if np.isfinite(values.sum()):  # no NaN or infinity, or it would be: one pass, no mask
            return
        bad = ~np.isfinite(values)
        if not bad.any():  # finite values whose sum overflows
            return
        if self.plan.settings.inference.non_finite == "zero":
            values[bad] = 0.0
            return
        first = np.unravel_index(int(np.flatnonzero(bad)[0]), values.shape)
        where = [int(s + i) for s, i in zip(piece.box.start, first[1:], strict=True)]
        raise ModelError(
            f"block {layout.block.id}: the model '{self.plan.settings.model.path}' predicted "
            f"{int(bad.sum()):,} NaN or infinite values in {piece.box} (the first at {where}, "
            f"channel {int(first[0])}); fix the model or its input, or set inference.non_finite: "
            "zero to write 0 there"
        )

    def _write_piece(
        self,
        state: PieceState | None,
        piece: Block,
        result: np.ndarray,
        outgoing: dict[Block, np.ndarray],
        sources: list[Block],
        progress: PiecesWritten,
        clock: _Clock,
    ) -> PiecesWritten:
        """Write the piece, then (for a block of several pieces) its carried sums and the
        block's progress: in that order, so a piece counted as written is whole."""
        started = time.time()
        self._output.write(piece.box, self._layout_of(result))
        digest = output_digest(result)
        progress = replace(
            progress, written=progress.written + 1, digest=chain_digest(progress.digest, digest)
        )
        if state is not None:
            for target, carried in outgoing.items():
                state.save_carry(piece, target, carried)
            state.record(progress, piece, sources)
        clock.write += time.time() - started
        return progress

    def _layout_of(self, result: np.ndarray) -> np.ndarray:
        """(c, z, y, x) values as the output stores them: without a channel axis if it has none."""
        return result[0] if self._output.info.channels is None else result

    def _write_zeros(
        self, layout: PieceLayout, state: PieceState, progress: PiecesWritten, clock: _Clock
    ) -> PiecesWritten:
        """A block of background: zeros, piece by piece, nothing inferred."""
        streamed = len(layout.pieces) > 1
        channels = self._output.info.channels or 1
        waiting = time.time()
        for piece in layout.pieces[progress.written :]:
            zeros = np.zeros((channels, *piece.box.shape), dtype=self._output.info.dtype)
            progress = self._write_piece(
                state if streamed else None, piece, zeros, {}, [], progress, clock
            )
        clock.waited(waiting)
        return progress

    def _finish(
        self,
        layout: PieceLayout,
        state: PieceState,
        progress: PiecesWritten,
        clock: _Clock,
        counts: _IOCounts,
    ) -> DoneMarker:
        """Write the block's done-marker, then drop its streaming state."""
        plan, block_box = self.plan, layout.block.box
        patches = 0 if progress.skipped else layout.patch_count
        marker = DoneMarker(
            block=layout.block.id,
            box=block_box.to_json(),
            chunk_box=plan.geometry.input_box(layout.output_box).to_json(),
            skipped="background" if progress.skipped else None,
            patches=patches,
            voxels=block_box.size,
            pieces=len(layout.pieces),
            piece_size=list(layout.piece_size),
            timings_s=clock.as_json(),
            ran_on=where_it_ran(
                str(self.predictor.device), self.cpus, self._gpu_memory.megabytes()
            ),
            model_sha256=plan.model_sha256,
            fingerprint=plan.fingerprint,
            chunkflow_version=__version__,
            output_dtype=self._output.info.dtype,
            output_sha256=progress.digest,
            input_digest=progress.input_digest,
            input_digest_algorithm=INPUT_DIGEST,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            io_retries=counts.retries,
            missing_input_chunks=counts.missing,
            store_id=self._output.info.store_id,
        )
        marker.write(self.state)
        state.clear()
        what = "background, skipped" if progress.skipped else f"{patches} patches"
        log.info(
            "block %s: %s, %.2f s, %.2f s of it waiting on I/O, %d I/O retries",
            marker.block,
            what,
            marker.seconds,
            clock.io_wait,
            counts.retries,
        )
        return marker


def run_blocks(
    plan: RunPlan,
    block_ids: list[str],
    expect_fingerprint: str | None = None,
    state: RunState | None = None,
) -> list[DoneMarker]:
    """Run the named blocks of ``plan`` in one process, their state in ``state`` (default: the
    plan's state dir): `chunkflow run-block` and the workflow's block jobs.

    The model's bytes are read first: the fingerprint checked here and recorded in the markers
    is that of the bytes the blocks are computed with."""
    plan.model_files  # noqa: B018
    if expect_fingerprint is not None and expect_fingerprint != plan.fingerprint:
        raise ConfigError(
            f"the result-affecting settings changed since the workflow was planned "
            f"(fingerprint {plan.fingerprint}, planned {expect_fingerprint}); rerun snakemake"
        )
    try:
        blocks = [plan.grid.block_by_id(b) for b in block_ids]
    except KeyError as err:
        raise ConfigError(f"{err.args[0]}; `chunkflow plan --blocks` lists the blocks") from None
    return BlockRunner(plan, state or RunState.of(plan)).run(blocks)
