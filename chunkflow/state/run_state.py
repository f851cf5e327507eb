"""The run's state directory: the one place that knows where each of its files lives.

```
<state_dir>/
  blocks/<fingerprint>/<block>.json   done-markers (markers.py), one folder per fingerprint
  pieces/<block>/                     a streamed block's progress and carried sums (job/)
  jobs/<block>.json                   the host and pid of the job computing a block, meanwhile
  output/<fingerprint>.json           the record that this run made the output for a fingerprint
  finished.json                       the record that the output was made whole (HDF5)
  settings/<fingerprint>.json         each fingerprint's settings (setting_changes.py)
  configs/<digest>.yaml               the configs the workflow's jobs read, named by content
  plans/<key>.json                    what a job's re-parse of the workflow needs of the plan
  model_checks/<key>.json             the model probe's cached facts (model_facts.py)
  logs/<rule>.log, logs/<rule>/<job>.log   job logs
  summary.json, summary.txt, report.html   the run summary and the HTML report
  verify.json, verified.jsonl         the last verify report; the blocks found fine
```

Every other module asks a ``RunState`` for these paths; none joins them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chunkflow.errors import ChunkflowError

if TYPE_CHECKING:
    from chunkflow.plan.run_plan import RunPlan

BLOCK_RULE = "infer_block"  # the workflow rule whose job logs are named by block


def require_run(state_dir: str | Path) -> None:
    """A one-line error when there is no run: its state directory does not exist."""
    if not Path(state_dir).is_dir():
        raise ChunkflowError(
            f"no run here: its state directory '{Path(state_dir).resolve()}' does not exist; "
            "name the run directory with -d (relative paths in the config are taken from it)"
        )


@dataclass(frozen=True)
class RunState:
    """The state directory ``root`` of a run whose results have ``fingerprint``."""

    root: Path
    fingerprint: str

    @classmethod
    def of(cls, plan: RunPlan, root: str | Path | None = None) -> RunState:
        """The state of ``plan``'s run: in its configured ``state_dir``, or in ``root`` (e.g.
        the local copy that Snakemake's storage plugin stages)."""
        return cls(Path(plan.settings.state_dir if root is None else root), plan.fingerprint)

    @classmethod
    def holding(cls, path: str | Path, fingerprint: str) -> RunState:
        """The state of which ``path`` is a file that a workflow job writes (a done-marker, the
        output or finish record, the summary, the report, the verify record). Snakemake names
        a job's outputs where it wants them: in the configured state dir, or in its local copy
        under ``.snakemake/storage/`` when the run's state is in a bucket."""
        path = Path(path)
        for root in path.parents[:3]:
            if path in cls(root, fingerprint)._job_outputs(path.stem):
                return cls(root, fingerprint)
        raise ChunkflowError(
            f"'{path}' is no file of a run's state for fingerprint {fingerprint}; give the "
            "paths the workflow names (e.g. <state_dir>/blocks/<fingerprint>/<block>.json)"
        )

    def _job_outputs(self, block_id: str) -> tuple[Path, ...]:
        return (
            self.marker(block_id),
            self.output_record(),
            self.finish_record,
            self.summary_json,
            self.summary_text,
            self.report_html,
            self.verify_record,
        )

    # done-markers
    @property
    def markers_root(self) -> Path:
        """The folder of every fingerprint's marker folder."""
        return self.root / "blocks"

    def marker_dir(self, fingerprint: str | None = None) -> Path:
        """The folder of the done-markers written with ``fingerprint`` (default: this run's)."""
        return self.markers_root / (fingerprint or self.fingerprint)

    def marker(self, block_id: str, fingerprint: str | None = None) -> Path:
        return self.marker_dir(fingerprint) / f"{block_id}.json"

    # a block's streaming progress
    @property
    def pieces_root(self) -> Path:
        return self.root / "pieces"

    def pieces(self, block_id: str) -> Path:
        """The folder of ``block_id``'s piece progress and carried partial sums."""
        return self.pieces_root / block_id

    def piece_progress(self, block_id: str) -> Path:
        """How many of ``block_id``'s pieces are written, and for which settings."""
        return self.pieces(block_id) / "progress.json"

    def carried_sum(self, block_id: str, target: str, source: str) -> Path:
        """The partial sums that piece ``source`` of ``block_id`` carries to piece ``target``."""
        return self.pieces(block_id) / f"{target}.from.{source}.npy"

    def job_record(self, block_id: str) -> Path:
        """Which process computes ``block_id`` now (host and pid), while it does."""
        return self.root / "jobs" / f"{block_id}.json"

    # records of the output
    def output_record(self, fingerprint: str | None = None) -> Path:
        """The record that this run made (or took over) the output for ``fingerprint``."""
        return self.root / "output" / f"{fingerprint or self.fingerprint}.json"

    @property
    def finish_record(self) -> Path:
        """The record that the output was made whole (formats that assemble their blocks)."""
        return self.root / "finished.json"

    def settings_record(self, fingerprint: str | None = None) -> Path:
        """The settings of ``fingerprint``, as its results were planned."""
        return self.root / "settings" / f"{fingerprint or self.fingerprint}.json"

    @staticmethod
    def stored_config(state_dir: str | Path, digest: str) -> Path:
        """The copy of a config that the workflow's jobs read, named by its content."""
        return Path(state_dir) / "configs" / f"{digest}.yaml"

    @staticmethod
    def job_facts(state_dir: str | Path, key: str) -> Path:
        """What a job's re-parse of the workflow needs of the plan of the config and model
        files that ``key`` names (no fingerprint: these are read before any is computed)."""
        return Path(state_dir) / "plans" / f"{key}.json"

    @staticmethod
    def snakemake_record(state_dir: str | Path) -> Path:
        """The `chunkflow run` whose Snakemake holds, or last held, the run directory's lock."""
        return Path(state_dir) / "snakemake.json"

    def model_check(self, key: str) -> Path:
        """The cached facts of the model probe with ``key``."""
        return self.root / "model_checks" / f"{key}.json"

    # logs
    def job_logs(self, rule: str = BLOCK_RULE) -> Path:
        """The folder of the job logs of ``rule``: ``<job name>.log`` each."""
        return self.root / "logs" / rule

    def log(self, rule: str, name: str = "") -> Path:
        """The log of one job of ``rule`` named ``name``, or of the rule's single job."""
        return self.job_logs(rule) / f"{name}.log" if name else self.root / "logs" / f"{rule}.log"

    # what the run reports
    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_text(self) -> Path:
        return self.root / "summary.txt"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def verify_record(self) -> Path:
        return self.root / "verify.json"

    @property
    def verified(self) -> Path:
        """The blocks found fine by verify, a JSON line each."""
        return self.root / "verified.jsonl"
