"""What the Snakefile needs from a config: block ids, the result fingerprint, the paths of its
targets (asked of the run's ``RunState``), job resources.

The main snakemake process plans the run and records these ``JobFacts``; a job's re-parse of the Snakefile (a SLURM job) reads them instead of planning again,
so that a block job parses its config and plans once: in its own command.

Pure Python (no Snakemake import), so it is unit-tested like the rest of the package.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from chunkflow import config as config_mod
from chunkflow.errors import ChunkflowError, ConfigError
from chunkflow.inspect.block_logs import first_error, log_tail, unfinished_logs
from chunkflow.plan.run_plan import RunPlan, make_plan
from chunkflow.state.files import undate_future, write_json_atomic, write_text_atomic
from chunkflow.state.markers import set_aside_invalid
from chunkflow.state.run_state import RunState


@dataclass(frozen=True)
class JobFacts:
    """What the Snakefile's rules need of a plan: recorded by the main snakemake process, read
    by a job's re-parse of the workflow."""

    fingerprint: str
    state_dir: str
    block_ids: list[str]
    verify: bool  # rule all asks for the verify record
    assembles: bool  # the output's format has a finishing step (HDF5)
    threads: int
    job_mem_mb: int
    job_runtime_min: int

    @classmethod
    def of(cls, plan: RunPlan) -> JobFacts:
        from chunkflow.state.output_store import needs_finish

        settings = plan.settings
        block_voxels = math.prod(settings.block_size)
        return cls(
            fingerprint=plan.fingerprint,
            state_dir=settings.state_dir,
            block_ids=plan.block_ids,
            verify=settings.verify,
            assembles=needs_finish(plan),
            threads=settings.inference.threads,
            # the estimate from the piece size (``job_memory``)
            job_mem_mb=math.ceil(plan.job_memory_bytes() / 2**20),
            # on the first attempt: 10 minutes for start-up, plus twice the block's voxels at
            # ``job.voxels_per_second``
            job_runtime_min=10 + math.ceil(2 * block_voxels / settings.job_voxels_per_second / 60),
        )

    @classmethod
    def read(cls, path: Path) -> JobFacts | None:
        """The facts recorded in ``path``; None when there are none (or not readable)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class WorkflowRun:
    """A run as the Snakefile sees it: its ``JobFacts``, the config its jobs read, its state,
    and (in the main process) its plan."""

    facts: JobFacts
    # a Path: Snakemake's params trigger records plain values only, so a new stored config
    # (batch_size changed) reruns nothing; the fingerprint decides that
    config_path: Path
    config: dict[str, Any]
    planned: RunPlan | None = None  # the main process's plan; a job's re-parse makes none
    started: float = field(default_factory=time.time)  # when this snakemake read the config

    @cached_property
    def plan(self) -> RunPlan:
        """The run's plan (only the main process's checks need it)."""
        return (
            self.planned if self.planned is not None else make_plan(config_mod.parse(self.config))
        )

    @property
    def fingerprint(self) -> str:
        return self.facts.fingerprint

    @property
    def state(self) -> RunState:
        return RunState(Path(self.facts.state_dir), self.facts.fingerprint)

    @property
    def block_ids(self) -> list[str]:
        return self.facts.block_ids

    @property
    def threads(self) -> int:
        return self.facts.threads

    def marker(self, block_id: str) -> str:
        return self.marker_pattern.format(block=block_id)

    @property
    def marker_pattern(self) -> str:
        return str(self.state.marker("{block}"))

    @property
    def output_record(self) -> str:
        return str(self.state.output_record())

    def check_model(self) -> None:
        """Load and probe the model once (cached by its digest and the patch geometry) and
        check an existing output against it: its mistakes fail here, in one line, not in the
        first job (``model_check``). Only for the main snakemake process, like ``reconcile``."""
        from chunkflow.state.model_facts import check_before_jobs

        check_before_jobs(self.plan)

    def reconcile(self) -> list[str]:
        """Make what Snakemake will find match what counts, before it builds its DAG; return
        warnings. Only for the main snakemake process: a job's re-parse must not (nor need to).

        An output holding results this run may not replace is refused (one line, nothing
        touched). Unless the output records this run's fingerprint, this fingerprint's markers
        and output record are set aside (``output_store.supersede``): the output is then taken
        over and every block computed. Otherwise the markers that are not valid markers of
        their block in that store (of its identity) are set aside as ``*.invalid``, and those
        blocks computed again. The state files that are inputs of rules are dated now if a
        clock ahead dated them later (``files.undate_future``).
        """
        from chunkflow.state.output_store import current_store, supersede

        store, state, warnings = current_store(self.plan), self.state, []
        markers = state.marker_dir()
        inputs = [state.output_record(), state.finish_record]
        if future := undate_future([*inputs, *(markers.iterdir() if markers.is_dir() else [])]):
            warnings.append(
                f"{len(future)} file(s) of the run's state were dated in the future (a clock "
                f"ahead, e.g. {future[0]}); dated now, so that no job fails on them"
            )
        if store is None:
            if count := supersede(self.plan):
                warnings.append(
                    f"output '{self.plan.settings.output.path}' does not hold the results of "
                    f"this config (fingerprint {self.fingerprint}): set aside its {count} "
                    "earlier done-marker(s); every block will be computed"
                )
        elif invalid := set_aside_invalid(state, store.info.store_id):
            warnings.append(
                f"set aside {len(invalid)} done-marker(s) that do not count as *.invalid "
                f"(e.g. {invalid[0]}); their blocks will be computed again"
            )
        return warnings

    def check_state_in_bucket(self, prefix: str, endpoint: str | None) -> str | None:
        """With the run's state in a bucket (Snakemake's storage plugin, default prefix
        ``prefix``), refuse in one line an output that is gone while the bucket's state still
        records it (its done-markers would count, ``reconcile`` cannot see them); a warning
        when the bucket cannot be asked (None: all is well). Main snakemake process only."""
        from chunkflow.volumes import volume_exists
        from chunkflow.volumes.stores import read_object

        output = self.plan.settings.output
        if volume_exists(output.path, output.storage_options):
            return None  # its fingerprint: checked by reconcile, as with local state
        record = Path(self.output_record)
        if record.is_absolute():
            return None  # not under the storage prefix
        state = f"{prefix.rstrip('/')}/{record.parent.as_posix()}"
        try:
            held = read_object(state, record.name, {"endpoint_url": endpoint} if endpoint else None)
        except ChunkflowError as err:
            return f"could not check the run's state in '{prefix}' against the output ({err})"
        if held is None:
            return None  # a new run
        raise ChunkflowError(
            f"output '{output.path}' does not exist, but the run's state in "
            f"'{state}' records blocks written into it; delete the run's objects under "
            f"'{prefix}' (or use another --default-storage-prefix) to compute every block anew"
        )

    def settings_note(self) -> str | None:
        """Record this fingerprint's settings in the state dir; when the output holds the
        results of another fingerprint, one line naming the settings that changed, before and
        now (``setting_changes``). Only for the main snakemake process, like ``reconcile``."""
        from chunkflow.state.output_store import open_existing
        from chunkflow.state.setting_changes import change_note, record_settings

        record_settings(self.plan)
        existing = open_existing(self.plan)
        held = existing.info.fingerprint if existing is not None else None
        return None if held in (None, self.fingerprint) else change_note(self.plan, held)

    @property
    def finish_record(self) -> str:
        return str(self.state.finish_record)

    @property
    def final_targets(self) -> list[str]:
        """What ``rule all`` asks for besides the markers: the ``finished_targets``, and with
        ``verify: true`` the verify record."""
        verify = [self.verify_record] if self.facts.verify else []
        return self.finished_targets + verify

    @property
    def finished_targets(self) -> list[str]:
        """The summary, and the finished output for formats that assemble their blocks (HDF5):
        what the verify rule waits for."""
        return [self.summary_json, *self.finish_targets]

    @property
    def finish_targets(self) -> list[str]:
        """The finish record for formats that assemble their blocks (HDF5), else nothing: what
        the summary waits for besides the markers (its report reads the output)."""
        return [self.finish_record] if self.facts.assembles else []

    @property
    def verify_record(self) -> str:
        return str(self.state.verify_record)

    @property
    def summary_json(self) -> str:
        return str(self.state.summary_json)

    @property
    def summary_text(self) -> str:
        return str(self.state.summary_text)

    @property
    def report_html(self) -> str:
        return str(self.state.report_html)

    def log(self, rule: str, name: str = "") -> str:
        return str(self.state.log(rule, name))

    def failure_lines(self, most: int = 3) -> list[str]:
        """The causes of this snakemake's failed jobs, a line each, for the end of its output
        (the Snakefile's ``onerror``): the first error of each rule log and block log written
        since it started; at most ``most`` block jobs, then how many more failed."""
        lines = []
        for rule in ("create_output", "finish_output", "summary", "verify"):
            path = Path(self.log(rule))
            if path.is_file() and path.stat().st_mtime >= self.started:
                if cause := first_error(log_tail(path)):
                    lines.append(_failure_line(rule, cause, path))
        without_marker = _WithoutMarker(self.state)
        window = time.time() - self.started
        failed = [
            log
            for log in unfinished_logs(self.plan, without_marker)
            if log.error is not None and log.age_s <= window
        ]
        lines += [_failure_line(f"block {f.block}", f.error, f.path) for f in failed[:most]]
        if len(failed) > most:
            lines.append(
                f"chunkflow: {len(failed) - most} more block job(s) failed: see `chunkflow status`"
            )
        return lines

    @property
    def job_mem_mb(self) -> int:
        """A block job's memory request (``JobFacts.job_mem_mb``)."""
        return self.facts.job_mem_mb

    @property
    def job_runtime_min(self) -> int:
        """A block job's runtime request on its first attempt (``JobFacts.job_runtime_min``)."""
        return self.facts.job_runtime_min


def _failure_line(job: str, cause: str, log: Path) -> str:
    cause = cause.split("chunkflow: error: ", 1)[-1]
    return f"chunkflow: error: {job} failed: {cause} (log: {log})"


@dataclass(frozen=True)
class _WithoutMarker:
    """The blocks without a done-marker in ``state``, as a container (no listing)."""

    state: RunState

    def __contains__(self, block_id: object) -> bool:
        return not self.state.marker(str(block_id)).exists()


def prepare(config: dict[str, Any], main: bool = True) -> WorkflowRun:
    """Validate ``config``, plan the run, store the config where block jobs read it and record
    the ``JobFacts`` beside it; in a job's re-parse (``main`` false), read those facts instead
    (and plan only if they are not there: state on another file system).

    The stored copy is named by its content (``RunState.stored_config``; it adds the input
    statistics a bioimage.io package needs, as the plan measured them), the facts by what
    they depend on without reading the input (``RunState.job_facts``), and neither is
    rewritten unless what is recorded differs: a snakemake that the lock then refuses changes
    nothing another run's jobs read, unless the input changed under that run (its fingerprint
    identifies the input by content: those jobs fail on it anyway).
    Also puts this Python's bin folder first on PATH, so jobs find the `chunkflow` command.
    """
    if not config:
        raise ConfigError(
            "no configuration: run snakemake with --configfile <config.yaml> "
            "(the demo: --configfile config/config.yaml)"
        )
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    text = yaml.safe_dump(config, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    key = _facts_key(text, config)
    if not main:
        state_dir = config.get("state_dir", config_mod.default("state_dir"))
        facts = JobFacts.read(RunState.job_facts(state_dir, key))
        if facts is not None:
            return WorkflowRun(facts, RunState.stored_config(state_dir, digest), config)
    plan = make_plan(config_mod.parse(config))
    plan.blocks  # noqa: B018 (reads the mask, if any: its mistakes are one-line errors here)
    facts = JobFacts.of(plan)  # hashes the model file now, once (the fingerprint)
    stored = RunState.stored_config(plan.settings.state_dir, digest)
    jobs_text = _jobs_config(config, plan, text)
    if not stored.exists() or stored.read_text() != jobs_text:
        write_text_atomic(stored, jobs_text)
    recorded = RunState.job_facts(plan.settings.state_dir, key)
    if JobFacts.read(recorded) != facts:
        write_json_atomic(recorded, asdict(facts))
    return WorkflowRun(facts, stored, config, plan)


def _jobs_config(config: dict[str, Any], plan: RunPlan, text: str) -> str:
    """The config text the block jobs read: ``text``, with the input statistics the plan
    measured for a bioimage.io package (``model.statistics``), so that no job measures them
    again."""
    measured = plan.settings.model.statistics
    if measured is None or config.get("model", {}).get("statistics") is not None:
        return text
    jobs = {**config, "model": {**config["model"], "statistics": measured}}
    return yaml.safe_dump(jobs, sort_keys=True)


def _facts_key(text: str, config: dict[str, Any]) -> str:
    """What the ``JobFacts`` of a config depend on, without reading the model: the config's
    text, and the inode, size and change times of its model files (their content is checked
    by the job itself, against the fingerprint the facts hold)."""
    model = config.get("model", {})
    stamps = []
    for path in (model.get("path"), model.get("weights")):
        try:
            stat = os.stat(path) if path else None
        except OSError:
            stat = None
        identity = [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns] if stat else None
        stamps.append(identity)  # ctime and inode: a copy that keeps size and mtime differs
    what = json.dumps([text, stamps])
    return hashlib.sha256(what.encode()).hexdigest()[:32]
