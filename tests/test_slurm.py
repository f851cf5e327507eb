"""The workflow through a real SLURM controller on localhost (cluster/slurm-local), one fake GPU.

Every cluster run is guarded by `timeout -k`, so a hang fails the test instead of CI.
"""

from __future__ import annotations

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
    return {
        p.stem: json.loads(p.read_text()) for p in (run_dir / ".chunkflow/blocks").glob("*.json")
    }


def slurm_job(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True
    ).stdout


def output(run_dir: Path) -> np.ndarray:
    return zarr.open_array(str(run_dir / "out.zarr"), mode="r")[...]


def test_workflow_through_sbatch_equals_a_local_run(cluster, tmp_path: Path) -> None:
    run = make_run(tmp_path / "slurm")
    code, log = finish(snakemake(run))
    assert code == 0, log[-3000:]
    done = markers(run)
    assert sorted(done) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0", "z1_y0_x1"]
    job_ids = {m["ran_on"]["slurm_job_id"] for m in done.values()}
    assert None not in job_ids and len(job_ids) == 4, "every block is its own sbatch job"
    for m in done.values():
        assert m["ran_on"]["cuda_visible_devices"] == "0"  # SLURM handed out the (fake) GPU
        assert m["ran_on"]["device"] == "cpu"  # device: auto, and no CUDA device behind it
        assert m["ran_on"]["slurm_node"] == "localhost"
        assert "gpu:1" in slurm_job(m["ran_on"]["slurm_job_id"])  # TresPerJob / AllocTRES

    local = make_run(tmp_path / "local")
    code, log = finish(snakemake(local, profile=None))
    assert code == 0, log[-3000:]
    np.testing.assert_array_equal(output(run), output(local))


def test_cancelled_block_is_reported_and_only_it_reruns(cluster, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", model="sleepy")
    proc = snakemake(run, "--retries", "0", env={"CHUNKFLOW_TEST_SLEEP": "2"})
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline and proc.poll() is None:
        queue = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True
        ).stdout
        running = [
            line.split("|") for line in queue.splitlines() if "|RUNNING|rule_infer_z" in line
        ]
        if running:
            victim = running[0]
        time.sleep(0.5)
    assert victim is not None, "no block job was seen running"
    subprocess.run(["scancel", victim[0]], check=True)
    victim_block = re.search(r"z\d+_y\d+_x\d+", victim[2])[0]  # the job's rule: infer_<block>
    code, log = finish(proc)
    assert code != 0, "a cancelled job must fail the run"
    assert f"Error in rule infer_{victim_block}" in log
    done = markers(run)
    assert victim_block not in done and len(done) == 3, "keep-going: the other blocks finished"

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
    assert "Error in rule infer_z1_y0_x1" in log
    assert "holds NaN or infinite values" in log, "the failed job's log is shown"
    assert sorted(markers(run)) == ["z0_y0_x0", "z0_y0_x1", "z1_y0_x0"]
