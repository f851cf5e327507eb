"""Checkpoints you can trust: check finished blocks against their done-markers.

Each finished block (a current done-marker) is re-read from the output store piece by piece, as
its job wrote it; the pieces' chained sha256 must equal the marker's ``output_sha256``, and a
float output must hold finite values only. Optionally the block's input is re-read the same way
and its digest compared with the marker's ``input_digest``. A damaged block's marker is renamed
to ``<name>.invalid``, so the next run recomputes exactly that block.

Blocks found fine are appended to ``<state_dir>/verified.jsonl`` (block, the marker's sha256,
the ``Stamps`` of the storage objects read, when): a rerun skips a block verified since its
marker was written only while those objects are as they were read (names, sizes and
modification times; a format that cannot tell is read again), and a killed verify resumes where
it stopped. In a run directory it cannot write (a read-only mount, an archive), verify reads the
record but changes nothing: it reports what it finds (stdout, ``--record`` elsewhere) and says
which markers it would have invalidated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from chunkflow.errors import ChunkflowError
from chunkflow.inspect.block_check import BlockCheck, Stamps, check_block, stamps
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.files import set_aside, write_json_atomic
from chunkflow.state.markers import DoneMarker, read_markers
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_input, open_output

#: the exit status when a checked block is damaged or its input changed
PROBLEMS_EXIT = 3


@dataclass(frozen=True)
class VerifyOptions:
    """``jobs`` blocks checked at once (threads); a deterministic ``sample`` fraction of the
    finished blocks (picked by ``seed``); ``inputs``: also compare the input digests;
    ``invalidate_changed_inputs``: also invalidate blocks whose input changed (implies
    ``inputs``); ``again``: check blocks verified before too."""

    jobs: int = 4
    sample: float = 1.0
    seed: int = 0
    inputs: bool = False
    invalidate_changed_inputs: bool = False
    again: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ChunkflowError(f"--jobs is {self.jobs}; check at least 1 block at a time")
        if not 0 < self.sample <= 1:
            raise ChunkflowError(f"--sample is {self.sample}; give a fraction in (0, 1]")

    @property
    def check_inputs(self) -> bool:
        return self.inputs or self.invalidate_changed_inputs

    def invalidates(self, check: BlockCheck) -> bool:
        """Whether ``check`` found what makes its block's marker invalid."""
        return bool(check.damage or (check.changed_input and self.invalidate_changed_inputs))


def sample(block_ids: list[str], fraction: float, seed: int) -> list[str]:
    """A deterministic ``fraction`` of ``block_ids`` (at least one), in their order: the ids
    ranked first by a hash of ``seed`` and the id, so a larger fraction holds a smaller one."""
    if fraction >= 1:
        return block_ids
    count = max(1, math.ceil(fraction * len(block_ids)))
    rank = lambda b: hashlib.blake2b(f"{seed}:{b}".encode(), digest_size=8).digest()  # noqa: E731
    chosen = set(sorted(block_ids, key=rank)[:count])
    return [b for b in block_ids if b in chosen]


def marker_sha256(marker: DoneMarker) -> str:
    """The marker's own checksum: it changes whenever the block is written again."""
    return hashlib.sha256(json.dumps(marker.to_json(), sort_keys=True).encode()).hexdigest()


class VerifiedRecord:
    """``RunState.verified``: one JSON line per block found fine, appended."""

    def __init__(self, state: RunState) -> None:
        self.path = state.verified

    def load(self) -> dict[tuple[str, str], list[Stamps]]:
        """(block, marker sha256) → the ``Stamps`` of each time it was found fine (the input's
        None when its input was not checked); a half-written last line (a killed verify), and
        lines of versions that recorded no stamps, are left out."""
        found: dict[tuple[str, str], list[Stamps]] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
                key = (entry["block"], entry["marker_sha256"])
                read = Stamps(entry["stamp"], entry["input_stamp"])
            except (ValueError, TypeError, KeyError):
                continue
            found.setdefault(key, []).append(read)
        return found

    def open(self) -> TextIO:
        """The record opened for appending, on a line of its own (a killed verify may have left
        half a line)."""
        f = self.path.open("a")
        if f.tell() > 0:
            with self.path.open("rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    f.write("\n")
        return f

    def append(self, f: TextIO, marker: DoneMarker, check: BlockCheck) -> None:
        entry = {
            "block": marker.block,
            "marker_sha256": marker_sha256(marker),
            "stamp": check.stamps.output,
            "input_stamp": check.stamps.input,
            "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        f.write(json.dumps(entry) + "\n")
        f.flush()


@dataclass
class _VerifyCounter:
    """Blocks checked / total and the rate, on stderr at most every ``interval`` seconds."""

    total: int
    interval: float = 10.0
    done: int = 0
    nbytes: int = 0
    problems: int = 0

    def __post_init__(self) -> None:
        self.started = self.shown = time.monotonic()

    def add(self, check: BlockCheck) -> None:
        self.done, self.nbytes = self.done + 1, self.nbytes + check.nbytes
        self.problems += not check.fine
        now = time.monotonic()
        if now - self.shown >= self.interval or self.done == self.total:
            self.shown, seconds = now, max(now - self.started, 1e-9)
            print(
                f"verify: {self.done:,}/{self.total:,} blocks, {self.done / seconds:.2f} blocks/s, "
                f"{self.nbytes / seconds / 1e6:.1f} MB/s, {self.problems:,} with problems",
                file=sys.stderr,
                flush=True,
            )


@dataclass(frozen=True)
class VerifyReport:
    """What a verify run found: ``finished`` blocks, ``sampled`` of them, ``skipped`` as verified
    before, the ``checks`` made (by block id), the blocks ``invalidated`` (or to invalidate, when
    the run directory is not ``writable``)."""

    finished: int
    sampled: int
    skipped: int
    checks: list[BlockCheck]
    invalidated: list[str]
    inputs: bool
    writable: bool = True

    @property
    def problems(self) -> list[BlockCheck]:
        return [c for c in self.checks if not c.fine]

    def lines(self) -> list[str]:
        """One line per block with a problem: its id, what is wrong, and whether its marker was
        invalidated."""
        invalid = set(self.invalidated)
        return [
            f"{c.block}: {'; '.join([*c.damage, *c.changed_input])}"
            + (
                f" (marker {'invalidated' if self.writable else 'to invalidate'})"
                * (c.block in invalid)
            )
            for c in self.problems
        ]

    def summary(self) -> str:
        damaged = sum(1 for c in self.checks if c.damage)
        changed = sum(1 for c in self.checks if c.changed_input and not c.damage)
        what = "output and input" if self.inputs else "output"
        text = (
            f"verify: {len(self.checks):,} of {self.finished:,} finished blocks checked ({what}; "
            f"{self.skipped:,} verified before, {self.finished - self.sampled:,} not sampled): "
            f"{len(self.checks) - len(self.problems):,} fine, {damaged:,} damaged"
        )
        text += f", {changed:,} with a changed input" if self.inputs else ""
        n = len(self.invalidated)
        if n and self.writable:
            text += (
                f"; {n:,} marker{'s' * (n != 1)} invalidated (*.invalid): "
                "rerun snakemake to recompute those blocks"
            )
        elif n:
            text += (
                f"; the run directory is read-only: {n:,} marker{'s' * (n != 1)} to invalidate, "
                "nothing changed (run verify where it can write to invalidate them)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "sampled": self.sampled,
            "skipped": self.skipped,
            "checked": len(self.checks),
            "inputs": self.inputs,
            "problems": {c.block: [*c.damage, *c.changed_input] for c in self.problems},
            "invalidated": self.invalidated if self.writable else [],
            "to_invalidate": [] if self.writable else self.invalidated,
        }

    @property
    def exit_status(self) -> int:
        return PROBLEMS_EXIT if self.problems else 0


def verify(plan: RunPlan, options: VerifyOptions, state: RunState | None = None) -> VerifyReport:
    """Check the finished blocks of ``plan``, record the fine ones and invalidate the damaged
    ones (and with ``invalidate_changed_inputs`` those whose input changed)."""
    settings = plan.settings
    output = open_output(settings.output)
    plan.check_output(output)  # a store of other settings: refused
    state = state or RunState.of(plan)  # the workflow: the state its rule names
    done = read_markers(state, plan.block_ids, output.info.store_id).done
    chosen = set(sample([m.block for m in done], options.sample, options.seed))
    markers = [m for m in done if m.block in chosen]
    record, inputs = VerifiedRecord(state), options.check_inputs
    writable = os.access(state.root, os.W_OK)
    known = {} if options.again else record.load()
    input = open_input(settings.input) if inputs else None

    def verified(marker: DoneMarker) -> bool:
        """Found fine before, reading what its storage objects still are (a format that
        cannot tell without reading them is read again)."""
        before = known.get((marker.block, marker_sha256(marker)))
        if not before:
            return False
        now = stamps(plan, marker.block, output, input)
        return (
            now.output is not None
            and (input is None or now.input is not None)
            and any(
                s.output == now.output and (input is None or s.input == now.input) for s in before
            )
        )

    todo = [m for m in markers if not verified(m)]
    found = _check_all(plan, state, todo, options, record if writable else None)
    checks = sorted(found, key=lambda c: c.block)
    invalid = [c.block for c in checks if options.invalidates(c)]
    skipped = len(markers) - len(todo)
    return VerifyReport(len(done), len(markers), skipped, checks, invalid, inputs, writable)


def _check_all(
    plan: RunPlan,
    state: RunState,
    markers: list[DoneMarker],
    options: VerifyOptions,
    record: VerifiedRecord | None,
) -> list[BlockCheck]:
    """Check ``markers``' blocks, ``jobs`` at a time; as each check comes in, append a fine
    block to ``record`` or set an invalid one's marker aside (out of Snakemake's sight: the next
    run recomputes the block); neither without a ``record`` (a read-only run directory).
    Progress on stderr."""
    if not markers:
        return []
    checks, progress = [], _VerifyCounter(len(markers))
    pool = ThreadPoolExecutor(options.jobs)
    try:
        futures = {pool.submit(check_block, plan, m, options.check_inputs): m for m in markers}
        with record.open() if record else contextlib.nullcontext() as f:
            for future in as_completed(futures):
                check = future.result()
                if record is not None and check.fine:
                    record.append(f, futures[future], check)
                elif record is not None and options.invalidates(check):
                    set_aside(state.marker(check.block))
                checks.append(check)
                progress.add(check)
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C too: what was checked is kept
    return checks


def run_verify(
    plan: RunPlan,
    options: VerifyOptions,
    record: str | None = None,
    state: RunState | None = None,
) -> int:
    """``verify``, then print a line per block with a problem and the summary, write the report
    as JSON to ``record`` if given; return the exit status (``PROBLEMS_EXIT`` on any problem)."""
    report = verify(plan, options, state)
    for line in report.lines():
        print(line)
    print(report.summary())
    if record:
        write_json_atomic(Path(record), report.to_json())
    return report.exit_status
