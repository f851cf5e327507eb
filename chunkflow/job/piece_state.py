"""The on-disk state of a block being streamed: how many pieces are written, and the partial
sums carried to the pieces still to come. It lets a killed block job resume at its first
unwritten piece.

It lives in ``RunState.pieces``, ``<state_dir>/pieces/<block id>/``, and is removed once the block's done-marker is
written (the marker stays the checkpoint that counts). ``progress.json`` names the result
fingerprint, piece size and output store (its identity) it belongs to, the sha256 of each
carried sum still to be read, and its own checksum; state of other settings or of another
store, or failing a check, is discarded. Each carried
partial sum is one file, written atomically before the piece that made it is counted as
written, and read by the piece it is carried to.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chunkflow.geometry.boxes import Vec
from chunkflow.geometry.grid import Block
from chunkflow.state.files import write_json_atomic
from chunkflow.state.markers import INPUT_DIGESTS
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


INPUT_DIGEST = INPUT_DIGESTS[0]  # what block jobs digest their input with


def input_digest(raw: np.ndarray, algorithm: str = INPUT_DIGEST) -> str:
    """The digest of a piece's input as stored: its sha256 (with the CPU's SHA instructions
    about twice as fast as blake2b), or with ``algorithm`` "blake2b" the 128-bit blake2b that
    older markers chain."""
    data = np.ascontiguousarray(raw).data
    if algorithm == "blake2b":
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    return hashlib.sha256(data).hexdigest()


def output_digest(values: np.ndarray) -> str:
    """The sha256 of a piece's output as stored (C order), which its done-marker chains."""
    return hashlib.sha256(np.ascontiguousarray(values).data).hexdigest()


class DamagedState(Exception):
    """A file of a block's streaming state that fails its check: not to be trusted."""


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the sha256 of its own canonical JSON, ``sha256``."""
    text = json.dumps(data, sort_keys=True)
    return {**data, "sha256": hashlib.sha256(text.encode()).hexdigest()}


class PieceState:
    """The pieces written and the carried partial sums of one block, for one fingerprint, piece
    size and output store. ``progress.json`` holds its own checksum and the sha256 of every
    carried sum still to be read; each file is fsynced before its rename. State that fails a
    check, or is of other settings or another store, is discarded with one warning naming it:
    the block is computed anew."""

    def __init__(
        self, state: RunState, block_id: str, piece_size: Vec, store_id: str | None
    ) -> None:
        self._state, self._block = state, block_id
        self.directory = state.pieces(block_id)
        self._identity = {
            "fingerprint": state.fingerprint,
            "piece_size": list(piece_size),
            "store_id": store_id,  # pieces written into this output store (VolumeInfo.store_id)
            "input_digest_algorithm": INPUT_DIGEST,  # progress chained by another is not resumed
        }
        self._carries: dict[str, str] = {}  # file name -> sha256, of the sums still to be read

    @property
    def _progress_file(self) -> Path:
        return self._state.piece_progress(self._block)

    def _carry_file(self, source: Block, target: Block) -> Path:
        return self._state.carried_sum(self._block, target.id, source.id)

    def resume(self) -> PiecesWritten:
        """The progress recorded for these settings; none (and the state cleared, with a
        warning unless there was none) when it is missing, damaged or of other settings."""
        path = self._progress_file
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return self._discard(None)
        except (OSError, ValueError) as err:
            return self._discard(f"piece progress '{path}' cannot be read ({err})")
        if not isinstance(data, dict) or _checked(_without_sum(data)) != data:
            return self._discard(f"piece progress '{path}' fails its checksum")
        if any(data.get(k) != v for k, v in self._identity.items()):
            return self._discard(
                f"piece progress '{path}' is of other settings, another output store or "
                "another chunkflow version"
            )
        self._carries = dict(data["carries"])
        return PiecesWritten(
            **{k: data[k] for k in ("written", "digest", "skipped", "input_digest")}
        )

    def _discard(self, why: str | None) -> PiecesWritten:
        if why is not None:
            log.warning("block %s: %s; computing the block anew", self._block, why)
        self.clear()
        return PiecesWritten()

    def missing_carries(self, pairs: list[tuple[Block, Block]]) -> list[str]:
        """The carried sums of ``pairs`` (source, target) that the progress does not name or
        that are not on disk."""
        paths = [self._carry_file(s, t) for s, t in pairs]
        return [p.name for p in paths if p.name not in self._carries or not p.exists()]

    def record(
        self, progress: PiecesWritten, written: Block | None = None, sources: Sequence[Block] = ()
    ) -> None:
        """Count pieces as written: after their output and their carried sums are stored. The
        sums ``sources`` carried to the piece just ``written`` are read for good: the progress
        no longer names them, and they are deleted once it is recorded (so it names only sums
        still to be read, each on disk)."""
        read = [self._carry_file(s, written) for s in sources] if written else []
        for path in read:
            self._carries.pop(path.name, None)
        data = {**self._identity, **asdict(progress), "carries": self._carries}
        write_json_atomic(self._progress_file, _checked(data))
        for path in read:
            path.unlink(missing_ok=True)

    def save_carry(self, source: Block, target: Block, partial: np.ndarray) -> None:
        path = self._carry_file(source, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, partial)
        data = buffer.getvalue()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._carries[path.name] = hashlib.sha256(data).hexdigest()

    def load_carry(self, source: Block, target: Block) -> np.ndarray:
        """The sum ``source`` carried to ``target``; DamagedState naming the file when its
        bytes are not those recorded."""
        path = self._carry_file(source, target)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DamagedState(f"carried sum '{path}' cannot be read ({err})") from None
        if hashlib.sha256(data).hexdigest() != self._carries.get(path.name):
            raise DamagedState(f"carried sum '{path}' fails its checksum")
        return np.load(io.BytesIO(data))

    def clear(self) -> None:
        self._carries = {}
        shutil.rmtree(self.directory, ignore_errors=True)


def _without_sum(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "sha256"}
