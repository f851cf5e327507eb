"""The read-only commands a user runs between workflow runs: plan, status, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from run_helpers import run_all_blocks

CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))


def _run(*args: str) -> str:
    result = subprocess.run([CHUNKFLOW, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_plan_status_and_summary_agree_with_the_markers(tmp_path: Path, small_config: dict) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(small_config))
    plan = _run("plan", "--config", str(config_file), "--blocks")
    assert "blocks  8 = 2 x 2 x 2 of [12, 24, 32]" in plan
    listed = [line.split()[0] for line in plan.splitlines() if line.startswith("  z")]
    assert listed == [f"z{z}_y{y}_x{x}" for z in (0, 1) for y in (0, 1) for x in (0, 1)]

    run_all_blocks(small_config)
    assert _run("status", "--config", str(config_file)).startswith("8/8 blocks done")
    next(Path(small_config["state_dir"], "blocks").glob("*/z1_y0_x0.json")).unlink()
    status = _run("status", "--config", str(config_file)).splitlines()
    assert status[:2] == ["7/8 blocks done", "  running 0, failed 0, missing 1"]
    assert [line for line in status if line.startswith("  missing")] == ["  missing z1_y0_x0"]

    summary_file = tmp_path / "summary.json"
    _run("summary", "--config", str(config_file), "--json", str(summary_file))
    summary = json.loads(summary_file.read_text())
    markers = [
        json.loads(p.read_text())
        for p in Path(small_config["state_dir"], "blocks").glob("*/*.json")
    ]
    assert summary["blocks_done"] == 7 and summary["blocks_total"] == 8
    assert summary["voxels"] == sum(m["voxels"] for m in markers)
    assert summary["patches"] == sum(m["patches"] for m in markers)
    whole = [int(w) for w in plan.split("a single whole-ROI pass needs ")[1].split()[0].split(",")]
    assert summary["patches_whole_roi"] == whole[0]


def test_status_and_summary_ignore_markers_of_other_settings(
    tmp_path: Path, small_config: dict
) -> None:
    run_all_blocks(small_config)
    changed = dict(small_config, inference={**small_config["inference"], "overlap": [1, 4, 6]})
    config_file = tmp_path / "changed.yaml"
    config_file.write_text(yaml.safe_dump(changed))
    status = _run("status", "--config", str(config_file)).splitlines()
    assert status[0] == "0/8 blocks done"
    assert sum(line.startswith("  stale (settings changed) ") for line in status) == 8
    summary_file = tmp_path / "s.json"
    _run("summary", "--config", str(config_file), "--json", str(summary_file))
    assert json.loads(summary_file.read_text())["blocks_done"] == 0


# Run in a fresh interpreter: which modules each command imports (sys.modules after it).
IMPORTS = """
import sys

import yaml

from chunkflow.app import cli
from chunkflow.app.snakemake_adapter import prepare

config_file = sys.argv[1]
run = prepare(yaml.safe_load(open(config_file)))  # what the Snakefile does, in every snakemake
run.reconcile(), run.settings_note(), run.final_targets, run.job_mem_mb, run.job_runtime_min
assert "torch" not in sys.modules, "planning the workflow imported torch"
for command in ("plan", "status", "summary", "view", "finish-output"):
    assert cli.main([command, "--config", config_file]) == 0, command
    assert "torch" not in sys.modules, f"`chunkflow {command}` imported torch"
assert cli.main(["run-block", "--config", config_file, "z0_y0_x0"]) == 0
heavy = {"cloudvolume", "onnxruntime", "scipy"} & set(sys.modules)
assert "torch" in sys.modules and not heavy, f"a block job imported {heavy}"
print("imports as expected")
"""


def test_only_the_block_job_imports_torch(tmp_path: Path, small_config: dict) -> None:
    """Commands that do not infer start without PyTorch (seconds per process); a block job of
    a zarr volume and a TorchScript model imports no cloud or ONNX library either."""
    run_all_blocks(small_config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(small_config))
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("imports as expected\n")


def test_a_full_disk_says_to_free_space(capsys) -> None:
    """An OSError ends a command with one line whose hint fits its cause: writes to /dev/full
    fail with ENOSPC, as on a full disk."""
    from chunkflow.app.entry import run_main

    def write_to_full_disk() -> None:
        with open("/dev/full", "w") as full:
            full.write("x")

    assert run_main(write_to_full_disk) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert err.endswith("; free space on that file system (or choose another path), then rerun\n")
