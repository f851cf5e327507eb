"""The on-disk state of a block being streamed: how many pieces are written, and the partial
sums carried to the pieces still to come. It lets a killed block job resume at its first
unwritten piece.

It lives in ``RunState.pieces``, ``<state_dir>/pieces/<block id>/``, and is removed once the block's done-marker is
written (the marker stays the checkpoint that counts). ``progress.json`` names the result
fingerprint and piece size it belongs to; a state of other settings is discarded. Each carried
partial sum is one file, written atomically before the piece that made it is counted as
written, and read by the piece it is carried to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from chunkflow.geometry.boxes import Vec
from chunkflow.geometry.grid import Block
from chunkflow.state.files import write_json_atomic
from chunkflow.state.run_state import RunState

log = logging.getLogger(__name__)


def chain_digest(previous: str | None, piece_sha256: str) -> str:
    """The block's output checksum after one more piece: the first piece's sha256, then
    sha256(previous digest + this piece's digest), in piece order. A block of one piece has
    the sha256 of its bytes. (The input digest chains the pieces' input digests the same way.)"""
    if previous is None:
        return piece_sha256
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(piece_sha256)).hexdigest()


@dataclass(frozen=True)
class PiecesWritten:
    """How far a block got: pieces written (in order), the checksum chain over their output,
    and the digest chain over the input they read (``input_digest``)."""

    written: int = 0
    digest: str | None = None
    skipped: bool = False
    input_digest: str | None = None


def input_digest(raw: np.ndarray) -> str:
    """A cheap digest of a piece's input as stored (blake2b, 128 bits)."""
    return hashlib.blake2b(np.ascontiguousarray(raw).data, digest_size=16).hexdigest()


class PieceState:
    """PiecesWritten and carried partial sums of one block, for one fingerprint and piece size."""

    def __init__(self, state: RunState, block_id: str, piece_size: Vec) -> None:
        self._state, self._block = state, block_id
        self.directory = state.pieces(block_id)
        self._identity = {"fingerprint": state.fingerprint, "piece_size": list(piece_size)}

    @property
    def _progress_file(self) -> Path:
        return self._state.piece_progress(self._block)

    def _carry_file(self, source: Block, target: Block) -> Path:
        return self._state.carried_sum(self._block, target.id, source.id)

    def resume(self) -> PiecesWritten:
        """The progress recorded for these settings; none (and the state cleared) when there is
        no state or it belongs to other settings."""
        try:
            data = json.loads(self._progress_file.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in self._identity.items()):
            self.clear()
            return PiecesWritten()
        try:
            return PiecesWritten(
                **{k: data[k] for k in ("written", "digest", "skipped", "input_digest")}
            )
        except KeyError:
            self.clear()
            return PiecesWritten()

    def missing_carries(self, pairs: list[tuple[Block, Block]]) -> list[str]:
        """The carried sums of ``pairs`` (source, target) that are not on disk."""
        return [
            self._carry_file(s, t).name for s, t in pairs if not self._carry_file(s, t).exists()
        ]

    def record(self, progress: PiecesWritten) -> None:
        """Count pieces as written: after their output and their carried sums are stored."""
        write_json_atomic(
            self._progress_file,
            {**self._identity, **asdict(progress)},
        )

    def save_carry(self, source: Block, target: Block, partial: np.ndarray) -> None:
        path = self._carry_file(source, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, partial)
        os.replace(tmp, path)

    def load_carry(self, source: Block, target: Block) -> np.ndarray:
        return np.load(self._carry_file(source, target))

    def drop_carries(self, target: Block, sources: list[Block]) -> None:
        """Delete the sums carried to ``target`` once it is counted as written."""
        for source in sources:
            self._carry_file(source, target).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
