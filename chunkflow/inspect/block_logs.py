"""What the block jobs' logs say about the blocks without a done-marker: failed (with the
first line of the error), running, or stopped without a word (a killed job).

A log counts if it was written since this fingerprint's output record (``create_output``): older
logs are of jobs of other settings. Bounded at any scale: the log folder and the piece-state
folder are listed once each, and of the blocks without a marker only those with a log are read,
their last ``LOG_TAIL_BYTES`` only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import DoneMarker
from chunkflow.state.processes import process_gone
from chunkflow.state.run_state import BLOCK_RULE, RunState

LOG_TAIL_BYTES = 4096  # what is read of a block log: the error and the last progress line
RUNNING_WITHIN_S = 1800.0  # a block whose log or piece progress changed this recently runs


@dataclass(frozen=True)
class BlockLog:
    """A block without a done-marker whose job left a log (or piece progress) of this run."""

    block: str
    path: Path
    age_s: float  # since its log or its piece progress last changed
    error: str | None  # the first line of its error
    last_line: str
    gone: bool = False  # its job's process, on this host, no longer exists

    @property
    def state(self) -> str:
        """``failed`` (an error in the log), ``running`` (a change within
        ``RUNNING_WITHIN_S``, no error, and its process not known gone) or ``stopped``
        (neither: killed, e.g. by SLURM or the kernel's OOM killer)."""
        if self.error is not None:
            return "failed"
        return "running" if self.age_s <= RUNNING_WITHIN_S and not self.gone else "stopped"


def finished_line(marker: DoneMarker) -> str:
    """The line a block job prints last, once the block's done-marker is written:
    ``z0_y1_x0: 400 patches, 81.20 s on cuda:0``."""
    what = "background, skipped" if marker.skipped else f"{marker.patches} patches"
    return f"{marker.block}: {what}, {marker.seconds:.2f} s on {marker.ran_on['device']}"


def is_finished_line(block: str, line: str) -> bool:
    """Whether ``line`` is the ``finished_line`` of ``block``."""
    return line.startswith(f"{block}: ") and " s on " in line


CRASH_HINT = (
    "the job crashed; under a memory limit this is often memory: lower inference.batch_size "
    "or piece_size, or give the job more memory (SLURM: mem_mb)"
)


def first_error(text: str) -> str | None:
    """The first error in a log's text: a ``chunkflow: error:`` line (how every chunkflow entry
    point reports one), a crash (``Fatal Python error: Segmentation fault``, as every entry
    point's fault handler writes it), or a traceback's exception line; None if there is none."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if "chunkflow: error:" in line:
            return line.strip()
        if line.startswith("Fatal Python error: "):
            return f"{line.strip().removeprefix('Fatal Python error: ')}: {CRASH_HINT}"
        if line.startswith("Extension modules: "):  # the end of a crash report cut above
            return f"a fatal error: {CRASH_HINT}"
        if line.startswith("Traceback (most recent call last)"):
            after = (x for x in lines[k + 1 :] if x.strip() and not x[0].isspace())
            return next(after, line).strip()
    return None


def log_tail(path: Path) -> str:
    """The last ``LOG_TAIL_BYTES`` of ``path``, from its first whole line."""
    with path.open("rb") as f:
        start = max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES)
        f.seek(start)
        data = f.read()
    if start:
        data = data.partition(b"\n")[2]
    return data.decode(errors="replace")


def _names(folder: Path) -> list[str]:
    """The entries of ``folder``: one listing (none if it does not exist)."""
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _modified(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def unfinished_logs(plan: RunPlan, without_marker: Container[str]) -> list[BlockLog]:
    """The ``BlockLog`` of each block of ``without_marker`` that has a log or piece progress
    of this run, in the grid's order (only the listed names are looked up in it)."""
    state = RunState.of(plan)
    since = _modified(state.output_record())
    if since is None:
        return []  # no output made for these settings: no block job of them ran
    logs, pieces = state.job_logs(), state.pieces_root
    named = {n.removesuffix(".log") for n in _names(logs) if n.endswith(".log")}
    now = time.time()
    found = []
    for block in named | set(_names(pieces)):
        if block not in without_marker:
            continue
        path = state.log(BLOCK_RULE, block)
        times = [_modified(path), _modified(state.piece_progress(block))]
        changed = max((t for t in times if t is not None and t >= since), default=None)
        if changed is None:
            continue  # of an earlier run's jobs
        text = log_tail(path) if times[0] is not None and times[0] >= since else ""
        lines = [line for line in text.splitlines() if line.strip()]
        error = first_error(text)
        if lines and is_finished_line(block, lines[-1]) and error is None:
            continue  # the job finished, and its marker is gone or did not count: missing
        last = lines[-1] if lines else ""
        gone = process_gone(state.job_record(block))
        found.append(BlockLog(block, path, max(0.0, now - changed), error, last, gone))
    return sorted(found, key=lambda log: plan.grid.block_by_id(log.block).index)
