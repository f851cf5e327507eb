"""Several blocks in one process (`chunkflow run-block` with several ids): what a failure
part-way leaves behind (the blocks before it written with their markers, none after it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import config_with, smooth_volume, write_volume
from run_helpers import read_back, run_as_well

from chunkflow import config as config_mod
from chunkflow.errors import VolumeError
from chunkflow.job.block_job import run_blocks
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.state.run_state import RunState


def test_a_failing_block_stops_its_job_after_writing_the_blocks_before_it(small_config, tmp_path):
    data = smooth_volume((20, 48, 56), dtype="float32")
    data[19] = np.nan  # read by the blocks z1 only (z 12..19), not by z0 (their chunks end sooner)
    raw = write_volume(tmp_path / "nan.zarr", data, chunks=(4, 8, 8))
    config = config_with(small_config, **{"input.path": raw})
    settings = config_mod.parse(config)
    plan = make_plan(settings)
    create_output(plan)
    with pytest.raises(VolumeError, match="block z1_y0_x0, piece z0_y0_x0: the input .* holds NaN"):
        run_blocks(plan, plan.grid.ids())  # all 8 blocks in one process, z, y, x order
    done = {b.id for b in plan.grid if RunState.of(plan).marker(b.id).exists()}
    assert done == {b.id for b in plan.grid if b.index[0] == 0}

    clean = write_volume(tmp_path / "raw_clean.zarr", np.nan_to_num(data), chunks=(4, 8, 8))
    expected = run_as_well(config, "clean", **{"input.path": clean})
    written = read_back(settings.output.path)[0]
    np.testing.assert_array_equal(written[:, :12], expected[:, :12])  # the z0 blocks, whole
    assert not written[:, 12:].any()  # nothing of the failed job's later blocks


def test_a_job_uses_the_cpus_it_may_run_on(small_config, tmp_path):
    """On a node it shares, a job runs on the CPUs its scheduler binds it to (here `taskset`):
    zarr's codec threads are sized to those, not to the node's cores, and the marker says so."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(small_config))
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))
    subprocess.run([chunkflow, "create-output", "--config", str(config_file)], check=True)
    run = [chunkflow, "run-block", "--config", str(config_file), "z0_y0_x0"]
    subprocess.run(["taskset", "-c", "0", *run], check=True, capture_output=True, timeout=300)
    (marker,) = Path(small_config["state_dir"]).glob("blocks/*/z0_y0_x0.json")
    assert json.loads(marker.read_text())["ran_on"]["cpus"] == 1
    subprocess.run([*run[:-1], "z0_y0_x1"], check=True, capture_output=True, timeout=300)
    (marker,) = Path(small_config["state_dir"]).glob("blocks/*/z0_y0_x1.json")
    assert json.loads(marker.read_text())["ran_on"]["cpus"] == len(os.sched_getaffinity(0))
