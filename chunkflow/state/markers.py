"""Done-markers: one small JSON per finished block, written last and atomically.

``DoneMarker`` is the marker's one definition: the block job writes it, ``status`` and the
summary read it. A marker lives in the folder of its result fingerprint,
``RunState.marker``, ``<state_dir>/blocks/<fingerprint>/<block>.json``, so changed settings mean missing markers
(Snakemake's targets) whatever Snakemake remembers. A file there that is not a whole marker of
that block and fingerprint, or that was written into another output store than the one there now
(``store_id``), does not count: readers warn in one line and take the block as missing.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

from chunkflow.errors import ChunkflowError
from chunkflow.state.files import set_aside, write_json_atomic
from chunkflow.state.run_state import RunState

log = logging.getLogger(__name__)


STAGES = ("read", "infer", "write", "total")
INPUT_DIGESTS = ("sha256", "blake2b")  # input_digest_algorithm: block jobs' now; older markers'


class MarkerError(ChunkflowError):
    """A done-marker file that cannot be read, or is not a whole marker."""


@dataclass(frozen=True)
class DoneMarker:
    """What a finished block records: where it is, what it took, and what it wrote.

    ``box`` and ``chunk_box`` are ``{"start": [z, y, x], "stop": [z, y, x]}``; ``timings_s`` has
    the seconds of each of ``STAGES`` (read and write overlap the compute), ``io_wait``, the
    seconds the compute waited for them, and ``wall``, the block's wall-clock seconds (markers
    since it was added); ``ran_on`` the host, SLURM job, device and CPU facts.
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
    io_retries: int = 0  # object-store requests sent again after a transient error
    missing_input_chunks: int = 0  # read as the fill value (input.fill_missing)
    store_id: str | None = None  # the identity of the output store written (VolumeInfo.store_id)
    input_digest_algorithm: str = INPUT_DIGESTS[1]  # of the pieces' digests (older markers lack it)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def seconds(self) -> float:
        """The block's wall-clock seconds (``timings_s["wall"]``); for a marker older than
        that, the sum of its stages (which overlap: more than the wall clock)."""
        return self.timings_s.get("wall", self.timings_s["total"])

    @classmethod
    def from_json(cls, data: Any, source: str = "marker") -> DoneMarker:
        """A marker from its JSON object; a MarkerError naming what is missing or of the wrong
        type otherwise (the fields that the summary and status compute with are checked)."""
        if not isinstance(data, dict):
            raise MarkerError(f"{source} holds {type(data).__name__}, not a done-marker object")
        names = [f.name for f in fields(cls) if f.name in data or f.default is MISSING]
        missing = [n for n in names if n not in data]
        if missing:
            raise MarkerError(
                f"{source} lacks {len(missing)} field(s) ({', '.join(missing[:3])}"
                f"{', …' * (len(missing) > 3)}); it is not a whole done-marker"
            )
        wrong = next((n for n in names if not _fits(data[n], _TYPES[n])), None)
        if wrong is not None:
            kinds = " or ".join(t.__name__ for t in _TYPES[wrong])
            raise MarkerError(f"{source} has {wrong} {_show(data[wrong])}, not {kinds}")
        timings, ran_on = data["timings_s"], data["ran_on"]
        stages = (*STAGES, "wall") if "wall" in timings else STAGES  # wall: newer markers
        if not all(_fits(timings.get(s), (int, float)) for s in stages):
            raise MarkerError(
                f"{source} has timings_s {_show(timings)}; expected {', '.join(stages)}"
            )
        if not isinstance(ran_on.get("device"), str):
            raise MarkerError(f"{source} has ran_on {_show(ran_on)}, without the device")
        try:
            datetime.fromisoformat(data["finished"])
        except ValueError:
            raise MarkerError(
                f"{source} has finished {_show(data['finished'])}, not a time"
            ) from None
        marker = cls(**{n: data[n] for n in names})
        if marker.input_digest_algorithm not in INPUT_DIGESTS:  # (older markers: the default)
            raise MarkerError(
                f"{source} has input_digest_algorithm {_show(marker.input_digest_algorithm)}, "
                f"not one of {', '.join(INPUT_DIGESTS)}"
            )
        return marker

    def write(self, state: RunState) -> Path:
        """Write the marker (atomically) where ``state`` keeps it; return the path."""
        path = state.marker(self.block, self.fingerprint)
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> DoneMarker:
        """The marker in ``path``; a one-line MarkerError for a file that is not one, or that is
        the marker of another block or fingerprint than its path names (``RunState.marker``)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MarkerError(f"done-marker '{path}' cannot be read ({err})") from None
        marker = cls.from_json(data, f"done-marker '{path}'")
        if (marker.fingerprint, f"{marker.block}.json") != (path.parent.name, path.name):
            raise MarkerError(
                f"done-marker '{path}' is the marker of block {marker.block}, fingerprint "
                f"{marker.fingerprint}: not of its place"
            )
        return marker


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_show = _short.repr  # a value, shortened to one short line


def _json_types(hint: Any) -> tuple[type, ...]:
    """The types a field's JSON value may have: its annotation's outer types."""
    if get_origin(hint) is UnionType:
        return sum((_json_types(h) for h in get_args(hint)), ())
    return (get_origin(hint) or hint,)


_TYPES = {name: _json_types(hint) for name, hint in get_type_hints(DoneMarker).items()}


def _fits(value: Any, types: tuple[type, ...]) -> bool:
    """Whether a JSON value is of one of ``types`` (true and false are no numbers)."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _names(folder: Path) -> set[str]:
    """The file names in ``folder`` (none if it does not exist): one listing."""
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _other_folders(state: RunState) -> list[Path]:
    """The marker folders of fingerprints other than the run's (and those set aside)."""
    root = state.markers_root
    return [
        root / n for n in sorted(_names(root)) if n != state.fingerprint and (root / n).is_dir()
    ]


#: a ``store_id`` for readers with no store to compare markers with (none there, or unreadable)
ANY_STORE = "*"


def read_counting(path: Path, store_id: str | None) -> DoneMarker:
    """The marker in ``path`` (``DoneMarker.read``), if it was written into the output store of
    identity ``store_id``, the one there now (or any: ``ANY_STORE``); a one-line MarkerError
    otherwise."""
    marker = DoneMarker.read(path)
    if store_id != ANY_STORE and marker.store_id != store_id:
        raise MarkerError(
            f"done-marker '{path}' was written into another output store (id "
            f"{marker.store_id}) than the one there now (id {store_id})"
        )
    return marker


def set_aside_invalid(state: RunState, store_id: str | None) -> list[str]:
    """Set aside (``set_aside``) every file of the run's marker folder named like a marker
    that is not a valid marker of its block in the output store ``store_id``; return why each
    did not count."""
    folder = state.marker_dir()
    reasons = []
    for name in sorted(_names(folder)):
        if name.endswith(".json") and not name.startswith("."):
            try:
                read_counting(folder / name, store_id)
            except MarkerError as err:
                set_aside(folder / name)
                reasons.append(str(err))
    return reasons


@dataclass(frozen=True)
class MarkerCensus:
    """The blocks of a run by their done-markers: ``done`` (the markers that count), ``stale``
    (ids with a marker of other settings only), ``missing`` (ids with none), and a ``note`` on
    why markers of this fingerprint do not count (None: they do)."""

    done: list[DoneMarker]
    stale: list[str]
    missing: list[str]
    note: str | None = None


def read_markers(state: RunState, block_ids: list[str], store_id: str | None) -> MarkerCensus:
    """The done-markers of ``block_ids`` written with the run's fingerprint into the output store
    of identity ``store_id``, the ids whose marker is stale (only under other fingerprints:
    Snakemake will rerun them), then the ids without a marker. A file that is not a valid marker
    of its block in that store counts as none (one warning).

    Each marker folder is listed once; only the current fingerprint's markers are read.
    """
    current = _names(state.marker_dir())
    others = set().union(*map(_names, _other_folders(state)))
    done, stale, missing, invalid = [], [], [], []
    for block_id in block_ids:
        name = f"{block_id}.json"
        if name in current:
            try:
                done.append(read_counting(state.marker(block_id), store_id))
                continue
            except MarkerError as err:
                invalid.append(str(err))
        (stale if name in others else missing).append(block_id)
    if invalid:
        log.warning(
            "%d done-marker(s) do not count, their blocks are not done (e.g. %s); the workflow "
            "sets them aside as *.invalid and computes those blocks again",
            len(invalid),
            invalid[0],
        )
    return MarkerCensus(done, stale, missing)
