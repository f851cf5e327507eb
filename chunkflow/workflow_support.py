"""What the Snakefile needs from a config: block ids, the result fingerprint, job resources.

Pure Python (no Snakemake import), so it is unit-tested like the rest of the package.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError
from chunkflow.markers import marker_path, set_aside_invalid, write_text_atomic
from chunkflow.plan import RunPlan, make_plan


@dataclass(frozen=True)
class WorkflowPlan:
    plan: RunPlan
    # a Path: Snakemake's params trigger records plain values only, so a new stored config
    # (batch_size changed) reruns nothing; the fingerprint decides that
    config_path: Path

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
        return str(marker_path(self.state_dir, self.fingerprint, "{block}"))

    @property
    def output_record(self) -> str:
        from chunkflow.output_store import record_path

        return str(record_path(self.state_dir, self.fingerprint))

    def reconcile(self) -> list[str]:
        """Make what Snakemake will find match what counts, before it builds its DAG; return
        warnings. Only for the main snakemake process: a job's re-parse must not (nor need to).

        An output holding results this run may not replace is refused (one line, nothing
        touched). Unless the output records this run's fingerprint, this fingerprint's markers
        and output record are set aside (``output_store.supersede``): the output is then taken
        over and every block computed. Otherwise the markers that are not valid markers of
        their block are set aside as ``*.invalid``, and those blocks computed again.
        """
        from chunkflow.output_store import results_current, supersede

        if not results_current(self.plan):
            count = supersede(self.plan)
            if not count:
                return []
            return [
                f"output '{self.plan.settings.output.path}' does not hold the results of this "
                f"config (fingerprint {self.fingerprint}): set aside its {count} earlier "
                "done-marker(s); every block will be computed"
            ]
        invalid = set_aside_invalid(self.state_dir, self.fingerprint)
        if not invalid:
            return []
        return [
            f"set aside {len(invalid)} done-marker(s) that do not count as *.invalid "
            f"(e.g. {invalid[0]}); their blocks will be computed again"
        ]

    @property
    def finish_record(self) -> str:
        return str(Path(self.state_dir) / "finished.json")

    @property
    def final_targets(self) -> list[str]:
        """What ``rule all`` asks for besides the markers: the ``finished_targets``, and with
        ``verify: true`` the verify record."""
        verify = [self.verify_record] if self.plan.settings.verify else []
        return self.finished_targets + verify

    @property
    def finished_targets(self) -> list[str]:
        """The summary, and the finished output for formats that assemble their blocks (HDF5):
        what the verify rule waits for."""
        from chunkflow.output_store import needs_finish

        return [self.summary_json] + ([self.finish_record] if needs_finish(self.plan) else [])

    @property
    def verify_record(self) -> str:
        return str(Path(self.state_dir) / "verify.json")

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


def prepare(config: dict[str, Any]) -> WorkflowPlan:
    """Validate ``config``, plan the run, and store the config where block jobs read it.

    The stored copy is named by its content, ``<state_dir>/configs/<sha256>.yaml``, and never
    rewritten: a snakemake that the lock then refuses changes nothing another run's jobs read.
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
    text = yaml.safe_dump(config, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    config_path = Path(settings.state_dir) / "configs" / f"{digest}.yaml"
    if not config_path.exists():
        write_text_atomic(config_path, text)
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    plan.fingerprint  # noqa: B018 (hashes the model file now, once)
    return WorkflowPlan(plan, config_path)
