"""Shared fixtures: a small real volume, a real TorchScript model and a config pointing at them;
the real Snakemake runs' environment and a finished run (workflow_runs.py); the format matrix's
model and reference output (format_cases.py); a local S3 server (s3_server.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The helper modules that assert: pytest explains their failed asserts as it does the tests'.
pytest.register_assert_rewrite("format_cases", "workflow_runs")

from format_cases import make_config, zarr_input  # noqa: E402
from helpers import ValidConvNet, save_torchscript, smooth_volume, write_volume  # noqa: E402
from run_helpers import run_all_blocks  # noqa: E402
from s3_server import AWS, BUCKET, SERVER, client, moto_server  # noqa: E402
from workflow_runs import BIN, SNAKEMAKE, Result, make_run_dir, snakemake  # noqa: E402


@pytest.fixture
def small_config(tmp_path: Path) -> dict[str, Any]:
    """A 20 x 48 x 56 uint8 volume, a 2-channel valid-conv net (context 1), 8 blocks of 8 x 24 x 32.

    All paths are absolute, inside ``tmp_path``.
    """
    raw = write_volume(tmp_path / "raw.zarr", smooth_volume((20, 48, 56)), chunks=(4, 8, 8))
    model = save_torchscript(ValidConvNet(channels_out=2), tmp_path / "net.pt")
    return {
        "input": {"path": raw},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [4, 8, 8]},
        "block_size": [12, 24, 32],
        "model": {
            "path": model,
            "input_patch_size": [8, 18, 20],
            "output_patch_size": [6, 16, 18],
        },
        "inference": {"overlap": [2, 4, 6], "batch_size": 3},
        "state_dir": str(tmp_path / "state"),
    }


# ---------------------------------------------------------------------------------------------
# real Snakemake runs (workflow_runs.py)


@pytest.fixture(scope="session")
def run_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocesses: this Python's bin first on PATH, and a stub `scontrol`.

    The local executor never needs SLURM, but Snakemake imports every installed executor plugin,
    and the SLURM plugin runs `scontrol show config` at import: where a SLURM client is installed
    but no controller answers, that waits 10 s on every snakemake call.
    """
    if not SNAKEMAKE.exists():
        pytest.skip(f"snakemake not installed next to {sys.executable}")
    shim = tmp_path_factory.mktemp("bin")
    (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (shim / "scontrol").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(shim), str(BIN), env.get("PATH", "")])
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


@pytest.fixture(scope="session")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of every snakemake call: neither the repo nor a run directory."""
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, run_env, elsewhere) -> tuple[Path, Result]:
    """A completed run of BASE_CONFIG (not modified by the tests; copy it to change it)."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("finished") / "run")
    return run_dir, snakemake(run_dir, run_env, elsewhere)


# ---------------------------------------------------------------------------------------------
# the format matrix (format_cases.py)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return save_torchscript(ValidConvNet(channels_out=2), tmp_path_factory.mktemp("m") / "net.pt")


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> np.ndarray:
    root = tmp_path_factory.mktemp("reference")
    return run_all_blocks(make_config(model, zarr_input(root), root))


# ---------------------------------------------------------------------------------------------
# a local S3 server (s3_server.py)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A local S3 server with the bucket ``BUCKET``; its endpoint and credentials are in the
    environment (this process's and its children's) while the module's tests run."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**AWS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    SERVER["endpoint"] = env["AWS_ENDPOINT_URL"]
    client().create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
