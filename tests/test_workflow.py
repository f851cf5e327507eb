"""Real Snakemake runs of workflow/Snakefile on a tiny volume (4 blocks, a few seconds a run).

Every run is a deployed run: a run directory outside the repository holding its data and a
config.yaml with relative paths, invoked as
``snakemake -s <repo>/workflow/Snakefile -d <run dir> --configfile <run dir>/config.yaml``
from a third, empty working directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr
from helpers import (
    ValidConvNet,
    config_with,
    save_torchscript,
    write_volume,
)
from workflow_runs import (
    BASE_CONFIG,
    BIN,
    CHANNELS,
    N_BLOCKS,
    OFFSET,
    REPO,
    RESOLUTION,
    RUN_TIMEOUT,
    SHAPE,
    absolute,
    copy_run,
    fingerprint,
    job_counts,
    make_run_dir,
    marker_dir,
    markers,
    output,
    read_config,
    reasons,
    reference,
    snakemake,
    snakemake_cmd,
    wait_for,
    write_config,
)

from chunkflow import config as config_mod
from chunkflow.engine.models import file_sha256

pytestmark = pytest.mark.workflow


# A Python-file model whose first forward pass on real data (not create_output's zero probe)
# records its pid in slow.started and then sleeps: that block job hangs until it is killed.
# Later passes find the file and run at once.
SLOW_MODEL = """\
import os
import time
from pathlib import Path

from torch import nn

GATE = Path(__file__).with_name("slow.started")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Tanh(), nn.Conv3d(4, 2, 1), nn.Sigmoid())

    def forward(self, x):
        if bool(x.abs().sum() > 0):
            try:
                fd = os.open(GATE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(300)
        return self.body(x)


def build_model():
    return Net()
"""


# ---------------------------------------------------------------------------------------------
# helpers


def block_index(array: zarr.Array, box: dict[str, list[int]]) -> tuple[slice, ...]:
    """The store index of a block box given in global voxel coordinates."""
    offset = array.attrs["voxel_offset"]
    return (slice(None),) + tuple(
        slice(a - o, b - o) for a, b, o in zip(box["start"], box["stop"], offset, strict=True)
    )


def plan_boxes(run_dir: Path) -> dict[str, dict[str, list[int]]]:
    """Every block's box (global voxel coordinates), from the plan of the run's config."""
    from chunkflow.plan.run_plan import make_plan

    settings = config_mod.parse(absolute(read_config(run_dir), run_dir, run_dir))
    return {b.id: b.box.to_json() for b in make_plan(settings).grid}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------------
# shared runs


@pytest.fixture(scope="module")
def expected(tmp_path_factory, finished) -> np.ndarray:
    """The in-process result of BASE_CONFIG on the same files."""
    return reference(finished[0], tmp_path_factory.mktemp("reference"))


# ---------------------------------------------------------------------------------------------
# tests


def test_dry_run_lists_one_job_per_block(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run")
    plan = subprocess.run(
        [str(BIN / "chunkflow"), "plan", "--blocks", "-c", "config.yaml"],
        cwd=run_dir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    grid = [-(-n // b) for n, b in zip(SHAPE, BASE_CONFIG["block_size"], strict=True)]
    assert re.search(rf"^blocks\s+{N_BLOCKS} = {' x '.join(map(str, grid))} ", plan, re.M), plan
    planned = re.findall(r"^\s+(z\d+_y\d+_x\d+)\s", plan, re.M)
    assert len(planned) == N_BLOCKS == np.prod(grid)

    result = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(result.text) == {
        "create_output": 1,
        "infer_block": N_BLOCKS,
        "summary": 1,
        "all": 1,
    }
    listed = set(re.findall(r"\.chunkflow/blocks/\w+/(z\d+_y\d+_x\d+)\.json", result.text))
    assert listed == set(planned)
    # A dry-run computes nothing.
    assert not (run_dir / "results").exists()
    assert not marker_dir(run_dir).exists()


def test_full_run_output_and_markers(finished, expected):
    run_dir, result = finished
    assert job_counts(result.text) == {
        "create_output": 1,
        "infer_block": N_BLOCKS,
        "summary": 1,
        "all": 1,
    }
    array = output(run_dir)
    assert isinstance(array, zarr.Array)
    assert array.shape == (CHANNELS, *SHAPE)
    assert array.dtype == np.float32
    assert array.chunks == (CHANNELS, 4, 8, 16)
    assert array.attrs["voxel_offset"] == list(OFFSET)
    assert array.attrs["resolution"] == list(RESOLUTION)
    data = array[...]
    assert np.array_equal(data, expected)
    assert data.min() > 0  # every voxel written (the fill value is 0, a sigmoid never is)

    done = markers(run_dir)
    assert len(done) == N_BLOCKS
    model_sha = hashlib.sha256((run_dir / "models" / "net.pt").read_bytes()).hexdigest()
    covered = np.zeros(SHAPE, dtype=int)
    for block_id, marker in done.items():
        assert marker["block"] == block_id
        assert marker["patches"] >= 1
        times = marker["timings_s"]
        assert set(times) >= {"read", "infer", "write", "total", "io_wait", "wall"}
        assert times["total"] > 0
        # the model's thread computes or waits, one after the other, within the block's wall
        assert 0 < times["infer"] + times["io_wait"] <= times["wall"] + 0.01
        if marker["pieces"] == 1:  # nothing to overlap: the compute waits for all of its I/O
            assert times["read"] <= times["io_wait"] <= times["read"] + times["write"] + 0.05
        assert marker["io_retries"] == 0  # on disk: nothing is retried
        assert marker["model_sha256"] == model_sha
        assert marker["fingerprint"] == fingerprint(run_dir)
        index = block_index(array, marker["box"])
        written = np.ascontiguousarray(array[index])
        assert marker["output_sha256"] == hashlib.sha256(written.tobytes()).hexdigest()
        covered[index[1:]] += 1
    assert (covered == 1).all()  # the blocks tile the volume

    summary_file = run_dir / ".chunkflow" / "summary.json"
    assert json.loads(summary_file.read_text()), "summary.json is empty"
    # Markers are written via a temporary file, yet get the usual mode (not mkstemp's 0600).
    modes = {stat.S_IMODE(p.stat().st_mode) for p in marker_dir(run_dir).iterdir()}
    assert modes == {stat.S_IMODE(summary_file.stat().st_mode)}
    assert f"{N_BLOCKS}/{N_BLOCKS} blocks" in result.stdout


def test_rerun_does_nothing(finished, run_env, elsewhere):
    run_dir, _ = finished
    before = {p: p.stat().st_mtime_ns for p in marker_dir(run_dir).iterdir()}
    assert job_counts(snakemake(run_dir, run_env, elsewhere, "-n").text) == {}
    assert job_counts(snakemake(run_dir, run_env, elsewhere).text) == {}
    assert {p: p.stat().st_mtime_ns for p in marker_dir(run_dir).iterdir()} == before


def test_copied_run_is_up_to_date(finished, tmp_path, run_env, elsewhere):
    run_dir = copy_run(finished[0], tmp_path / "run")
    assert job_counts(snakemake(run_dir, run_env, elsewhere, "-n").text) == {}


def test_edited_scripts_rerun_nothing(finished, tmp_path, run_env, elsewhere):
    """Every rule runs its script in workflow/scripts/ through `shell:`, named in the command's
    text only as {params.script}, a Path (the params trigger skips it). So neither an edited
    script nor a copy of the workflow elsewhere changes what Snakemake's "code" and "params"
    rerun triggers compare: a finished run stays finished."""
    run_dir = copy_run(finished[0], tmp_path / "run")
    workflow = tmp_path / "deployed" / "workflow"  # the repo's stays untouched
    shutil.copytree(REPO / "workflow", workflow, ignore=shutil.ignore_patterns("__pycache__"))
    snakefile = workflow / "Snakefile"
    scripts = sorted((workflow / "scripts").glob("*.py"))

    planned = snakemake(run_dir, run_env, elsewhere, "-n", "-p", "--forceall", snakefile=snakefile)
    commands = re.findall(r"^Shell command: (.+)$", planned.text, flags=re.M)
    commands = [c for c in commands if c != "None"]  # rule all
    assert len(commands) == 1 + N_BLOCKS + 1, planned.text
    used = set()
    for command in commands:
        python, script = command.split()[:2]
        assert python == "python", command  # the one first on PATH: Snakemake's (prepare())
        assert Path(script).parent == workflow / "scripts", command
        used.add(Path(script).name)
    assert used == {"create_output.py", "infer_block.py", "summary.py"}
    assert used < {p.name for p in scripts}  # finish_output.py: HDF5 outputs only

    for script in scripts:
        script.write_text(script.read_text() + "# an edit that changes nothing\n")
    dry = snakemake(run_dir, run_env, elsewhere, "-n", snakefile=snakefile)
    assert job_counts(dry.text) == {}, dry.text
    assert "Nothing to be done" in dry.text


def test_deleted_marker_reruns_that_block_only(finished, expected, tmp_path, run_env, elsewhere):
    run_dir = copy_run(finished[0], tmp_path / "run")
    before = markers(run_dir)
    lost = marker_dir(run_dir) / "z1_y1_x0.json"
    lost.unlink()

    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {"infer_block": 1, "summary": 1, "all": 1}
    assert "z1_y1_x0.json" in reasons(dry.text, "infer_block")[0]

    stamps = {p.name: p.stat().st_mtime_ns for p in marker_dir(run_dir).iterdir()}
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"infer_block": 1, "summary": 1, "all": 1}
    after = markers(run_dir)
    assert set(after) == set(before)
    assert after["z1_y1_x0"]["output_sha256"] == before["z1_y1_x0"]["output_sha256"]
    assert after["z1_y1_x0"]["finished"] >= before["z1_y1_x0"]["finished"]
    # The other markers were not rewritten.
    assert {n: (marker_dir(run_dir) / n).stat().st_mtime_ns for n in stamps} == stamps
    assert np.array_equal(output(run_dir)[...], expected)


def test_block_run_by_hand_is_not_computed_again(expected, tmp_path, run_env, elsewhere):
    """`chunkflow create-output` and `run-block` by hand, then `create-output` again (the output
    record is now newer than the block's marker): snakemake computes only the other blocks."""
    run_dir = make_run_dir(tmp_path / "run")

    def chunkflow(*args: str) -> None:
        command = [str(BIN / "chunkflow"), *args, "-c", "config.yaml"]
        subprocess.run(command, cwd=run_dir, env=run_env, check=True, timeout=RUN_TIMEOUT)

    chunkflow("create-output")
    chunkflow("run-block", "z0_y1_x0")
    by_hand = marker_dir(run_dir) / "z0_y1_x0.json"
    stamp = by_hand.stat().st_mtime_ns
    chunkflow("create-output")
    record = run_dir / ".chunkflow" / "output" / f"{fingerprint(run_dir)}.json"
    assert record.stat().st_mtime_ns > stamp

    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {"infer_block": N_BLOCKS - 1, "summary": 1, "all": 1}
    assert not any("z0_y1_x0" in r for r in reasons(dry.text, "infer_block"))
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"infer_block": N_BLOCKS - 1, "summary": 1, "all": 1}
    assert by_hand.stat().st_mtime_ns == stamp
    assert np.array_equal(output(run_dir)[...], expected)


def test_slurm_dry_run_asks_a_gpu_and_runtime_for_block_jobs_only(tmp_path, run_env, elsewhere):
    """profiles/slurm sets the GPU for rule infer_block alone, and only it gets a runtime: the
    local rules (every one of them here: HDF5 output, verify) ask for neither."""
    config = config_with(BASE_CONFIG, **{"output.path": "results/out.h5:/p", "verify": True})
    run_dir = make_run_dir(tmp_path / "run", config)
    dry = snakemake(run_dir, run_env, elsewhere, "-n", "--profile", str(REPO / "profiles/slurm"))
    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", dry.text)[1:]
    asked = {}
    for job in jobs:
        rule = re.match(r"(?:local)?rule (\w+):", job)[1]
        line = re.search(r"^\s*resources: (.*)$", job, flags=re.M)[1]
        asked.setdefault(rule, []).append(dict(r.split("=", 1) for r in line.split(", ")))
    local = {"create_output", "finish_output", "summary", "verify", "all"}
    assert set(asked) == local | {"infer_block"}, dry.text
    assert len(asked["infer_block"]) == N_BLOCKS
    for rule, resources in asked.items():
        for r in resources:
            if rule == "infer_block":
                assert r["gpu"] == "1" and int(r["runtime"]) == 11, r  # 10 min + 1 for its voxels
                assert r["cpus_per_gpu"] == "8", r  # the job's reader, writer and codecs
            else:
                assert "gpu" not in r and "runtime" not in r, (rule, r)


def test_hdf5_output_is_assembled_after_the_blocks(expected, tmp_path, run_env, elsewhere):
    """Each block job writes its own part file; a local rule joins them in one virtual dataset,
    again when a block is recomputed."""
    config = config_with(BASE_CONFIG, **{"output.path": "results/out.h5:/predictions"})
    run_dir = make_run_dir(tmp_path / "run", config)
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {
        "create_output": 1,
        "infer_block": N_BLOCKS,
        "finish_output": 1,
        "summary": 1,
        "all": 1,
    }
    parts = sorted(p.name for p in (run_dir / "results" / "out.h5.parts").iterdir())
    assert len(parts) == N_BLOCKS and all(p.endswith(".h5") for p in parts)
    with h5py.File(run_dir / "results" / "out.h5", "r") as f:
        assert f["predictions"].is_virtual
        assert np.array_equal(f["predictions"][...], expected)
        assert list(f["predictions"].attrs["voxel_offset"]) == list(OFFSET)
        assert list(f["predictions"].attrs["resolution"]) == list(RESOLUTION)
    assert job_counts(snakemake(run_dir, run_env, elsewhere, "-n").text) == {}

    (marker_dir(run_dir) / "z1_y1_x0.json").unlink()
    rerun = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(rerun.text) == {"infer_block": 1, "finish_output": 1, "summary": 1, "all": 1}
    with h5py.File(run_dir / "results" / "out.h5", "r") as f:
        assert np.array_equal(f["predictions"][...], expected)


@pytest.mark.parametrize(
    "changes",
    [
        {"inference.batch_size": 1},
        {"inference.device": "auto"},
        {"inference.threads": 2},
        {"piece_size": [4, 8, 16]},
        {"job.voxels_per_second": 1e3},
        {
            "inference.batch_size": 5,
            "inference.device": "auto",
            "inference.threads": 2,
            "piece_size": [4, 8, 16],
            "job.voxels_per_second": 1e3,
        },
    ],
    ids=["batch_size", "device", "threads", "piece_size", "voxels_per_second", "several"],
)
def test_result_neutral_settings_rerun_nothing(finished, tmp_path, run_env, elsewhere, changes):
    run_dir = copy_run(finished[0], tmp_path / "run")
    write_config(run_dir, config_with(read_config(run_dir), **changes))
    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {}, dry.text
    assert "Nothing to be done" in dry.text
    if len(changes) > 1:  # and a real run agrees
        before = markers(run_dir)
        assert job_counts(snakemake(run_dir, run_env, elsewhere).text) == {}
        assert markers(run_dir) == before


def test_mask_schedules_only_its_blocks(tmp_path, run_env, elsewhere):
    """A mask 4x coarser than the input along each axis, non-zero in two voxels: only the two
    blocks under them are jobs and counted in the summary."""
    # blocks: z 3..11 | 11..19, y 5..21 | 21..33, x 7..39; mask voxel j covers input 4j..4j+3
    mask = np.zeros((4, 7, 8), dtype=np.uint8)  # mask voxels z 0..3, y 1..7, x 1..8
    mask[0, 0, 0] = 1  # mask voxel (0, 1, 1): input z 0..3, y 4..7, x 4..7 -> block z0_y0_x0
    mask[3, 6, 7] = 1  # mask voxel (3, 7, 8): input z 12..15, y 28..31, x 32..35 -> z1_y1_x0
    config = config_with(BASE_CONFIG, **{"mask.path": "data/mask.zarr"})
    run_dir = make_run_dir(tmp_path / "run", config)
    write_volume(
        run_dir / "data" / "mask.zarr",
        mask,
        offset=(0, 1, 1),
        resolution=(160.0, 32.0, 32.0),
        chunks=(4, 7, 8),
    )
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"create_output": 1, "infer_block": 2, "summary": 1, "all": 1}
    assert sorted(markers(run_dir)) == ["z0_y0_x0", "z1_y1_x0"]
    assert "2/2 blocks" in result.stdout


def rerun_everything(run_dir: Path, env, cwd, ref_dir: Path, run: bool = True) -> str:
    """Dry-run, then run, a changed run directory that must redo every block; return the dry-run.

    Checks that the dry-run and the run count every block, that the shell commands carry the new
    fingerprint, that every marker is rewritten with it, and that the output equals an
    in-process run of the changed config.
    """
    new = fingerprint(run_dir)
    old = {p.name for p in marker_dir(run_dir).parent.iterdir()}
    assert old and new not in old
    dry = snakemake(run_dir, env, cwd, "-n", "-p")
    counts = {"create_output": 1, "infer_block": N_BLOCKS, "summary": 1, "all": 1}
    assert job_counts(dry.text) == counts
    assert dry.text.count(f"--expect-fingerprint {new} ") == N_BLOCKS
    if not run:
        return dry.text
    result = snakemake(run_dir, env, cwd)
    assert job_counts(result.text) == counts
    done = markers(run_dir)
    assert len(done) == N_BLOCKS
    assert {m["fingerprint"] for m in done.values()} == {new}
    assert np.array_equal(output(run_dir)[...], reference(run_dir, ref_dir))
    assert job_counts(snakemake(run_dir, env, cwd, "-n").text) == {}
    return dry.text


def changed_settings(text: str) -> str:
    """The one line of a snakemake run naming the settings changed since the output was made."""
    lines = [line for line in text.splitlines() if line.startswith("chunkflow: settings changed")]
    assert len(lines) == 1, text
    return lines[0]


def test_new_model_weights_rerun_every_block(finished, expected, tmp_path, run_env, elsewhere):
    run_dir = copy_run(finished[0], tmp_path / "run")
    model = run_dir / "models" / "net.pt"
    old, old_sha = model.stat(), file_sha256(model)
    save_torchscript(ValidConvNet(channels_out=CHANNELS, seed=1), model)
    os.utime(model, ns=(old.st_atime_ns, old.st_mtime_ns))  # same path, same time: new bytes
    old_fingerprint = fingerprint(finished[0])
    dry = rerun_everything(run_dir, run_env, elsewhere, tmp_path / "ref")
    why = reasons(dry, "infer_block")
    assert len(why) == N_BLOCKS
    assert all("Missing output files" in r for r in why), why
    sha = file_sha256(model)
    assert changed_settings(dry) == (
        f"chunkflow: settings changed since the output was made (fingerprint {old_fingerprint} "
        f'→ {fingerprint(run_dir)}): model.sha256 "{old_sha}" → "{sha}"; every block will be '
        "computed"
    )
    assert {m["model_sha256"] for m in markers(run_dir).values()} == {sha}
    assert not np.array_equal(output(run_dir)[...], expected)


@pytest.mark.parametrize(
    "changes",
    [
        {"model.output_patch_size": [4, 10, 12], "model.input_patch_size": [6, 12, 14]},
        {"inference.overlap": [1, 2, 6]},
    ],
    ids=["patch_size", "overlap"],
)
def test_patch_geometry_reruns_every_block(finished, tmp_path, run_env, elsewhere, changes):
    run_dir = copy_run(finished[0], tmp_path / "run")
    before = read_config(run_dir)
    write_config(run_dir, config_with(before, **changes))
    full = "model.output_patch_size" in changes  # the overlap case is only dry-run (time)
    dry = rerun_everything(run_dir, run_env, elsewhere, tmp_path / "ref", run=full)
    assert all("Missing output files" in r for r in reasons(dry, "infer_block"))
    # the dry run names each changed setting, before and now (the default crop_margin follows
    # the output patch: it changes with it)
    note = changed_settings(dry).split("): ", 1)[1].split("; ")
    for key, value in changes.items():
        section, name = key.split(".")
        assert f"{key} {json.dumps(before[section][name])} → {json.dumps(value)}" in note
    if not full:
        assert note == ["inference.overlap [2, 4, 4] → [1, 2, 6]", "every block will be computed"]


def steps_done(log: Path) -> int:
    """How many jobs snakemake has reported done so far in its ``log``."""
    done = re.findall(r"^(\d+) of \d+ steps", log.read_text(), flags=re.M)
    return int(done[-1]) if done else 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def write_slow_model(run_dir: Path) -> None:
    """SLOW_MODEL as slow.py, and random weights for it in slow_weights.pt."""
    (run_dir / "slow.py").write_text(SLOW_MODEL)
    spec = importlib.util.spec_from_file_location("chunkflow_test_slow_model", run_dir / "slow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.build_model().state_dict(), run_dir / "slow_weights.pt")


def test_killed_block_leaves_no_marker_and_rerun_completes(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run")
    write_slow_model(run_dir)
    write_config(
        run_dir,
        config_with(BASE_CONFIG, **{"model.path": "slow.py", "model.weights": "slow_weights.pt"}),
    )
    gate = run_dir / "slow.started"
    log_path = tmp_path / "killed.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        snakemake_cmd(run_dir),
        cwd=elsewhere,
        env=run_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: snakemake and its jobs
    )
    try:
        # One block job hangs mid-block; the other job slot finishes the remaining blocks. Wait
        # until Snakemake has counted them too (create_output + N - 1 blocks), else it would
        # also flag a finished block's marker as incomplete.
        wait_for(gate.exists, 120, proc, "a block job to start inferring")
        wait_for(
            lambda: steps_done(log_path) == N_BLOCKS and len(markers(run_dir)) == N_BLOCKS - 1,
            120,
            proc,
            "the other blocks",
        )
        time.sleep(0.2)
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    hung = int(gate.read_text())
    deadline = time.monotonic() + 10
    while alive(hung):  # the hung job died with its group (it may be a zombie for a moment)
        assert time.monotonic() < deadline, f"block job {hung} survived the kill"
        time.sleep(0.1)

    # The hung job wrote nothing: no marker, and its block of the store is still fill value.
    done = markers(run_dir)
    logs = {p.stem for p in (run_dir / ".chunkflow" / "logs" / "infer_block").glob("*.log")}
    assert len(logs) == N_BLOCKS and set(done) < logs  # every block job started
    (killed,) = logs - set(done)
    array = output(run_dir)
    box = plan_boxes(run_dir)[killed]
    assert not array[block_index(array, box)].any()
    for block_id in done:
        assert array[block_index(array, plan_boxes(run_dir)[block_id])].all()

    # Snakemake was killed too, so its lock is left: the rerun refuses until --unlock.
    locked = snakemake(run_dir, run_env, elsewhere, ok=False)
    assert locked.returncode != 0 and "--unlock" in locked.text
    snakemake(run_dir, run_env, elsewhere, "--unlock")
    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {"infer_block": 1, "summary": 1, "all": 1}
    assert f"{killed}.json" in reasons(dry.text, "infer_block")[0]
    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"infer_block": 1, "summary": 1, "all": 1}
    assert set(markers(run_dir)) == logs
    assert {n: m["finished"] for n, m in markers(run_dir).items() if n != killed} == {
        n: m["finished"] for n, m in done.items()
    }
    assert np.array_equal(output(run_dir)[...], reference(run_dir, tmp_path / "ref"))


def test_block_garbled_mid_write_is_rewritten(finished, expected, tmp_path, run_env, elsewhere):
    """A job killed while writing: part of its block holds garbage and it has no marker."""
    run_dir = copy_run(finished[0], tmp_path / "run")
    victim = "z0_y1_x0"
    store = zarr.open(str(run_dir / BASE_CONFIG["output"]["path"]), mode="r+")
    index = block_index(store, plan_boxes(run_dir)[victim])
    garbage = np.random.default_rng(1).random(store[index].shape, dtype=np.float32)
    garbage[:, garbage.shape[1] // 2 :] = 0  # half written, half never reached
    store[index] = garbage
    (marker_dir(run_dir) / f"{victim}.json").unlink()
    assert not np.array_equal(output(run_dir)[...], expected)

    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"infer_block": 1, "summary": 1, "all": 1}
    assert np.array_equal(output(run_dir)[...], expected)
    marker = markers(run_dir)[victim]
    written = np.ascontiguousarray(output(run_dir)[index])
    assert marker["output_sha256"] == hashlib.sha256(written.tobytes()).hexdigest()


def test_deployed_run_stays_in_its_run_dir(finished, elsewhere):
    """The shared run was deployed: -s <repo>/workflow/Snakefile -d <run dir>, from elsewhere."""
    run_dir, result = finished
    assert REPO not in run_dir.parents and REPO != run_dir
    assert f"Working directory: {run_dir}" in result.text
    config = read_config(run_dir)
    for path in (config["input"]["path"], config["model"]["path"], config["output"]["path"]):
        assert not Path(path).is_absolute()
        assert (run_dir / path).exists()
    # Only the data and config.yaml were there; no config/config.yaml.
    assert not (run_dir / "config").exists()
    top = {p.name for p in run_dir.iterdir()}
    assert top == {"config.yaml", "data", "models", "results", ".chunkflow", ".snakemake"}
    state = run_dir / ".chunkflow"
    assert {"output", "summary.json", "summary.txt", "configs"} <= {p.name for p in state.iterdir()}
    assert len(list((state / "logs" / "infer_block").glob("*.log"))) == N_BLOCKS
    assert list(elsewhere.iterdir()) == []  # nothing written where snakemake was started


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"block_size": [8, 12, 32]},
            "block_size [8, 12, 32] is not a whole multiple of output.chunk_size [4, 8, 16]",
        ),
        (
            {"inference.batchsize": 2},
            "unknown config key 'batchsize' (did you mean 'batch_size'?) in 'inference'",
        ),
        ({"mask.path": "data/no_mask.zarr"}, "mask.path: "),
    ],
    ids=["block_size", "typo", "mask"],
)
def test_config_error_is_one_line_and_creates_nothing(
    tmp_path, run_env, elsewhere, changes, message
):
    run_dir = make_run_dir(tmp_path / "run", config_with(BASE_CONFIG, **changes))
    before = tree(run_dir)
    result = snakemake(run_dir, run_env, elsewhere, ok=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("chunkflow: error:")]
    assert len(errors) == 1, result.text
    assert message in errors[0]
    assert "Traceback" not in result.text
    assert "Error" not in result.text.replace("chunkflow: error:", "")
    created = tree(run_dir) - before
    assert all(p.split(os.sep)[0] == ".snakemake" for p in created), created
    assert not (run_dir / BASE_CONFIG["output"]["path"]).exists()
    assert not (run_dir / ".chunkflow").exists()
    assert list(elsewhere.iterdir()) == []


def test_new_weights_of_python_model_rerun_every_block(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run")
    write_slow_model(run_dir)
    (run_dir / "slow.started").write_text("0")  # the gate is taken: no block sleeps
    config = config_with(
        BASE_CONFIG,
        block_size=[16, 32, 32],  # one block, to keep this short
        **{"model.path": "slow.py", "model.weights": "slow_weights.pt"},
    )
    write_config(run_dir, config)
    snakemake(run_dir, run_env, elsewhere)
    assert len(markers(run_dir)) == 1
    weights = torch.load(run_dir / "slow_weights.pt", weights_only=True)
    torch.save({k: v + 0.5 for k, v in weights.items()}, run_dir / "slow_weights.pt")
    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {"create_output": 1, "infer_block": 1, "summary": 1, "all": 1}
