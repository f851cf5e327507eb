"""The workflow through a real SLURM controller on localhost (cluster/slurm-local), one fake GPU.

Each block job asks for the memory and time limit that the workflow derived
(chunkflow.app.snakemake_adapter); SLURM's own records (`scontrol show job`, kept MinJobAge = 300 s
after a job ends) are checked against them. Job arrays (`--slurm-array-jobs infer_block`, off in
the profiles because of a plugin bug, see test_array_task_does_not_depend_on_the_first_task) and
group jobs (`--groups`) are run too. Every cluster run is guarded by `timeout -k`, so a hang
fails the test instead of CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import ValidConvNet, dry_run_job_counts, save_torchscript, smooth_volume, write_volume

from chunkflow.app.snakemake_adapter import prepare

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_TIMEOUT = 420

SLEEPY_MODEL = '''
import os
import time

import torch

import helpers


class Sleepy(torch.nn.Module):
    """The test net, sleeping per forward pass while CHUNKFLOW_TEST_SLEEP is set."""

    def __init__(self):
        super().__init__()
        self.net = helpers.ValidConvNet(channels_out=2)

    def forward(self, x):
        time.sleep(float(os.environ.get("CHUNKFLOW_TEST_SLEEP", "0")))
        return self.net(x)


def build_model():
    return Sleepy()
'''


def _cluster_up() -> bool:
    ping = shutil.which("scontrol") and subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True
    )
    return bool(ping) and "UP" in ping.stdout


@pytest.fixture(scope="module")
def cluster():
    """Start the local cluster (installing SLURM if needed); stop it after if this started it."""
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    was_up = _cluster_up()
    up = subprocess.run(
        ["bash", str(REPO / "cluster/slurm-local/up.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    yield
    if not was_up:
        subprocess.run(
            ["bash", str(REPO / "cluster/slurm-local/down.sh")], timeout=120, check=False
        )


def make_run(run_dir: Path, model: str = "ts", bad_region: tuple[slice, ...] | None = None) -> Path:
    """A run dir with a 16 x 32 x 48 volume, a model and a config: 2 x 1 x 2 = 4 blocks."""
    run_dir.mkdir(parents=True)
    data = smooth_volume((16, 32, 48), seed=5)
    if bad_region is not None:
        data = data.astype(np.float32) / 255
        data[bad_region] = np.nan
    write_volume(run_dir / "raw.zarr", data, resolution=(30.0, 4.0, 4.0), chunks=(8, 16, 16))
    model_cfg: dict = {"input_patch_size": [6, 18, 18], "output_patch_size": [4, 16, 16]}
    if model == "ts":
        model_cfg["path"] = save_torchscript(ValidConvNet(channels_out=2), run_dir / "net.pt")
    else:
        import torch

        (run_dir / "sleepy.py").write_text(SLEEPY_MODEL)
        torch.save(
            {f"net.{k}": v for k, v in ValidConvNet(channels_out=2).state_dict().items()},
            run_dir / "w.pt",
        )
        model_cfg.update(path="sleepy.py", weights="w.pt")
    config = {
        "input": {"path": "raw.zarr", "scale": "none" if bad_region is not None else "auto"},
        "output": {"path": "out.zarr", "chunk_size": [8, 16, 24]},
        "block_size": [8, 32, 24],
        "model": model_cfg,
        "inference": {"overlap": [1, 4, 4], "batch_size": 4},
        # runtime: 10 min + 2 x 6,144 voxels / 20 per s = 10 + 11 = 21 min, unlike the default's 11
        "job": {"voxels_per_second": 20},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def snakemake(
    run_dir: Path, *extra: str, profile: str | None = "slurm-local", env: dict | None = None
):
    cmd = [
        "timeout",
        "-k",
        "10",
        str(SLURM_TIMEOUT),
        SNAKEMAKE,
        "-s",
        str(REPO / "workflow/Snakefile"),
    ]
    cmd += ["-d", str(run_dir), "--configfile", str(run_dir / "config.yaml")]
    cmd += ["--profile", str(REPO / "profiles" / profile)] if profile else ["--cores", "2"]
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})}
    return subprocess.Popen(
        [*cmd, *extra],
        cwd=run_dir,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=SLURM_TIMEOUT + 30)
    assert proc.returncode not in (124, 137), "snakemake timed out:\n" + out[-3000:]
    return proc.returncode, out


def markers(run_dir: Path) -> dict[str, dict]:
    """Block id -> its done-marker (``.chunkflow/blocks/[<fingerprint>/]<block>.json``)."""
    found = (run_dir / ".chunkflow/blocks").rglob("*.json")
    return {p.stem: json.loads(p.read_text()) for p in found}


def slurm_job(job_id: str) -> dict[str, str]:
    """SLURM's record of a job (``scontrol show job``) as {field: value}. The id of an array
    shows all its tasks; the record asked for is the one whose JobId is ``job_id``."""
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    for text in shown.split("\n\n"):
        record = dict(word.split("=", 1) for word in text.split() if "=" in word)
        if record.get("JobId") == job_id:
            return record
    raise AssertionError(f"no record of job {job_id} in:\n{shown}")


def block_jobs(run_dir: Path) -> dict[str, dict[str, str]]:
    """Block id -> SLURM's record of the job that wrote its marker."""
    return {b: slurm_job(m["ran_on"]["slurm_job_id"]) for b, m in markers(run_dir).items()}


def derived_resources(run_dir: Path) -> tuple[int, int]:
    """(mem_mb, runtime in minutes) that the workflow asks for one block job, computed by the
    package from the run's config as the Snakefile does."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    with contextlib.chdir(run_dir):
        run = prepare(config)
    return run.job_mem_mb, run.job_runtime_min


def time_limit(minutes: int) -> str:
    """A SLURM TimeLimit as ``scontrol`` prints it (under a day)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def failed_blocks(log: str) -> set[str]:
    """The blocks of the `Error in rule infer_block:` sections of a snakemake log (their output)."""
    sections = log.split("Error in rule ")[1:]
    return {
        re.search(r"output: \S*?(z\d+_y\d+_x\d+)\.json", section)[1]
        for section in sections
        if section.startswith("infer_block:")
    }


def output(run_dir: Path) -> np.ndarray:
    return zarr.open_array(str(run_dir / "out.zarr"), mode="r")[...]


ARRAY = ["--slurm-array-jobs", "infer_block"]


def running_job(pattern: str, proc: subprocess.Popen, seconds: float = 180) -> str | None:
    """The id (``squeue %i``) of the first running SLURM job whose id matches ``pattern``."""
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True)
        for line in queue.stdout.splitlines():
            job_id, state = line.split("|")
            if state == "RUNNING" and re.fullmatch(pattern, job_id):
                return job_id
        time.sleep(0.5)
    return None


def test_workflow_through_sbatch_equals_a_local_run(cluster, tmp_path: Path) -> None:
    run = make_run(tmp_path / "slurm")
    code, log = finish(snakemake(run))
    assert code == 0, log[-3000:]
    done = markers(run)
    assert sorted(done) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0", "z1_y0_x1"]
    for m in done.values():
        assert m["ran_on"]["cuda_visible_devices"] == "0"  # SLURM handed out the (fake) GPU
        assert m["ran_on"]["device"] == "cpu"  # device: auto, and no CUDA device behind it
        assert m["ran_on"]["slurm_node"] == "localhost"

    # Every block its own sbatch job, asking for what the workflow derived: the time limit from
    # the block's voxels and job.voxels_per_second, the memory from the piece size.
    jobs = block_jobs(run)
    assert len({j["JobId"] for j in jobs.values()}) == 4
    mem_mb, runtime = derived_resources(run)
    assert runtime == 21 and mem_mb > 1024
    for block, job in jobs.items():
        assert "ArrayJobId" not in job, (block, job)
        assert job["TimeLimit"] == time_limit(runtime), (block, job)
        assert job["MinMemoryNode"] == f"{mem_mb}M", (block, job)
        assert job["TresPerJob"] == "gres:gpu:1", (block, job)

    local = make_run(tmp_path / "local")
    code, log = finish(snakemake(local, profile=None))
    assert code == 0, log[-3000:]
    np.testing.assert_array_equal(output(run), output(local))


def test_job_array_runs_every_block_as_a_task_with_the_derived_resources(
    cluster, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run")
    code, log = finish(snakemake(run, *ARRAY))
    assert code == 0, log[-3000:]
    # One sbatch call: the 4 blocks are the tasks 1-4 of one job array, each its own SLURM job.
    array = re.search(
        r"Submitted array job .* SLURM job ID (\d+)\. The individual task IDs are 1-4", log
    )
    assert array, log[-3000:]
    jobs = block_jobs(run)
    assert sorted(jobs) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0", "z1_y0_x1"]
    assert {j["ArrayJobId"] for j in jobs.values()} == {array[1]}
    assert sorted(j["ArrayTaskId"] for j in jobs.values()) == ["1", "2", "3", "4"]
    assert len({j["JobId"] for j in jobs.values()}) == 4
    # The plugin adds 1 MB to an array job's memory for the task list it carries (3 x its bytes,
    # rounded up to whole MB): all else is what the workflow derived.
    mem_mb, runtime = derived_resources(run)
    for block, job in jobs.items():
        assert job["TimeLimit"] == time_limit(runtime), (block, job)
        assert job["MinMemoryNode"] == f"{mem_mb + 1}M", (block, job)
        assert job["TresPerJob"] == "gres:gpu:1", (block, job)


def test_grouped_blocks_share_a_job_with_one_gpu_in_turn(cluster, tmp_path: Path) -> None:
    """--groups infer_block=blocks --group-components blocks=2: 4 blocks in 2 SLURM jobs, each
    asking for one GPU, one block's memory and two blocks' time (the profile's gpu=1 limit per
    group job puts a job's blocks one after the other)."""
    run = make_run(tmp_path / "run")
    groups = ["--groups", "infer_block=blocks", "--group-components", "blocks=2"]
    code, log = finish(snakemake(run, *groups))
    assert code == 0, log[-3000:]
    jobs = block_jobs(run)
    assert sorted(jobs) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0", "z1_y0_x1"]
    by_job: dict[str, list[str]] = {}
    for block, job in jobs.items():
        by_job.setdefault(job["JobId"], []).append(block)
    assert sorted(map(len, by_job.values())) == [2, 2], by_job
    mem_mb, runtime = derived_resources(run)
    for job in jobs.values():
        assert "ArrayJobId" not in job, job  # a group job is never an array task
        assert job["TresPerJob"] == "gres:gpu:1", job
        assert job["MinMemoryNode"] == f"{mem_mb}M", job
        assert job["TimeLimit"] == time_limit(2 * runtime), job


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="snakemake-executor-plugin-slurm 2.8.0 / jobstep 0.6.1 (issue #447): every array "
    "task runs its own block, then waits for the FIRST task's output and fails without it. "
    "When this passes, job arrays can be turned on in profiles/slurm (see its README).",
)
def test_array_task_does_not_depend_on_the_first_task(cluster, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", model="sleepy")
    extra = [*ARRAY, "--retries", "0", "--latency-wait", "5"]
    proc = snakemake(run, *extra, env={"CHUNKFLOW_TEST_SLEEP": "0.5"})
    first = running_job(r"\d+_1", proc)  # one GPU: the tasks run one at a time, in order
    if first is None:
        proc.kill()
        pytest.fail("task 1 of the block array was not seen running")
    subprocess.run(["scancel", first], check=True)
    code, log = finish(proc)
    if code == 0 or len(failed_blocks(log)) not in (1, 4):
        pytest.fail(f"unexpected outcome (exit {code}):\n{log[-3000:]}")
    assert len(failed_blocks(log)) == 1, "tasks 2-4 failed with task 1:\n" + log[-3000:]
    assert len(markers(run)) == 3


def test_cancelled_block_is_reported_and_only_it_reruns(cluster, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", model="sleepy")
    proc = snakemake(run, "--retries", "0", env={"CHUNKFLOW_TEST_SLEEP": "0.5"})
    victim = running_job(r"\d+", proc)
    assert victim is not None, "no block job was seen running"
    subprocess.run(["scancel", victim], check=True)
    code, log = finish(proc)
    assert code != 0, "a cancelled job must fail the run"
    done = markers(run)
    assert len(done) == 3, "keep-going: the other blocks finished"
    (victim_block,) = {"z0_y0_x0", "z0_y0_x1", "z1_y0_x0", "z1_y0_x1"} - set(done)
    assert failed_blocks(log) == {victim_block}, log[-3000:]

    dry = subprocess.run(
        [
            SNAKEMAKE,
            "-s",
            str(REPO / "workflow/Snakefile"),
            "-d",
            str(run),
            "--configfile",
            str(run / "config.yaml"),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert dry_run_job_counts(dry.stdout).get("infer_block") == 1, dry.stdout[-2000:]

    code, log = finish(snakemake(run))
    assert code == 0, log[-3000:]
    assert len(markers(run)) == 4
    local = make_run(tmp_path / "local", model="sleepy")
    assert finish(snakemake(local, profile=None))[0] == 0
    np.testing.assert_array_equal(output(run), output(local))


def test_block_with_bad_data_fails_with_its_log_shown_and_others_complete(
    cluster, tmp_path: Path
) -> None:
    # NaN inside block z1_y0_x1 only (and far enough from the others' chunks)
    run = make_run(tmp_path / "run", bad_region=(slice(13, 15), slice(10, 20), slice(38, 44)))
    code, log = finish(snakemake(run, "--retries", "0"))
    assert code != 0
    assert failed_blocks(log) == {"z1_y0_x1"}, log[-3000:]
    assert "holds NaN or infinite values" in log, "the failed job's log is shown"
    assert sorted(markers(run)) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0"]
