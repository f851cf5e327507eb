"""Checking one finished block against its done-marker: the output as stored, re-read in the
pieces its job wrote (their chained sha256, and finite values in a float output), and optionally
the input its patches read (the chained input digest)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chunkflow.errors import first_line
from chunkflow.geometry.boxes import Box, Vec
from chunkflow.geometry.grid import BlockGrid
from chunkflow.geometry.pieces import PieceLayout
from chunkflow.job.block_job import read_patch_input
from chunkflow.job.piece_state import chain_digest, input_digest, output_digest
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import DoneMarker
from chunkflow.volumes import Volume, open_input, open_output


@dataclass(frozen=True)
class BlockCheck:
    """What one block's check found: ``damage`` to its output as stored, a ``changed_input``,
    the bytes it read, and the ``Stamps`` of what it read, taken before reading it."""

    block: str
    damage: tuple[str, ...]
    changed_input: tuple[str, ...]
    nbytes: int
    stamps: Stamps

    @property
    def fine(self) -> bool:
        return not (self.damage or self.changed_input)


@dataclass(frozen=True)
class Stamps:
    """What the storage objects of a block's output (and of its input) were when read
    (``Volume.storage_stamp``; None: the format cannot tell without reading)."""

    output: str | None
    input: str | None = None


def stamps(plan: RunPlan, block_id: str, output: Volume, input: Volume | None) -> Stamps:
    """The ``Stamps`` of block ``block_id`` now: of its output, and with ``input`` of the input
    its patches read (inside the volume: padding reads nothing)."""
    block = plan.grid.block_by_id(block_id)
    if input is None:
        return Stamps(output.storage_stamp(block.box))
    read = plan.chunk_box(plan.patches(block)).intersect(input.bounds)
    return Stamps(output.storage_stamp(block.box), input.storage_stamp(read))


def check_block(plan: RunPlan, marker: DoneMarker, inputs: bool) -> BlockCheck:
    """Re-read ``marker``'s block (and with ``inputs`` its input) in the pieces its job used."""
    block = plan.grid.block_by_id(marker.block)
    layout = PieceLayout(block, tuple(marker.piece_size), plan.patch_intervals(block))
    output = open_output(plan.settings.output)
    input = open_input(plan.settings.input) if inputs else None
    before = stamps(plan, marker.block, output, input)
    damage, nbytes = _check_output(plan, layout, marker, output)
    changed: list[str] = []
    if input is not None:
        changed, read = _check_input(plan, layout, marker, input)
        nbytes += read
    return BlockCheck(marker.block, tuple(damage), tuple(changed), nbytes, before)


def _check_output(
    plan: RunPlan, layout: PieceLayout, marker: DoneMarker, volume: Volume
) -> tuple[list[str], int]:
    floating = np.issubdtype(np.dtype(marker.output_dtype), np.floating)
    chain, non_finite, nbytes = None, 0, 0
    for piece in layout.pieces:
        try:
            values = volume.read(piece.box)
        except Exception as err:  # the store's own errors, e.g. a truncated compressed chunk
            return [_unreadable(volume, piece.box, plan.settings.output.chunk_size, err)], nbytes
        nbytes += values.nbytes
        if floating:
            non_finite += values.size - int(np.count_nonzero(np.isfinite(values)))
        chain = chain_digest(chain, output_digest(values))
    damage = [] if chain == marker.output_sha256 else ["checksum mismatch"]
    if non_finite:
        damage.append(f"{non_finite:,} NaN or infinite value{'s' * (non_finite != 1)}")
    return damage, nbytes


def _unreadable(volume: Volume, box: Box, chunk_size: Vec, err: Exception) -> str:
    """What could not be read in ``box``: its first unreadable storage chunk (``box`` holds
    whole chunks), else ``err``."""
    for chunk in BlockGrid(box, chunk_size):
        try:
            volume.read(chunk.box)
        except Exception as chunk_err:
            return f"unreadable store chunk {chunk.box}: {first_line(chunk_err)}"
    return f"unreadable store chunk in {box}: {first_line(err)}"


def _check_input(
    plan: RunPlan, layout: PieceLayout, marker: DoneMarker, volume: Volume
) -> tuple[list[str], int]:
    chain, nbytes = None, 0
    for piece in layout.pieces:
        patches = layout.patches(piece)
        if not patches:
            continue
        try:
            raw = read_patch_input(plan, volume, patches, f"piece {piece.id}")[1]
        except Exception as err:  # unreadable, or NaN where the job read numbers
            return [f"input unreadable: {first_line(err)}"], nbytes
        nbytes += raw.nbytes
        chain = chain_digest(chain, input_digest(raw, marker.input_digest_algorithm))
    return ([] if chain == marker.input_digest else ["input changed"]), nbytes
