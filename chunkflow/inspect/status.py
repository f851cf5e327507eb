"""`chunkflow status`: how far a run is. Blocks done, running, failed and missing; the
throughput over the last hour and the time left at that rate; the slowest blocks; the failed
blocks with the first line of their error.

It reads the done-markers (one listing of their folder) and the logs of the blocks without one
(``block_logs``); every list is cut at ``show`` entries, and says how many it left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from chunkflow.inspect.block_logs import BlockLog, unfinished_logs
from chunkflow.inspect.summary import skipped_note
from chunkflow.plan.costs import format_seconds
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import DoneMarker

T = TypeVar("T")
WINDOW_S = 3600.0  # the throughput is measured over the last hour


@dataclass(frozen=True)
class Throughput:
    """What the blocks finished in the last ``WINDOW_S`` did: voxels per second and blocks per
    hour, from the first of them starting (or the window's start) to now, or to the last
    finish when no block is left."""

    blocks: int
    voxels_per_s: float
    blocks_per_h: float


@dataclass(frozen=True)
class RunStatus:
    total: int
    done: list[DoneMarker]
    stale: list[str]  # no marker; markers of other settings
    missing: list[str]  # no marker at all
    note: str | None  # what the output holds instead of this run's results
    logs: list[BlockLog]  # of the blocks without a marker: failed, running or stopped
    voxels_left: int
    throughput: Throughput | None

    def with_state(self, state: str) -> list[BlockLog]:
        return [log for log in self.logs if log.state == state]


def run_status(plan: RunPlan) -> RunStatus:
    """The status of ``plan``'s run (see ``RunState.require`` first)."""
    from chunkflow.state.output_store import marker_census

    census = marker_census(plan)
    done, stale, missing, note = census.done, census.stale, census.missing, census.note
    logs = unfinished_logs(plan, set(stale) | set(missing))
    voxels_left = sum(block.box.size for block in plan.blocks) - sum(m.voxels for m in done)
    return RunStatus(
        len(plan.blocks),
        done,
        stale,
        missing,
        note,
        logs,
        voxels_left,
        throughput(done, time.time(), finished=voxels_left == 0),
    )


def throughput(done: list[DoneMarker], now: float, finished: bool) -> Throughput | None:
    """The ``Throughput`` of the blocks of ``done`` finished in the ``WINDOW_S`` before
    ``now``; None if none was."""
    ends = [(datetime.fromisoformat(m.finished).timestamp(), m) for m in done]
    recent = [(end, m) for end, m in ends if now - WINDOW_S <= end <= now]
    if not recent:
        return None
    start = max(now - WINDOW_S, min(end - m.seconds for end, m in recent))
    stop = max(end for end, _ in recent) if finished else now
    seconds = max(stop - start, 1.0)  # finish times are whole seconds
    voxels = sum(m.voxels for _, m in recent)
    return Throughput(len(recent), voxels / seconds, len(recent) * 3600 / seconds)


def _capped(
    label: str, items: list[T], show: int | None, line: Callable[[T], str] = str
) -> list[str]:
    """``  <label> <line(item)>`` for the first ``show`` items (all for None), then how many
    were left out."""
    shown = items if show is None else items[:show]
    more = len(items) - len(shown)
    extra = [f"  {label} (+{more:,} more; --show N or --show all)"] if more else []
    return [f"  {label} {line(item)}" for item in shown] + extra


def _slowest(marker: DoneMarker) -> str:
    stages = ", ".join(f"{k} {marker.timings_s[k]:.3g} s" for k in ("read", "infer", "write"))
    return f"{marker.block} {format_seconds(marker.seconds)} ({stages})"


def _progress(log: BlockLog) -> str:
    """A running block's last log line, without the prefix that names it."""
    return log.last_line.removeprefix(f"chunkflow: block {log.block}: ") or "(no progress yet)"


def format_status(status: RunStatus, show: int | None) -> str:
    s = status
    failed, running = s.with_state("failed"), s.with_state("running")
    skipped = sum(1 for marker in s.done if marker.skipped)
    lines = [f"{len(s.done)}/{s.total} blocks done{skipped_note(skipped)}"]
    if s.note:
        lines.append(f"  {s.note}")
    without = len(s.stale) + len(s.missing)
    stale = f" ({len(s.stale):,} of them stale: done with other settings)" if s.stale else ""
    lines.append(
        f"  running {len(running):,}, failed {len(failed):,}, "
        f"missing {without - len(running) - len(failed):,}{stale}"
    )
    rate = s.throughput
    if rate is None:
        lines.append("  throughput: no block finished in the last hour")
    else:
        lines.append(
            f"  throughput over the last hour: {rate.voxels_per_s / 1e6:.3g} "
            f"Mvoxel/s, {rate.blocks_per_h:,.1f} blocks/h ({rate.blocks:,} block{'s' * (rate.blocks != 1)} finished)"
        )
    if without:
        eta = (
            f"~{format_seconds(s.voxels_left / rate.voxels_per_s)} at that rate"
            if rate
            else "unknown"
        )
        lines.append(f"  blocks left: {without:,} ({s.voxels_left:,} voxels); ETA {eta}")
    lines += _capped(
        "failed", failed, show, lambda log: f"{log.block}: {log.error} (log: {log.path.absolute()})"
    )
    lines += _capped(
        "running",
        running,
        show,
        lambda log: f"{log.block}: {_progress(log)} ({format_seconds(log.age_s)} ago)",
    )
    slowest = sorted(s.done, key=lambda m: (-m.seconds, m.block))
    lines += _capped("slowest", slowest, show, _slowest)
    listed = {log.block for log in failed + running}
    lines += _capped("stale (settings changed)", [b for b in s.stale if b not in listed], show)
    lines += _capped("missing", [b for b in s.missing if b not in listed], show)
    return "\n".join(lines)
