"""Running a whole plan in this process, without Snakemake: for tests, benchmarks and small
volumes on one machine."""

from __future__ import annotations

from chunkflow.job.block_job import BlockRunner
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import DoneMarker
from chunkflow.state.output_store import create_output, finish_output
from chunkflow.state.run_state import RunState


def run_locally(plan: RunPlan) -> list[DoneMarker]:
    """Create (or reuse) the output, compute every block of ``plan`` with one loaded model
    (reading ahead and writing behind), then finish the output (HDF5: its virtual dataset).

    Returns the blocks' done-markers, which are also written to the state directory.
    """
    create_output(plan)
    markers = BlockRunner(plan, RunState.of(plan)).run(plan.blocks)
    finish_output(plan)
    return markers
