"""One function per action on a run, shared by the `chunkflow` command and the workflow's
scripts: each takes the run's plan and the ``RunState`` it works in, and returns the lines it
prints. The workflow passes the state that Snakemake names (``RunState.holding``: the configured
state dir, or its local copy when the run's state is in a bucket); the command, the plan's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from chunkflow.inspect.block_logs import finished_line
from chunkflow.inspect.report import write_report
from chunkflow.inspect.summary import format_summary, summarize
from chunkflow.job.block_job import run_blocks
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state import output_store
from chunkflow.state.files import write_json_atomic
from chunkflow.state.run_state import RunState


def create_output(plan: RunPlan, state: RunState) -> str:
    """Create the output store (or check and reuse an existing one) and record it in the
    plan's state dir and in ``state`` (``RunState.output_record``)."""
    volume, created = output_store.create_output(plan)
    if state != RunState.of(plan):  # the workflow's target is a staged copy: record it there too
        write_json_atomic(state.output_record(), output_store.output_record(volume, created))
    verb = "created" if created else "reusing matching"
    return f"{verb} output {volume.path}: {volume.info.channels} channels, {volume.info.bounds}"


def finish_output(plan: RunPlan, state: RunState) -> str:
    """Make the output whole after its blocks (HDF5: the virtual dataset) and record that in
    ``state`` (``RunState.finish_record``)."""
    volume = output_store.finish_output(plan)
    write_json_atomic(state.finish_record, {"path": volume.path, "finished": True})
    return f"finished output {volume.path}"


def compute_blocks(
    plan: RunPlan, block_ids: list[str], state: RunState, expect_fingerprint: str | None = None
) -> Iterator[str]:
    """Compute the named blocks, their done-markers and piece progress in ``state``; a line
    per block once its marker is written."""
    for marker in run_blocks(plan, block_ids, expect_fingerprint, state):
        yield finished_line(marker)


def summary(
    plan: RunPlan,
    state: RunState,
    json_path: str | Path | None = None,
    text_path: str | Path | None = None,
    report_path: str | Path | None = None,
) -> str:
    """The run summary of the done-markers in ``state`` (``output_store.marker_census``);
    written as JSON, as text and as the HTML report where those paths are given."""
    done = output_store.marker_census(plan, state).done
    numbers = summarize(plan, done)
    text = format_summary(numbers)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(numbers, indent=1) + "\n")
    if text_path is not None:
        Path(text_path).write_text(text + "\n")
    if report_path is not None:
        write_report(plan, done, report_path, state)
    return text


def report(plan: RunPlan, state: RunState, path: str | Path | None = None) -> str:
    """Write the HTML report (default: ``RunState.report_html``)."""
    done = output_store.marker_census(plan, state).done
    written = write_report(plan, done, path or state.report_html, state).resolve()
    return f"wrote {written}; open it in a web browser"
