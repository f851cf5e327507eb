"""What the Snakefile gets from chunkflow.app.snakemake_adapter, checked without Snakemake."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import config_with, write_volume

from chunkflow.app.snakemake_adapter import prepare


def test_fingerprint_ignores_result_neutral_settings_only(small_config: dict) -> None:
    base = prepare(small_config).fingerprint
    neutral = {"inference.batch_size": 7, "inference.device": "cpu", "inference.threads": 2}
    for key, value in neutral.items():
        assert prepare(config_with(small_config, **{key: value})).fingerprint == base, key
    changing = {
        "inference.overlap": [1, 4, 6],
        "inference.blend": "gaussian",
        "inference.placement": "crop",
        "inference.precision": "bfloat16",
        "output.dtype": "uint8",
        "block_size": [12, 24, 16],
        "roi.size": [20, 48, 48],
    }
    for key, value in changing.items():
        assert prepare(config_with(small_config, **{key: value})).fingerprint != base, key


def test_fingerprint_follows_the_model_file_content(small_config: dict) -> None:
    before = prepare(small_config).fingerprint
    model = Path(small_config["model"]["path"])
    model.write_bytes(model.read_bytes() + b"\0")
    assert prepare(small_config).fingerprint != before


def test_stored_config_is_named_by_its_content_and_never_rewritten(small_config: dict) -> None:
    run = prepare(small_config)
    stored = run.config_path
    assert isinstance(stored, Path)  # Snakemake's params trigger does not record a Path
    assert stored.parent == Path(small_config["state_dir"], "configs")
    assert yaml.safe_load(stored.read_text()) == small_config
    os.utime(stored, ns=(1, 1))
    assert prepare(small_config).config_path == stored
    assert stored.stat().st_mtime_ns == 1, "same content: the file is left alone"
    other = prepare(config_with(small_config, **{"inference.batch_size": 9})).config_path
    assert other != stored and yaml.safe_load(other.read_text())["inference"]["batch_size"] == 9
    assert stored.stat().st_mtime_ns == 1 and yaml.safe_load(stored.read_text()) == small_config


def test_memory_request_follows_the_piece_not_the_block(small_config: dict, tmp_path: Path) -> None:
    """A block job streams its block piece by piece: a smaller piece asks for less memory, and
    with the piece fixed a larger block asks for no more."""
    raw = write_volume(
        tmp_path / "big.zarr", np.zeros((64, 512, 512), np.uint8), chunks=(16, 128, 128)
    )
    config = config_with(small_config, **{"input.path": raw, "block_size": [32, 256, 256]})
    whole = prepare(config)  # the default piece: the whole block fits the budget
    assert whole.plan.piece_size == (32, 256, 256)
    piece = {"piece_size": [8, 64, 64]}
    small = prepare(config_with(config, **piece))
    large_block = prepare(config_with(config, block_size=[64, 512, 512], **piece))
    assert 1024 < small.job_mem_mb < whole.job_mem_mb  # 1 GiB for the runtime, plus the data
    assert large_block.job_mem_mb == small.job_mem_mb
    for run in (whole, small):
        assert run.job_mem_mb == -(-run.plan.job_memory_bytes() // 2**20)  # MiB, rounded up


def test_runtime_request_follows_the_block_voxels_and_the_throughput(small_config: dict) -> None:
    """10 minutes plus twice the block's voxels at job.voxels_per_second, rounded up."""

    def runtime(block_size: list[int], voxels_per_second: float) -> int:
        changes = {"block_size": block_size, "job.voxels_per_second": voxels_per_second}
        return prepare(config_with(small_config, **changes)).job_runtime_min

    assert prepare(small_config).job_runtime_min == 11  # 9,216 voxels at 5e7/s: 1 minute
    assert runtime([12, 24, 32], 1) == 10 + 308  # 2 x 9,216 s = 307.2 minutes
    assert runtime([12, 24, 32], 2) == 10 + 154  # half the time at twice the throughput
    assert runtime([20, 48, 56], 1) == 10 + 1792  # 2 x 53,760 s = 1,792 minutes


def test_no_config_is_a_clear_error() -> None:
    import pytest

    from chunkflow.errors import ConfigError

    with pytest.raises(ConfigError, match="run snakemake with --configfile"):
        prepare({})


def test_settings_note_names_the_settings_changed_since_the_output_was_made(
    small_config: dict,
) -> None:
    from chunkflow.state.output_store import create_output

    first = prepare(small_config)
    assert first.settings_note() is None  # no output yet
    recorded = first.state.settings_record()
    assert json.loads(recorded.read_text())["inference.overlap"] == [2, 4, 6]
    create_output(first.plan)
    assert first.settings_note() is None  # the output holds this fingerprint's results
    changes = {"inference.blend": "gaussian", "roi.size": [20, 48, 48], "inference.batch_size": 1}
    changed = prepare(config_with(small_config, **changes))
    what = (
        "settings changed since the output was made "
        f"(fingerprint {first.fingerprint} → {changed.fingerprint})"
    )
    assert changed.settings_note() == (
        f'{what}: inference.blend "bump" → "gaussian"; roi.size unset → [20, 48, 48]; '
        "every block will be computed"
    )  # batch_size is no result setting
    recorded.unlink()  # e.g. made before settings were recorded
    assert changed.settings_note() == (
        f"{what}; which ones is not recorded ({recorded} does not exist); every block will be "
        "computed"
    )


def count_constructions(monkeypatch, cls: type) -> list[int]:
    """A list that grows by one each time an instance of ``cls`` is made from now on."""
    made: list[int] = []
    real = cls.__init__

    def counting(self, *args, **kwargs) -> None:
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    return made


def test_a_jobs_reparse_of_the_workflow_reads_the_recorded_facts(small_config, monkeypatch):
    from chunkflow.plan.run_plan import RunPlan
    from chunkflow.settings import Settings

    main = prepare(small_config)
    plans, parses = (count_constructions(monkeypatch, c) for c in (RunPlan, Settings))
    job = prepare(small_config, main=False)  # what a SLURM job's snakemake does
    assert (plans, parses) == ([], []), "a job's re-parse planned the run"
    assert job.facts == main.facts and job.config_path == main.config_path
    assert job.marker_pattern == main.marker_pattern and job.block_ids == main.plan.block_ids
    assert (job.job_mem_mb, job.job_runtime_min, job.threads) == (
        main.job_mem_mb,
        main.job_runtime_min,
        main.plan.settings.inference.threads,
    )
    # nothing recorded (the state dir on a file system the node does not share): it plans
    (recorded,) = Path(small_config["state_dir"], "plans").iterdir()
    recorded.unlink()
    assert prepare(small_config, main=False).facts == main.facts and len(plans) == 1
    # a model file changed since: the facts recorded for it do not serve
    assert prepare(small_config).facts == main.facts and recorded.exists()
    model = Path(small_config["model"]["path"])
    model.write_bytes(model.read_bytes() + b"\0")
    assert prepare(small_config, main=False).fingerprint != main.fingerprint


def test_a_block_job_parses_its_config_and_plans_once(small_config, monkeypatch, capsys):
    """The infer_block rule's command, run as Snakemake runs it (its script, in-process here so
    that the constructions can be counted)."""
    import runpy
    import sys

    from chunkflow.plan.run_plan import RunPlan
    from chunkflow.settings import Settings
    from chunkflow.state.output_store import create_output

    run = prepare(small_config)
    create_output(run.plan)
    plans, parses = (count_constructions(monkeypatch, c) for c in (RunPlan, Settings))
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "infer_block.py"
    markers = [run.marker("z0_y0_x0"), run.marker("z1_y1_x0")]
    argv = [str(script), "--config", str(run.config_path), "--expect-fingerprint"]
    monkeypatch.setattr(sys, "argv", [*argv, run.fingerprint, *markers])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(script), run_name="__main__")
    assert exit.value.code == 0, capsys.readouterr().err
    assert all(Path(m).is_file() for m in markers)
    assert (len(parses), len(plans)) == (1, 1)
