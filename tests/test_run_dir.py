"""One way to name a run (``-d RUN_DIR``, as Snakemake's), `chunkflow run`, and progress: a block
job's progress lines, and `chunkflow status` read from another directory."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import config_with, smooth_volume, write_volume
from workflow_runs import (
    BASE_CONFIG,
    BIN,
    N_BLOCKS,
    OFFSET,
    RESOLUTION,
    RUN_TIMEOUT,
    SHAPE,
    SNAKEFILE,
    Result,
    job_counts,
    make_run_dir,
    markers,
    write_config,
)

from chunkflow.inspect.block_logs import RUNNING_WITHIN_S

pytestmark = pytest.mark.workflow

CHUNKFLOW = str(BIN / "chunkflow")
PIECES = 2  # per block: piece_size is half a block along z
CONFIG = config_with(BASE_CONFIG, piece_size=[4, 16, 32])


def chunkflow(cwd: Path, env: dict[str, str], *args: str, ok: bool = True) -> Result:
    proc = subprocess.run(
        [CHUNKFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.text, result.text
    if ok:
        assert result.returncode == 0, f"chunkflow {' '.join(args)} failed:\n{result.text}"
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory, run_env, elsewhere) -> tuple[Path, Result]:
    """A run made by `chunkflow run -d run` (a relative run directory) from its parent."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("chunkflow-run") / "run", CONFIG)
    return run_dir, chunkflow(run_dir.parent, run_env, "run", "-d", "run", "--cores", "2")


def test_status_without_a_run_says_so_in_one_line(tmp_path, run_env, elsewhere):
    """The issue's case: the config of a run directory, read from elsewhere without -d."""
    run_dir = make_run_dir(tmp_path / "run", CONFIG)
    for args in (("--config", str(run_dir / "config.yaml")), ("-d", str(run_dir))):
        result = chunkflow(elsewhere, run_env, "status", *args, ok=False)
        assert result.returncode != 0 and result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("chunkflow: error: no run here: its state directory")
        assert "name the run directory with -d" in line
    missing = chunkflow(elsewhere, run_env, "status", "-d", str(tmp_path / "nowhere"), ok=False)
    assert missing.returncode != 0
    assert missing.stderr.splitlines() == [
        f"chunkflow: error: run directory '{tmp_path / 'nowhere'}' does not exist; "
        "name an existing one with -d"
    ]


def test_chunkflow_run_dry_run_plans_every_block_and_writes_nothing(
    tmp_path,
    run_env,
    elsewhere,
):
    run_dir = make_run_dir(tmp_path / "run", CONFIG)
    before = sorted(p.name for p in run_dir.iterdir())
    result = chunkflow(elsewhere, run_env, "run", "-d", str(run_dir), "-n", "--cores", "1")
    counts = {"create_output": 1, "infer_block": N_BLOCKS, "summary": 1, "all": 1}
    assert job_counts(result.text) == counts
    # the command it runs, said first: this Python's snakemake with the checkout's Snakefile
    said = result.stderr.splitlines()[0]
    assert said.startswith(f"chunkflow: {BIN}/python") and said.endswith(
        f" -m snakemake -s {SNAKEFILE} -d {run_dir} --configfile {run_dir / 'config.yaml'} "
        "--rerun-incomplete -n --cores 1"
    )
    assert not (run_dir / "results").exists()
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".snakemake") == sorted(
        before + [".chunkflow"]  # the stored config and settings record, no output, no marker
    )
    assert not (run_dir / ".chunkflow" / "blocks").exists()


def test_chunkflow_run_from_another_directory_computes_the_run(finished):
    run_dir, result = finished
    assert f"chunkflow: {N_BLOCKS}/{N_BLOCKS} blocks written to results/out.zarr" in result.stdout
    assert len(markers(run_dir)) == N_BLOCKS
    out = zarr.open_array(str(run_dir / "results" / "out.zarr"), mode="r")
    assert out.shape == (2, *SHAPE) and float(out[...].min()) > 0  # sigmoid: every voxel written


def test_block_job_logs_show_pieces_patches_and_time_left(finished):
    run_dir, _ = finished
    for block, marker in markers(run_dir).items():
        log = (run_dir / ".chunkflow" / "logs" / "infer_block" / f"{block}.log").read_text()
        lines = [x for x in log.splitlines() if x.startswith(f"chunkflow: block {block}: piece")]
        assert len(lines) == PIECES, log  # a line after each piece (they take < 30 s here)
        last = re.fullmatch(
            rf"chunkflow: block {block}: piece {PIECES}/{PIECES}, patches (\d+)/(\d+), "
            r"([\d.e+]+) Mvoxel/s, about 0 s to go",
            lines[-1],
        )
        assert last and int(last[1]) == int(last[2]) == marker["patches"], lines[-1]
        first = re.match(rf"chunkflow: block {block}: piece 1/{PIECES}, patches (\d+)/", lines[0])
        assert first and 0 < int(first[1]) < marker["patches"]


def test_status_from_another_directory_reports_the_finished_run(finished, run_env, elsewhere):
    run_dir, _ = finished
    lines = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir)).stdout.splitlines()
    assert lines[:2] == [f"{N_BLOCKS}/{N_BLOCKS} blocks done", "  running 0, failed 0, missing 0"]

    # throughput: the blocks' voxels over the time from the first start to the last finish
    done = markers(run_dir).values()
    ends = [datetime.fromisoformat(m["finished"]).timestamp() for m in done]
    start = min(end - m["timings_s"]["wall"] for end, m in zip(ends, done, strict=True))
    seconds = max(max(ends) - start, 1.0)
    voxels = sum(m["voxels"] for m in done)
    assert voxels == math.prod(SHAPE)
    assert lines[2] == (
        f"  throughput over the last hour: {voxels / seconds / 1e6:.3g} Mvoxel/s, "
        f"{N_BLOCKS * 3600 / seconds:,.1f} blocks/h ({N_BLOCKS} blocks finished)"
    )
    slowest = sorted(done, key=lambda m: (-m["timings_s"]["wall"], m["block"]))
    assert [line.split()[1] for line in lines[3:]] == [m["block"] for m in slowest]

    capped = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir), "--show", "1").stdout
    assert capped.splitlines()[3:] == [
        capped.splitlines()[3],
        f"  slowest (+{N_BLOCKS - 1} more; --show N or --show all)",
    ]


def test_status_into_a_closed_pipe_stops_quietly(finished, run_env, elsewhere):
    """`chunkflow status | head -1`: the reader is gone before status writes a line."""
    proc = subprocess.Popen(
        [CHUNKFLOW, "status", "-d", str(finished[0])],
        cwd=elsewhere,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # chunkflow takes a second to start: it has not written yet
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=RUN_TIMEOUT) == 141 and stderr == ""
    shell = subprocess.run(
        f"{CHUNKFLOW} status -d {finished[0]} --show all | head -1",
        shell=True,
        cwd=elsewhere,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert (shell.returncode, shell.stdout, shell.stderr) == (
        0,
        f"{N_BLOCKS}/{N_BLOCKS} blocks done\n",
        "",
    )


def test_status_shows_a_failed_block_with_the_first_line_of_its_error(
    tmp_path,
    run_env,
    elsewhere,
):
    """A NaN in the input's last voxel: only the block holding it reads it, and its job fails."""
    run_dir = make_run_dir(tmp_path / "run", CONFIG)
    raw = smooth_volume(SHAPE, dtype="float32")
    raw[-1, -1, -1] = np.nan
    write_volume(
        run_dir / "data" / "float.zarr", raw, offset=OFFSET, resolution=RESOLUTION, chunks=(4, 8, 8)
    )
    write_config(run_dir, config_with(CONFIG, **{"input.path": "data/float.zarr"}))
    run = chunkflow(elsewhere, run_env, "run", "-d", str(run_dir), "--cores", "2", "-k", ok=False)
    assert run.returncode != 0
    assert sorted(markers(run_dir)) == ["z0_y0_x0", "z0_y1_x0", "z1_y0_x0"]

    log = run_dir / ".chunkflow" / "logs" / "infer_block" / "z1_y1_x0.log"
    (error,) = [x for x in log.read_text().splitlines() if x.startswith("chunkflow: error:")]
    assert "holds NaN or infinite values" in error
    lines = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir)).stdout.splitlines()
    assert lines[:2] == [f"3/{N_BLOCKS} blocks done", "  running 0, failed 1, missing 0"]
    assert f"  failed z1_y1_x0: {error} (log: {log})" in lines
    assert not any(line.startswith("  missing") for line in lines)
    left = re.fullmatch(r"  blocks left: 1 \(([\d,]+) voxels\); ETA ~.* at that rate", lines[3])
    assert left and int(left[1].replace(",", "")) == 8 * 12 * 32  # the last block along z and y

    # the block's next job (Snakemake's retry): its log starts anew, and it is running until
    # its log has not changed for RUNNING_WITHIN_S (killed without a word): missing again
    progress = (
        "chunkflow: block z1_y1_x0: piece 1/2, patches 16/32, 0.042 Mvoxel/s, about 5 s to go"
    )
    log.write_text(f"{progress}\n")
    lines = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir)).stdout.splitlines()
    assert lines[1] == "  running 1, failed 0, missing 0"
    (running,) = [x for x in lines if x.startswith("  running z1_y1_x0: ")]
    assert running.startswith("  running z1_y1_x0: piece 1/2, patches 16/32, 0.042 Mvoxel/s")
    started, stopped = time.time() - 2 * RUNNING_WITHIN_S, time.time() - RUNNING_WITHIN_S - 60
    state = run_dir / ".chunkflow"
    (record,) = (state / "output").glob("*.json")  # made when the run started, long ago
    os.utime(record, (started, started))
    for path in (log, state / "pieces" / "z1_y1_x0" / "progress.json"):
        os.utime(path, (stopped, stopped))
    lines = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir)).stdout.splitlines()
    assert lines[1] == "  running 0, failed 0, missing 1" and "  missing z1_y1_x0" in lines


def test_status_counts_a_finished_job_without_a_valid_marker_as_missing(
    finished, tmp_path, run_env, elsewhere
):
    """A block whose job ended with its finished line but whose marker is cut short is
    missing (the next run computes it), not running, however fresh its log."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    (marker,) = (run_dir / ".chunkflow" / "blocks").glob("*/z0_y0_x0.json")
    marker.write_text(marker.read_text()[:40])
    log = run_dir / ".chunkflow" / "logs" / "infer_block" / "z0_y0_x0.log"
    log.touch()
    assert log.read_text().strip().splitlines()[-1].startswith("z0_y0_x0: ")
    result = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir))
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{N_BLOCKS - 1}/{N_BLOCKS} blocks done",
        "  running 0, failed 0, missing 1",
    ]
    assert "  missing z0_y0_x0" in lines
    assert "z0_y0_x0" in result.stderr and len(result.stderr.splitlines()) == 1


def test_status_after_the_runs_own_settings_changed_says_what_comes(
    finished, tmp_path, run_env, elsewhere
):
    """A run directory may change its own settings: status says every block will be computed
    anew, not that the output holds another run's results (which would need output.replace)."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    write_config(run_dir, config_with(CONFIG, **{"inference.overlap": [1, 2, 6]}))
    lines = chunkflow(elsewhere, run_env, "status", "-d", str(run_dir)).stdout.splitlines()
    assert lines[0] == f"0/{N_BLOCKS} blocks done"
    assert "holds the results of this run's earlier settings" in lines[1]
    assert lines[1].endswith("the next run computes every block anew")
    assert not any("output.replace" in line for line in lines)


def test_a_run_killed_with_sigkill_leaves_a_lock_that_the_next_run_removes(
    tmp_path, run_env, elsewhere
):
    """Snakemake killed at once (SIGKILL, a lost login node) keeps its lock on the run
    directory; the next plain `chunkflow run` sees that the process holding it is gone."""
    import signal

    run_dir = make_run_dir(tmp_path / "run", CONFIG)
    command = [CHUNKFLOW, "run", "-d", str(run_dir), "--cores", "1"]
    process = subprocess.Popen(
        command, cwd=elsewhere, env=run_env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    locks = run_dir / ".snakemake" / "locks"
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (locks.is_dir() and any(locks.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert any(locks.iterdir())  # today: every later run fails "Directory cannot be locked"

    rerun = chunkflow(elsewhere, run_env, "run", "-d", str(run_dir), "--cores", "2")
    (note,) = [line for line in rerun.stderr.splitlines() if "is gone" in line]
    assert note.startswith(f"chunkflow: the Snakemake that locked '{run_dir}' is gone")
    assert len(markers(run_dir)) == N_BLOCKS and not (locks.is_dir() and any(locks.iterdir()))
