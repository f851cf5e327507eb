"""Running a whole config in-process (no Snakemake), block by block, and reading the result."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from chunkflow import config as config_mod
from chunkflow.block import BlockRunner
from chunkflow.models import model_sha256
from chunkflow.output_store import create_output
from chunkflow.plan import make_plan


def run_all_blocks(config: dict[str, Any]) -> np.ndarray:
    """Create the output, compute every block with one runner, return the output array."""
    settings = config_mod.parse(config)
    plan = make_plan(settings)
    create_output(plan)
    sha = model_sha256(settings.model)
    runner = BlockRunner(plan, settings.result_fingerprint(sha), sha)
    for block in plan.grid:
        runner.run(block)
    return zarr.open_array(settings.output.path, mode="r")[...]
