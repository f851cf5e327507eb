"""The model probe's facts, cached in the run's state: repeated Snakemake invocations, their
jobs (``create_output``) and SLURM jobs do not load the model again for them."""

from __future__ import annotations

import json
from dataclasses import asdict

from chunkflow.plan import model_check
from chunkflow.plan.model_check import ModelFacts, check_key, check_output_against
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.files import write_json_atomic
from chunkflow.state.run_state import RunState


def model_facts(plan: RunPlan, record: bool = True) -> ModelFacts:
    """The model's facts: from the cache, else from a probe (whose result is cached when
    ``record``; `chunkflow plan` writes nothing)."""
    path = RunState.of(plan).model_check(check_key(plan))
    try:
        return ModelFacts(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass  # not checked yet (or an unreadable cache entry): probe
    facts = ModelFacts(output_channels=model_check.probe(plan))
    if record:
        write_json_atomic(path, asdict(facts))
    return facts


def check_before_jobs(plan: RunPlan, record: bool = True) -> ModelFacts:
    """``model_facts``, and an existing output checked against them."""
    facts = model_facts(plan, record)
    check_output_against(plan, facts)
    return facts
