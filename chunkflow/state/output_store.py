"""The output store: created once with the geometry and channel count the run will write, and
finished once every block is written (a no-op except for formats that assemble parts: HDF5).

The store records the result fingerprint of what it holds, and an identity (``store_id``) given
when it is created or taken over. A run whose fingerprint differs writes into it only after
recording its own with a new identity (``create_output``), which it may do when
``output.replace`` says so or when the store holds this state dir's own earlier results; then
every block is computed again. A done-marker, and a block's piece state, count only while the
store records their fingerprint and identity: a store deleted and made again, or taken over and
taken back, holds none of what they describe.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from chunkflow.errors import VolumeError
from chunkflow.geometry.grid import BlockGrid
from chunkflow.plan.run_plan import RunPlan, other_results, refuse_other_results
from chunkflow.state.files import set_aside, write_json_atomic
from chunkflow.state.markers import ANY_STORE, MarkerCensus, read_markers
from chunkflow.state.model_facts import model_facts
from chunkflow.state.run_state import RunState
from chunkflow.volumes import (
    Volume,
    find_output,
    output_backend,
    refuse_mismatch,
)


def output_record(volume: Volume, created: bool) -> dict[str, Any]:
    """What the record says: the output's path, whether it was created, its metadata."""
    return {"path": volume.path, "created": created, **asdict(volume.info)}


def may_replace(plan: RunPlan, stored: str | None) -> bool:
    """Whether this run may record its fingerprint in an output holding the results of
    ``stored``: with ``output.replace``, or when this state dir made the output for ``stored``
    (its own earlier settings, which it may change: every block is then computed again)."""
    if plan.settings.output.replace:
        return True
    return stored is not None and RunState.of(plan).output_record(stored).exists()


def create_output(plan: RunPlan) -> tuple[Volume, bool]:
    """Create the output volume, or reuse a matching existing one; refuse a mismatching one,
    and one holding other results unless this run may replace them (``may_replace``): then
    record this plan's fingerprint in it. Record in the state dir that it did
    (``RunState.output_record``). A store created anew, or taken over, does not hold what this
    fingerprint's earlier done-markers describe: they are set aside first (``supersede``).

    An existing store is opened once and checked before the model is loaded, then its channel
    count against the model's. Returns the volume and whether it was created.
    """
    existing = plan.existing_output(results=False)
    if existing is not None and not may_replace(plan, existing.info.fingerprint):
        refuse_other_results(existing, plan.fingerprint)  # before anything is written
    channels = model_facts(plan).output_channels  # cached when the workflow planned
    store_id = uuid.uuid4().hex  # used when the store is created or taken over
    info = replace(plan.output_info(channels), fingerprint=plan.fingerprint, store_id=store_id)
    output = plan.settings.output
    if existing is None or existing.info.fingerprint != plan.fingerprint:
        supersede(plan)
    if existing is None:
        backend = output_backend(output.path, output.storage_options)
        volume, created = backend.create(output.path, info, output), True
    else:
        refuse_mismatch(existing, info, output)
        if existing.info.fingerprint != plan.fingerprint:
            existing.record_fingerprint(plan.fingerprint, store_id)
        volume, created = existing, False
    write_json_atomic(RunState.of(plan).output_record(), output_record(volume, created))
    return volume, created


def open_existing(plan: RunPlan) -> Volume | None:
    """The output opened for reading its metadata; None when nothing exists there yet."""
    return find_output(plan.settings.output)


def current_store(plan: RunPlan) -> Volume | None:
    """The output, if the done-markers of this plan's fingerprint may describe it: it exists and
    records that fingerprint (which of them do: ``markers.read_counting``, by its identity). An
    output holding other results that this run may not replace (``may_replace``) is refused in
    one line, untouched."""
    existing = open_existing(plan)
    if existing is None:
        return None
    if not may_replace(plan, existing.info.fingerprint):
        refuse_other_results(existing, plan.fingerprint)
    return existing if existing.info.fingerprint == plan.fingerprint else None


def supersede(plan: RunPlan) -> int:
    """Set aside this plan's done-markers and output record, which do not describe the output
    (``current_store`` is None), so that the workflow creates or takes over the output and
    computes every block; return how many markers were set aside."""
    state = RunState.of(plan)
    suffix = f".superseded-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    folder, record = state.marker_dir(), state.output_record()
    count = sum(1 for _ in folder.glob("*.json")) if folder.is_dir() else 0
    for path in (folder, record):
        if path.exists():
            set_aside(path, suffix)
    return count


def marker_census(plan: RunPlan, state: RunState | None = None) -> MarkerCensus:
    """``read_markers`` for ``plan`` (in ``state``, default: its configured state dir) and the
    output store there, where a marker is stale too unless the output records this plan's
    fingerprint; then the census's note says what the output holds instead (or why it cannot
    be opened)."""
    state = state or RunState.of(plan)
    try:
        existing = open_existing(plan)
    except VolumeError as err:  # a damaged store: no marker counts, and status says why
        return _all_stale(plan, read_markers(state, plan.block_ids, ANY_STORE), str(err))
    current = existing is not None and existing.info.fingerprint == plan.fingerprint
    census = read_markers(state, plan.block_ids, existing.info.store_id if current else ANY_STORE)
    if current or (existing is None and not census.done):
        return census
    if existing is None:
        note = f"output '{plan.settings.output.path}' does not exist"
    elif may_replace(plan, existing.info.fingerprint):  # this run's own earlier settings
        note = (
            f"output '{plan.settings.output.path}' holds the results of this run's earlier "
            f"settings (fingerprint {existing.info.fingerprint}); the next run computes every "
            "block anew"
        )
    else:
        note = str(other_results(existing, plan.fingerprint))
    return _all_stale(plan, census, note)


def _all_stale(plan: RunPlan, census: MarkerCensus, note: str) -> MarkerCensus:
    """``census`` with no marker counting: every block with one is stale, for ``note``."""
    old = {m.block for m in census.done}.union(census.stale)
    stale = [b for b in plan.block_ids if b in old]
    return MarkerCensus([], stale, census.missing, note)


def needs_finish(plan: RunPlan) -> bool:
    """Whether the output's format has a finishing step after the blocks (HDF5: the VDS)."""
    output = plan.settings.output
    return output_backend(output.path, output.storage_options).assembles_parts


def finish_output(plan: RunPlan) -> Volume:
    """Make the output whole over every piece of every block of the plan (HDF5: a part file
    each); the output must match the plan."""
    volume = plan.existing_output()
    if volume is None:
        raise VolumeError(
            f"output '{plan.settings.output.path}' does not exist; the workflow's create_output "
            "rule (or `chunkflow create-output`) makes it"
        )
    pieces = [BlockGrid(block.box, plan.piece_size) for block in plan.blocks]
    volume.finish([piece.box for grid in pieces for piece in grid])  # each written on its own
    return volume
