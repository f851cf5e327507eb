"""Mistakes that need the model to be seen fail before any job, in one line: through `chunkflow
plan` and through a real Snakemake run. A job that fails anyway ends Snakemake's output with its
cause. The model check is cached by the model's digest and the patch geometry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import ValidConvNet, config_with
from workflow_runs import (
    BASE_CONFIG,
    make_run_dir,
    snakemake,
    write_config,
)

from chunkflow import config as config_mod
from chunkflow.plan import model_check
from chunkflow.plan.model_check import check_key, export_batch_range
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.model_facts import check_before_jobs, model_facts
from chunkflow.state.run_state import RunState

CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))

NO_BUILD_MODEL = "from torch import nn\n\nNET = nn.Conv3d(1, 2, 3)\n"

# Fine on the zero patches the check runs, fails on real data: a job fails anyway.
FAILS_ON_DATA = """\
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 4, 3), nn.Tanh(),
            nn.Conv3d(4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, x):
        if bool(x.abs().sum() > 0):
            raise ValueError("this network was trained on zeros only")
        return self.body(x)


def build_model():
    return Net()
"""


def export(path: Path, input_size: list[int], batch: int, dynamic: bool) -> str:
    """ValidConvNet (2 channels, context 1) saved with torch.export, as users first do it: an
    example batch of ``batch``, and a static batch unless ``dynamic``."""
    net = ValidConvNet(channels_out=2).eval()
    example = (torch.zeros(batch, 1, *input_size),)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(net, example, dynamic_shapes=shapes), path)
    return str(path)


def plan_error(tmp_path: Path, config: dict[str, Any]) -> str:
    """`chunkflow plan`'s stderr for ``config``, which must fail in one line and print no plan."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [CHUNKFLOW, "plan", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chunkflow: error: "), result.stderr
    return lines[0]


def model_of(small_config: dict[str, Any], **model: Any) -> dict[str, Any]:
    return config_with(small_config, model={**small_config["model"], **model})


def test_wrong_output_patch_size(tmp_path, small_config):
    line = plan_error(tmp_path, model_of(small_config, output_patch_size=[6, 14, 18]))
    assert "the model returned shape [1, 2, 6, 16, 18]" in line and "output_patch_size" in line
    # a valid-convolution net given its input size as output size: the error names the size
    line = plan_error(tmp_path, model_of(small_config, output_patch_size=[8, 18, 20]))
    assert line.endswith(
        "set model.output_patch_size: [6, 16, 18] (what it returns for [8, 18, 20])"
    ), line


def test_wrong_channel_count(tmp_path, small_config):
    line = plan_error(tmp_path, model_of(small_config, output_channels=3))
    assert "the model returned 2 channels but 3 are expected" in line


def test_state_dict_as_model_path(tmp_path, small_config):
    weights = tmp_path / "weights.pt"
    torch.save(ValidConvNet(channels_out=2).state_dict(), weights)
    line = plan_error(tmp_path, model_of(small_config, path=str(weights)))
    assert "holds weights only (a state dict)" in line and "model.weights" in line
    checkpoint = tmp_path / "checkpoint.pt"  # a training checkpoint: the state dict inside
    torch.save({"epoch": 3, "state_dict": ValidConvNet().state_dict()}, checkpoint)
    assert "holds weights only" in plan_error(
        tmp_path, model_of(small_config, path=str(checkpoint))
    )


def test_python_file_without_build_model(tmp_path, small_config):
    source = tmp_path / "net.py"
    source.write_text(NO_BUILD_MODEL)
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    line = plan_error(tmp_path, model_of(small_config, path=str(source), weights=str(weights)))
    assert line.endswith(f"'{source}' defines no build_model(); add one returning the network")


def test_existing_output_of_another_shape(tmp_path, small_config):
    smaller = config_with(small_config, roi={"offset": [0, 0, 0], "size": [12, 48, 56]})
    config_file = tmp_path / "smaller.yaml"
    config_file.write_text(yaml.safe_dump(smaller))
    subprocess.run(
        [CHUNKFLOW, "create-output", "--config", str(config_file)], check=True, capture_output=True
    )
    line = plan_error(tmp_path, small_config)
    assert f"output '{small_config['output']['path']}' exists with different shape" in line


def test_static_batch_export(tmp_path, small_config):
    """Exported for a batch of 1 (no dynamic dimension) with batch_size 3: refused naming both
    fixes; each fix then passes."""
    size = small_config["model"]["input_patch_size"]
    static = export(tmp_path / "static.pt2", size, batch=1, dynamic=False)
    line = plan_error(tmp_path, model_of(small_config, path=static))
    assert "was exported for batches of exactly 1 patch(es), but inference.batch_size is 3" in line
    assert "set inference.batch_size: 1, or export it with a dynamic batch" in line
    assert export_batch_range(static) == (1, 1)

    one = config_with(small_config, model={**small_config["model"], "path": static})
    one["inference"]["batch_size"] = 1
    assert model_facts(make_plan(config_mod.parse(one))).output_channels == 2
    dynamic = export(tmp_path / "dynamic.pt2", size, batch=2, dynamic=True)
    low, high = export_batch_range(dynamic)
    assert low <= 1 and high is None
    assert model_facts(make_plan(config_mod.parse(model_of(small_config, path=dynamic)))) == (
        model_check.ModelFacts(output_channels=2)
    )


def test_a_static_batch_larger_than_one_is_refused_for_any_batch_size(tmp_path, small_config):
    size = small_config["model"]["input_patch_size"]
    static = export(tmp_path / "static3.pt2", size, batch=3, dynamic=False)
    line = plan_error(tmp_path, model_of(small_config, path=static))
    assert "exported for batches of exactly 3 patch(es), but a block's last batch may" in line
    assert "inference.batch_size:" not in line


def test_the_check_is_cached_by_model_digest_and_geometry(small_config, monkeypatch):
    probes = []
    real_probe = model_check.probe
    monkeypatch.setattr(model_check, "probe", lambda plan: probes.append(1) or real_probe(plan))
    plan = make_plan(config_mod.parse(small_config))
    assert check_before_jobs(plan).output_channels == 2 and len(probes) == 1
    again = make_plan(config_mod.parse(small_config))  # another process: a new plan
    assert check_before_jobs(again).output_channels == 2 and len(probes) == 1
    assert RunState.of(again).model_check(check_key(again)).is_file()
    other_patch = model_of(
        small_config, input_patch_size=[8, 20, 20], output_patch_size=[6, 18, 18]
    )
    assert model_facts(make_plan(config_mod.parse(other_patch))).output_channels == 2
    assert len(probes) == 2
    torch.jit.save(torch.jit.script(ValidConvNet(channels_out=2, seed=1)), plan.settings.model.path)
    assert model_facts(make_plan(config_mod.parse(small_config))).output_channels == 2
    assert len(probes) == 3  # new weights: a new digest, checked again


# A network that notes the type of every batch it is given; with NEEDS_VALUES it reads a value
# of its input back into Python, which fake tensors cannot give.
SEES_BATCHES = """\
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)

    def forward(self, x):
        with open({log!r}, "a") as log:
            log.write(type(x).__name__ + "\\n")
        if {needs_values} and x.abs().max().item() > 1e6:
            raise ValueError("input out of range")
        return self.conv(x)


def build_model():
    return Net()
"""


def batches_seen(tmp_path: Path, small_config: dict[str, Any], needs_values: bool) -> list[str]:
    """The types of the batches the model check gives SEES_BATCHES's network."""
    log = tmp_path / "batches.txt"
    source = tmp_path / "sees.py"
    source.write_text(SEES_BATCHES.format(log=str(log), needs_values=needs_values))
    torch.manual_seed(0)
    weights = tmp_path / "sees.pth"
    torch.save(torch.nn.ModuleDict({"conv": torch.nn.Conv3d(1, 2, 3)}).state_dict(), weights)
    config = model_of(small_config, path=str(source), weights=str(weights))
    assert model_facts(make_plan(config_mod.parse(config))).output_channels == 2
    return log.read_text().split()


def test_the_check_computes_nothing_on_fake_tensors(tmp_path, small_config):
    """Shapes and channels come from fake tensors: a full batch and one of a single patch reach
    the network, no real batch does (no compute, no activations in Snakemake's process)."""
    assert batches_seen(tmp_path, small_config, needs_values=False) == ["FakeTensor"] * 2


def test_a_network_that_reads_values_is_checked_on_real_zeros(tmp_path, small_config):
    seen = batches_seen(tmp_path, small_config, needs_values=True)
    assert seen[0] == "FakeTensor" and set(seen[1:]) == {"Tensor"} and len(seen) == 3


# Keeps a tensor made on its first call and reads a value of it: the check's fake run leaves a
# fake tensor in it, and fails.
CACHES = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)
        self.scale = None

    def forward(self, x):
        if self.scale is None:
            self.scale = torch.ones(1)
        return self.conv(x) * self.scale.sum().item()


def build_model():
    return Net()
"""


def test_the_real_check_runs_a_model_the_fake_run_left_no_tensor_in(tmp_path, small_config):
    source = tmp_path / "caches.py"
    source.write_text(CACHES)
    weights = tmp_path / "caches.pth"
    torch.save(torch.nn.ModuleDict({"conv": torch.nn.Conv3d(1, 2, 3)}).state_dict(), weights)
    config = model_of(small_config, path=str(source), weights=str(weights))
    assert model_facts(make_plan(config_mod.parse(config))).output_channels == 2


# ---------------------------------------------------------------------------------------------
# through a real Snakemake run


@pytest.mark.workflow
def test_a_model_mistake_fails_snakemake_in_one_line_before_any_job(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run")
    config = config_with(BASE_CONFIG, model={**BASE_CONFIG["model"], "output_channels": 5})
    write_config(run_dir, config)
    for args in (("-n",), ()):
        result = snakemake(run_dir, run_env, elsewhere, *args, ok=False)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert errors == [
            "chunkflow: error: the model returned 2 channels but 5 are expected "
            "(model.output_channels, or the existing output store's channel count); "
            "fix the config or the model"
        ], result.text
        assert "RuleException" not in result.text and "rule " not in result.stdout
    assert not (run_dir / "results").exists()  # no job ran: no output made


@pytest.mark.workflow
def test_a_failing_job_ends_snakemakes_output_with_its_cause(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run")
    (run_dir / "models" / "net.py").write_text(FAILS_ON_DATA)
    torch.save(ValidConvNet(channels_out=2).state_dict(), run_dir / "models" / "w.pt")
    model = {**BASE_CONFIG["model"], "path": "models/net.py", "weights": "models/w.pt"}
    write_config(run_dir, config_with(BASE_CONFIG, model=model))
    result = snakemake(run_dir, run_env, elsewhere, "--keep-going", ok=False)
    assert result.returncode != 0
    after = result.stderr.split("Exiting because a job execution failed")[1].splitlines()
    ours = [line for line in after if line.startswith("chunkflow: ")]
    assert ours[-1] == "chunkflow: 1 more block job(s) failed: see `chunkflow status`", result.text
    assert len(ours) == 4 and ours == after[1:5]  # right after Snakemake's last job report
    for line in ours[:3]:
        assert line.startswith("chunkflow: error: block z"), line
        assert "this network was trained on zeros only (ValueError) (log: " in line, line
        log = Path(run_dir, line.rsplit("(log: ", 1)[1].rstrip(")"))
        assert log.is_file() and "trained on zeros only" in log.read_text()
