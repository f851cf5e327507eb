"""Done-markers: one small JSON per finished block, written last and atomically.

``DoneMarker`` is the marker's one definition: the block job writes it, ``status`` and the
summary read it, and a file that is not a whole marker is refused with one line.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from chunkflow.errors import ChunkflowError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes its files private (0600); markers get the mode of any other file the user writes.
_FILE_MODE = 0o666 & ~_umask()


def marker_dir(state_dir: str) -> Path:
    return Path(state_dir) / "blocks"


def marker_path(state_dir: str, block_id: str) -> Path:
    return marker_dir(state_dir) / f"{block_id}.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STAGES = ("read", "infer", "write", "total")


class MarkerError(ChunkflowError):
    """A done-marker file that cannot be read, or is not a whole marker."""


@dataclass(frozen=True)
class DoneMarker:
    """What a finished block records: where it is, what it took, and what it wrote.

    ``box`` and ``chunk_box`` are ``{"start": [z, y, x], "stop": [z, y, x]}``; ``timings_s`` has
    the seconds of each of ``STAGES``; ``ran_on`` the host, SLURM job and device facts.
    ``output_sha256`` chains the pieces' sha256 in order (``block_state.chain_digest``): for a
    block of one piece, the sha256 of its bytes as written, (c, z, y, x) in C order.
    """

    block: str
    box: dict[str, list[int]]
    chunk_box: dict[str, list[int]]
    skipped: str | None  # "background" for a block not inferred, else None
    patches: int
    voxels: int
    pieces: int  # the block streamed through memory in this many pieces
    piece_size: list[int]
    timings_s: dict[str, float]
    ran_on: dict[str, Any]
    model_sha256: str
    fingerprint: str
    chunkflow_version: str
    output_dtype: str
    output_sha256: str
    input_digest: str | None  # the pieces' input digests chained (None: no patch read input)
    finished: str  # ISO 8601, local time with offset

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str = "marker") -> DoneMarker:
        """A marker from its JSON object; a MarkerError naming what is missing otherwise."""
        if not isinstance(data, dict):
            raise MarkerError(f"{source} holds {type(data).__name__}, not a done-marker object")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise MarkerError(f"{source} lacks {', '.join(missing)}; it is not a whole done-marker")
        timings = data["timings_s"]
        if not isinstance(timings, dict) or any(s not in timings for s in STAGES):
            raise MarkerError(f"{source} has timings_s {timings!r}; expected {', '.join(STAGES)}")
        return cls(**{n: data[n] for n in names})

    def write(self, state_dir: str) -> Path:
        """Write the marker (atomically) where ``marker_path`` puts it; return the path."""
        path = marker_path(state_dir, self.block)
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> DoneMarker:
        """The marker in ``path``; a one-line MarkerError for a file that is not one."""
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MarkerError(f"done-marker '{path}' cannot be read ({err}); delete it") from None
        return cls.from_json(data, f"done-marker '{path}'")


def read_markers(
    state_dir: str, block_ids: list[str], fingerprint: str
) -> tuple[list[DoneMarker], list[str], list[str]]:
    """The done-markers of ``block_ids`` written with ``fingerprint``, then the ids whose marker
    is stale (another fingerprint: Snakemake will rerun them), then the ids without a marker."""
    done, stale, missing = [], [], []
    for block_id in block_ids:
        path = marker_path(state_dir, block_id)
        if not path.exists():
            missing.append(block_id)
            continue
        marker = DoneMarker.read(path)
        if marker.fingerprint == fingerprint:
            done.append(marker)
        else:
            stale.append(block_id)
    return done, stale, missing
