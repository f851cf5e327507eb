"""What the Snakefile needs from a config: block ids, the result fingerprint, job resources.

Pure Python (no Snakemake import), so it is unit-tested like the rest of the package.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError
from chunkflow.markers import marker_dir, write_text_atomic
from chunkflow.plan import RunPlan, make_plan


@dataclass(frozen=True)
class WorkflowPlan:
    plan: RunPlan
    config_path: str

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def state_dir(self) -> str:
        return self.plan.settings.state_dir

    @property
    def block_ids(self) -> list[str]:
        return self.plan.block_ids

    def marker(self, block_id: str) -> str:
        return self.marker_pattern.format(block=block_id)

    @property
    def marker_pattern(self) -> str:
        return str(marker_dir(self.state_dir) / "{block}.json")

    @property
    def output_record(self) -> str:
        return str(Path(self.state_dir) / "output.json")

    @property
    def finish_record(self) -> str:
        return str(Path(self.state_dir) / "finished.json")

    @property
    def final_targets(self) -> list[str]:
        """What ``rule all`` asks for besides the markers: the summary, and the finished
        output for formats that assemble their blocks (HDF5)."""
        from chunkflow.output_store import needs_finish

        return [self.summary_json] + ([self.finish_record] if needs_finish(self.plan) else [])

    @property
    def summary_json(self) -> str:
        return str(Path(self.state_dir) / "summary.json")

    @property
    def summary_text(self) -> str:
        return str(Path(self.state_dir) / "summary.txt")

    def log(self, rule: str, name: str = "") -> str:
        return str(
            Path(self.state_dir) / "logs" / (f"{rule}/{name}.log" if name else f"{rule}.log")
        )

    @property
    def job_mem_mb(self) -> int:
        """A block job's memory request: the estimate from the piece size (``job_memory``)."""
        return math.ceil(self.plan.job_memory_bytes() / 2**20)

    @property
    def job_runtime_min(self) -> int:
        """A block job's runtime request on its first attempt: 10 minutes for start-up, plus
        twice the block's voxels at ``job.voxels_per_second``."""
        settings = self.plan.settings
        block_voxels = math.prod(settings.block_size)
        return 10 + math.ceil(2 * block_voxels / settings.job_voxels_per_second / 60)


def _write_if_changed(path: Path, text: str) -> None:
    if not (path.exists() and path.read_text() == text):
        write_text_atomic(path, text)


def prepare(config: dict[str, Any]) -> WorkflowPlan:
    """Validate ``config``, plan the run, and store the config where block jobs read it.

    The stored copy is rewritten only when its content changes. Jobs get its path, not its
    content, so settings that cannot change the result (batch size, device) rerun nothing.
    Also puts this Python's bin folder first on PATH, so jobs find the `chunkflow` command.
    """
    if not config:
        raise ConfigError(
            "no configuration: run snakemake with --configfile <config.yaml> "
            "(the demo: --configfile config/config.yaml)"
        )
    settings = config_mod.parse(config)
    plan = make_plan(settings)
    plan.blocks  # noqa: B018 (reads the mask, if any: its mistakes are one-line errors here)
    config_path = Path(settings.state_dir) / "config.yaml"
    _write_if_changed(config_path, yaml.safe_dump(config, sort_keys=True))
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    plan.fingerprint  # noqa: B018 (hashes the model file now, once)
    return WorkflowPlan(plan, str(config_path))
