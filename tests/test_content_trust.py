"""Done means the bytes that made it (issue 25): each principle against the fault that broke it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import ValidConvNet, save_torchscript, store_id
from slow_jobs import killed_mid_block

from chunkflow import config as config_mod
from chunkflow.errors import ModelError
from chunkflow.geometry.boxes import Box
from chunkflow.job.block_job import run_blocks
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import DoneMarker
from chunkflow.state.output_store import create_output
from chunkflow.state.run_state import RunState


def test_the_model_that_computes_is_the_model_that_is_recorded(small_config):
    create_output(make_plan(config_mod.parse(small_config)))
    plan = make_plan(config_mod.parse(small_config))
    planned = plan.fingerprint  # a job has hashed the model file
    model = Path(small_config["model"]["path"])
    save_torchscript(ValidConvNet(channels_out=2, seed=7), model)  # replaced during the run
    with pytest.raises(ModelError, match="changed while this process used it"):
        run_blocks(plan, ["z0_y0_x0"])  # today: computed with the new bytes, the old digest
    assert not RunState.of(plan).marker("z0_y0_x0").exists()

    again = make_plan(config_mod.parse(small_config))  # a job that starts after the change
    create_output(again)  # this state dir's own output: taken over for the new model
    (marker,) = run_blocks(again, ["z0_y0_x0"])
    assert marker.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert again.fingerprint != planned and marker.fingerprint == again.fingerprint
    assert DoneMarker.read(RunState.of(again).marker("z0_y0_x0")) == marker


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_missing_input_chunk_fails_its_block_unless_fill_missing(small_config, zarr_format):
    from helpers import config_with, smooth_volume, write_volume

    from chunkflow.errors import VolumeError
    from chunkflow.job.local_run import run_locally

    raw = Path(small_config["input"]["path"]).with_name(f"raw{zarr_format}.zarr")
    write_volume(raw, smooth_volume((20, 48, 56)), chunks=(4, 8, 8), zarr_format=zarr_format)
    key = "c/2/3/4" if zarr_format == 3 else "2.3.4"  # z 8..12, y 24..32, x 32..40
    gap = Box((8, 24, 32), (12, 32, 40))
    (raw / key).unlink()  # an incomplete copy
    config = config_with(small_config, **{"input.path": str(raw)})
    plan = make_plan(config_mod.parse(config))
    reading = {
        b.id for b in plan.blocks if not plan.chunk_box(plan.patches(b)).intersect(gap).empty
    }
    with pytest.raises(VolumeError, match=rf"input chunk '{raw}/{key}' is missing"):
        run_locally(plan)  # today: read as zeros, every block "done"
    assert reading and not any(RunState.of(plan).marker(b).exists() for b in reading)

    accepting = make_plan(config_mod.parse(config_with(config, **{"input.fill_missing": True})))
    assert accepting.fingerprint == plan.fingerprint  # how a gap is read is no result setting
    counted = {m.block: m.missing_input_chunks for m in run_locally(accepting)}
    assert {b for b, n in counted.items() if n} == reading  # each block that read the gap


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # in the values, not the .npy header: it still loads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "edit progress"])
def test_damaged_piece_state_is_discarded_with_a_warning_and_the_block_recomputed(tmp_path, damage):
    import json

    from run_helpers import read_back, run_as_well
    from slow_jobs import chunkflow

    config, path, progress, _ = killed_mid_block(tmp_path)
    recorded = json.loads(progress.read_text())
    # a sum the resumed job will read: the progress names those alone, each on disk
    carried = [progress.parent / name for name in sorted(recorded["carries"])]
    assert carried and all(path.is_file() for path in carried) and recorded["written"] < 24
    victim = carried[0]
    if damage == "flip":
        flip_a_byte(victim)  # today: resumed with a wrong sum, the block "done"
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])  # today: every rerun fails
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim = progress
        progress.write_text(json.dumps({**recorded, "written": recorded["written"] + 3}))
    job = chunkflow("run-block", "--config", str(path), "z0_y0_x0")
    log = job.communicate()[1]
    assert job.returncode == 0, log
    warning = [line for line in log.splitlines() if str(victim) in line]
    assert len(warning) == 1 and "computing the block anew" in warning[0], log
    resumed = read_back(config["output"]["path"])[0]
    np.testing.assert_array_equal(resumed, run_as_well(config, "uninterrupted"))
    marker = json.loads(
        next(Path(config["state_dir"], "blocks").glob("*/z0_y0_x0.json")).read_text()
    )
    clean = Path(config["state_dir"]).parent / "state_uninterrupted" / "blocks"
    assert (
        marker["output_sha256"]
        == json.loads(next(clean.glob("*/z0_y0_x0.json")).read_text())["output_sha256"]
    )


def test_a_batch_beyond_any_memory_is_refused_in_one_line(small_config, tmp_path):
    import subprocess
    import sys

    import yaml
    from helpers import config_with

    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(config_with(small_config, **{"inference.batch_size": 100000})))
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))
    result = subprocess.run(
        [chunkflow, "plan", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "inference.batch_size" in line and "4096" in line, line


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 4398046511104 bytes."
        ),
    ],
)
def test_running_out_of_memory_is_one_line_naming_the_knobs(error, capsys):
    """What Python and PyTorch raise when an allocation fails, through every entry point's
    ``run_main`` (a real allocation beyond the machine would meet the kernel's OOM killer
    first: that case is a job killed without a word, see status)."""
    from chunkflow.app.entry import run_main

    def main() -> None:
        raise error

    assert run_main(main) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("chunkflow: error: out of memory (")
    assert "inference.batch_size" in line and "piece_size" in line and "mem_mb" in line


def test_other_runtime_errors_keep_their_traceback():
    from chunkflow.app.entry import run_main

    def main() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_main(main)


CRASHING_NET = """
import ctypes

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3)

    def forward(self, x):
        if bool(x.abs().sum() > 0):  # the model check's zero patches pass
            ctypes.string_at(0)  # a segmentation fault, as a native library's crash
        return torch.sigmoid(self.conv(x))


def build_model():
    return Net()
"""


def test_a_crashed_block_job_is_failed_in_status_with_its_cause(small_config, tmp_path):
    import subprocess
    import sys

    import torch
    import yaml
    from helpers import config_with

    (tmp_path / "crash.py").write_text(CRASHING_NET)
    namespace: dict = {}
    exec(CRASHING_NET, namespace)
    torch.save(namespace["build_model"]().state_dict(), tmp_path / "crash.pt")
    model = {"model.path": str(tmp_path / "crash.py"), "model.weights": str(tmp_path / "crash.pt")}
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(config_with(small_config, **model)))
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))
    run = lambda *args, **kw: subprocess.run(  # noqa: E731
        [chunkflow, *args, "--config", str(path)], text=True, **kw
    )
    assert run("create-output", capture_output=True).returncode == 0
    plan = make_plan(config_mod.parse(config_with(small_config, **model)))
    log = RunState.of(plan).log("infer_block", "z0_y0_x0")
    log.parent.mkdir(parents=True)
    with log.open("w") as f:  # as the workflow's rule sends a job's output to its log
        job = run("run-block", "z0_y0_x0", stdout=f, stderr=subprocess.STDOUT)
    assert job.returncode != 0 and "Fatal Python error: Segmentation fault" in log.read_text()
    status = run("status", capture_output=True).stdout  # today: "running" (no error in the log)
    (line,) = [x for x in status.splitlines() if "z0_y0_x0" in x]
    assert line.strip().startswith("failed z0_y0_x0: Segmentation fault: the job crashed"), status
    assert "inference.batch_size" in line and "mem_mb" in line, line


def test_a_killed_local_job_is_not_running_in_status(tmp_path):
    """A job killed without a word (the kernel's OOM killer sends SIGKILL): its piece progress
    is fresh, but its process on this host is gone."""
    import subprocess
    import sys

    config, path, progress, _ = killed_mid_block(tmp_path)
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))
    status = subprocess.run(
        [chunkflow, "status", "--config", str(path)], capture_output=True, text=True
    ).stdout.splitlines()
    assert status[:2] == ["0/1 blocks done", "  running 0, failed 0, missing 1"], status


def test_a_crash_report_cut_by_the_log_tail_still_reads_as_a_crash():
    from chunkflow.inspect.block_logs import first_error

    tail = '  File "x.py", line 3 in forward\n\nExtension modules: numpy (total: 1)\n'
    assert first_error(tail).startswith("a fatal error: the job crashed")
    assert first_error("Fatal Python error: Aborted\n\n" + tail).startswith("Aborted: the job")


@pytest.mark.parametrize(
    "change",
    [
        {"output.path": "{raw}/predictions.zarr"},  # the output inside the input
        {"input.path": "{out}/raw.zarr"},  # the input inside the output
        {"state_dir": "{out}/.chunkflow"},  # the run's files inside the output store
    ],
)
def test_paths_inside_one_another_are_refused_in_one_line(small_config, tmp_path, change):
    import shutil

    from helpers import config_with

    from chunkflow.errors import ConfigError

    raw, out = small_config["input"]["path"], small_config["output"]["path"]
    if "input.path" in change:  # the input moved into where the output goes
        shutil.copytree(raw, f"{out}/raw.zarr")
    config = config_with(small_config, **{k: v.format(raw=raw, out=out) for k, v in change.items()})
    with pytest.raises(ConfigError, match="lie one inside the other; give .* a place of its own"):
        make_plan(config_mod.parse(config))


def test_a_block_killed_after_its_last_piece_ends_with_its_marker(small_config):
    """Its progress counts every piece written but no marker was written: the next job
    writes the marker from the recorded checksums, computing nothing (today: IndexError)."""
    from helpers import config_with

    from chunkflow.job.local_run import run_locally
    from chunkflow.job.piece_state import PieceState, PiecesWritten

    plan = make_plan(config_mod.parse(config_with(small_config, piece_size=[4, 8, 16])))
    done = {m.block: m for m in run_locally(plan)}
    first = done["z0_y0_x0"]
    assert first.pieces > 1
    state = RunState.of(plan)
    state.marker("z0_y0_x0").unlink()
    progress = PiecesWritten(first.pieces, first.output_sha256, False, first.input_digest)
    PieceState(state, "z0_y0_x0", plan.piece_size, store_id(plan)).record(progress)
    (again,) = run_blocks(plan, ["z0_y0_x0"])
    assert (again.output_sha256, again.input_digest) == (first.output_sha256, first.input_digest)
    assert again.timings_s["infer"] == 0 and DoneMarker.read(state.marker("z0_y0_x0")) == again


def test_piece_progress_of_an_earlier_version_is_not_resumed(small_config, caplog):
    """Progress recorded before the input digest became sha256 (it lacks
    input_digest_algorithm) chains blake2b digests: the block is computed anew, not finished
    with a chain of both."""
    import json

    from helpers import config_with

    from chunkflow.job.local_run import run_locally
    from chunkflow.job.piece_state import PieceState, PiecesWritten, _checked, _without_sum

    plan = make_plan(config_mod.parse(config_with(small_config, piece_size=[4, 8, 16])))
    first = {m.block: m for m in run_locally(plan)}["z0_y0_x0"]
    state = RunState.of(plan)
    state.marker("z0_y0_x0").unlink()
    progress = PiecesWritten(first.pieces, first.output_sha256, False, first.input_digest)
    PieceState(state, "z0_y0_x0", plan.piece_size, store_id(plan)).record(progress)
    path = state.piece_progress("z0_y0_x0")
    older = _without_sum(json.loads(path.read_text()))
    del older["input_digest_algorithm"]
    path.write_text(json.dumps(_checked(older)))
    (again,) = run_blocks(plan, ["z0_y0_x0"])
    assert again.timings_s["infer"] > 0  # computed, not finished from the progress
    assert (again.output_sha256, again.input_digest) == (first.output_sha256, first.input_digest)
    assert "another chunkflow version; computing the block anew" in caplog.text


def test_a_damaged_output_store_is_one_line_saying_how_to_recover(small_config, tmp_path):
    """Its zarr.json lost: `status` still works and says why no block counts; the commands
    that need the store say, in one line, to move it aside; once moved, a run starts anew."""
    import shutil
    import subprocess
    import sys

    import yaml

    from chunkflow.job.local_run import run_locally

    run_locally(make_plan(config_mod.parse(small_config)))
    output = Path(small_config["output"]["path"])
    (output / "zarr.json").unlink()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config))
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([chunkflow, *args, "-c", str(path)], capture_output=True, text=True)

    status = run("status")  # today: exit 2, status as stuck as the rest
    assert status.returncode == 0 and status.stdout.startswith("0/8 blocks done"), status.stderr
    assert "move it aside or delete it and rerun" in status.stdout
    for command in ("plan", "create-output", "verify"):
        result = run(command)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "is not a readable zarr store" in line and "move it aside" in line, line
    shutil.move(output, tmp_path / "damaged.zarr")
    assert run("create-output").returncode == 0 and run("status").stdout.startswith("0/8 blocks")


# ---------------------------------------------------------------------------------------------
# principle 3: identity by content, not by text


def test_the_same_config_text_over_other_data_is_another_run(small_config, tmp_path):
    """Two run directories, one config text: ``raw.zarr`` relative to each holds other data of
    the same shape. A moved copy of the first's input is the same input."""
    import contextlib
    import shutil

    from helpers import config_with, smooth_volume, write_volume

    from chunkflow.errors import VolumeError
    from chunkflow.job.local_run import run_locally

    text = yaml.safe_dump(
        config_with(small_config, **{"input.path": "raw.zarr", "state_dir": ".chunkflow"})
    )
    first, second, moved = (tmp_path / n for n in ("first", "second", "moved"))

    def plan_in(run_dir: Path):
        with contextlib.chdir(run_dir):
            return make_plan(config_mod.parse(yaml.safe_load(text)))

    for run_dir, seed in ((first, 0), (second, 1)):
        run_dir.mkdir()
        write_volume(run_dir / "raw.zarr", smooth_volume((20, 48, 56), seed=seed), chunks=(4, 8, 8))
    moved.mkdir()
    shutil.copytree(first / "raw.zarr", moved / "raw.zarr")
    one, two, three = plan_in(first), plan_in(second), plan_in(moved)
    assert one.input_info == two.input_info  # the same metadata
    assert one.fingerprint != two.fingerprint  # today: equal, and both write into one output
    assert three.fingerprint == one.fingerprint  # a moved input is not another run

    with contextlib.chdir(first):
        run_locally(one)
    written = zarr.open_array(small_config["output"]["path"], mode="r")[:]
    with contextlib.chdir(second), pytest.raises(VolumeError, match="holds the results of"):
        create_output(two)
    np.testing.assert_array_equal(zarr.open_array(small_config["output"]["path"])[:], written)


def test_a_moved_model_is_the_same_model(small_config, tmp_path):
    """The model is identified by its bytes: moved, the same run; changed, another."""
    import shutil

    from helpers import config_with

    moved = tmp_path / "elsewhere" / "net.pt"
    moved.parent.mkdir()
    shutil.copy(small_config["model"]["path"], moved)
    fingerprint = lambda c: make_plan(config_mod.parse(c)).fingerprint  # noqa: E731
    elsewhere = config_with(small_config, **{"model.path": str(moved)})
    assert fingerprint(elsewhere) == fingerprint(small_config)  # today: another run
    save_torchscript(ValidConvNet(channels_out=2, seed=7), moved)
    assert fingerprint(elsewhere) != fingerprint(small_config)


def test_markers_of_a_store_made_again_do_not_count(small_config, tmp_path):
    """The output deleted and made again by another state dir (same settings, same fingerprint):
    the first state dir's markers describe a store that is gone."""
    import shutil

    from helpers import config_with

    from chunkflow.job.local_run import run_locally
    from chunkflow.state.output_store import marker_census

    plan = make_plan(config_mod.parse(small_config))
    run_locally(plan)
    assert len(marker_census(plan).done) == 8
    shutil.rmtree(small_config["output"]["path"])
    other = make_plan(config_mod.parse(config_with(small_config, state_dir=str(tmp_path / "b"))))
    assert other.fingerprint == plan.fingerprint
    create_output(other)
    run_blocks(other, ["z0_y0_x0"])
    census = marker_census(plan)  # today: 8 done, 7 of them never written into this store
    assert (len(census.done), len(census.missing)) == (0, 8)
    assert len(marker_census(other).done) == 1


def test_piece_state_of_a_store_taken_over_and_back_is_not_resumed(tmp_path):
    """A block killed mid-way; another run takes the output over (``output.replace``) and
    writes it; the first takes it back: its piece state describes pieces overwritten since."""
    import json

    from helpers import config_with
    from run_helpers import read_back, run_as_well
    from slow_jobs import chunkflow

    from chunkflow.job.local_run import run_locally

    config, path, progress, _ = killed_mid_block(tmp_path)
    assert json.loads(progress.read_text())["written"] >= 5
    other = {"inference.overlap": [1, 6, 6], "state_dir": str(tmp_path / "b")}
    taker = make_plan(config_mod.parse(config_with(config, **other, **{"output.replace": True})))
    create_output(taker)
    run_locally(taker)
    back = config_with(config, **{"output.replace": True})
    path.write_text(yaml.safe_dump(back))
    assert chunkflow("create-output", "--config", str(path)).wait() == 0
    job = chunkflow("run-block", "--config", str(path), "z0_y0_x0")
    log = job.communicate()[1]
    assert job.returncode == 0, log
    assert (
        f"piece progress '{progress}' is of other settings, another output store or another "
        "chunkflow version" in log
    )
    resumed = read_back(config["output"]["path"])[0]  # today: 5 pieces of the other run's
    np.testing.assert_array_equal(resumed, run_as_well(config, "uninterrupted"))


# ---------------------------------------------------------------------------------------------
# principle 6: every clock is suspect


@pytest.mark.workflow
def test_files_dated_in_the_future_fail_no_job(finished, tmp_path, run_env, elsewhere):
    """The model and every state file dated a day ahead (copied from a host whose clock runs
    ahead), one block to do: Snakemake fails a job whose input is newer than its output, so
    today every rerun fails (the model, an input of every job) and loses its new markers."""
    import os
    import time

    from workflow_runs import copy_run, job_counts, marker_dir, markers, snakemake

    run_dir = copy_run(finished[0], tmp_path / "run")
    ahead = time.time() + 24 * 3600
    for path in [run_dir / "models" / "net.pt", *(run_dir / ".chunkflow").rglob("*")]:
        os.utime(path, (ahead, ahead))
    (marker_dir(run_dir) / "z0_y0_x0.json").unlink()
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text)["infer_block"] == 1 and len(markers(run_dir)) == 4
    assert "were dated in the future (a clock ahead" in result.stderr
    again = snakemake(run_dir, run_env, elsewhere)
    assert "Nothing to be done" in again.text
