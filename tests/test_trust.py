"""Checkpoints you can trust: each test injects one fault that a long run meets — another run's
settings aimed at the same output, Snakemake's records lost, broken done-markers, a second
snakemake while one runs — and checks what happens then, down to the stored bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
import zarr
from helpers import config_with
from run_helpers import read_back, run_all_blocks, run_as_well
from workflow_runs import (
    BASE_CONFIG,
    N_BLOCKS,
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
from chunkflow.app.snakemake_adapter import prepare
from chunkflow.errors import VolumeError
from chunkflow.job import block_job as block
from chunkflow.job.block_job import run_blocks
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_output, open_volume

CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))
OTHER_OVERLAP = {"inference.overlap": [1, 4, 6]}  # small_config's is [2, 4, 6]


def chunkflow(
    config: dict[str, Any], *args: str, cwd: Path | None = None, ok: bool = True
) -> tuple[str, str]:
    """``chunkflow <args> --config <config written to a file>``: (stdout, stderr); it must
    succeed (fail, with ``ok=False``) and print no traceback."""
    path = Path(config["state_dir"]).with_name(f"{Path(config['state_dir']).name}.yaml")
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [CHUNKFLOW, *args, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert (result.returncode == 0) == ok and "Traceback" not in result.stderr, result.stderr
    return result.stdout, result.stderr


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def plan_of(config: dict[str, Any]):
    return make_plan(config_mod.parse(config))


# ---------------------------------------------------------------------------------------------
# 1. the output records the result fingerprint of what it holds


def recorded(path: str) -> str | None:
    """The fingerprint in the output's metadata, as the format's own library reads it."""
    if ".h5:" in path:
        file, dataset = path.split(":", 1)
        with h5py.File(file, "r") as f:
            return f[dataset].attrs.get("chunkflow_fingerprint")
    if path.startswith("precomputed://file://"):
        info = Path(path.removeprefix("precomputed://file://"), "info")
        return json.loads(info.read_text())["chunkflow"]["fingerprint"]
    array = zarr.open_array(f"{path}/0" if path.endswith(".ome.zarr") else path, mode="r")
    return array.attrs.get("chunkflow_fingerprint")


OUTPUTS = {
    "zarr3": ("out.zarr", {}),
    "zarr2": ("out.zarr", {"output.zarr_format": 2}),
    "ome-zarr": ("out.ome.zarr", {}),
    "hdf5": ("out.h5:/predictions", {}),
    "precomputed": ("precomputed://file://{}/out", {}),
}


@pytest.mark.parametrize("name", OUTPUTS)
def test_every_output_format_records_the_result_fingerprint(name, small_config, tmp_path):
    spelling, changes = OUTPUTS[name]
    path = spelling.format(tmp_path) if "{}" in spelling else str(tmp_path / spelling)
    plan = plan_of(config_with(small_config, **{"output.path": path}, **changes))
    volume, created = create_output(plan)
    assert created and recorded(path) == plan.fingerprint == open_volume(path).info.fingerprint
    geometry = open_volume(path).info
    assert len(geometry.store_id) == 32 and geometry.store_id == volume.info.store_id

    volume.record_fingerprint("f" * 16, "b" * 32)  # what output.replace does
    assert recorded(path) == "f" * 16
    assert open_volume(path).info == replace(geometry, fingerprint="f" * 16, store_id="b" * 32)
    if name == "hdf5":  # the finishing step rewrites the file: the fingerprint stays
        open_volume(path, mode="r+").finish([])
        assert recorded(path) == "f" * 16


# ---------------------------------------------------------------------------------------------
# fault 1: two runs (state dirs) with other settings aimed at one output


def test_another_runs_output_is_refused_untouched_unless_replaced(
    small_config, tmp_path, monkeypatch
):
    first = small_config
    written = run_all_blocks(first)
    second = config_with(first, **OTHER_OVERLAP, state_dir=str(tmp_path / "second"))
    one, two = plan_of(first).fingerprint, plan_of(second).fingerprint
    store = Path(first["output"]["path"])
    assert recorded(str(store)) == one != two
    before = snapshot(store)

    # create-output and a block job (`chunkflow run-block`, Snakemake's infer_block) refuse it
    for attempt in (
        lambda: create_output(plan_of(second)),
        lambda: run_blocks(make_plan(config_mod.parse(second)), ["z0_y0_x0"]),
    ):
        with pytest.raises(VolumeError) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message, message
        assert f"(fingerprint {one}; this config's is {two})" in message
        assert "set output.replace: true" in message and "another output.path" in message
    assert snapshot(store) == before
    assert not Path(second["state_dir"], "blocks").exists()
    no_run = chunkflow(second, "status", ok=False)[1]  # no state dir: this config never ran
    assert no_run.startswith("chunkflow: error: no run here: its state directory")

    # output.replace: the store is taken over, and every block computed into it
    replacing = config_with(second, **{"output.replace": True})
    assert plan_of(replacing).fingerprint == two  # not a result setting
    create_output(plan_of(replacing))
    assert recorded(str(store)) == two
    opened = []
    monkeypatch.setattr(
        block,
        "open_output",
        lambda output, **kw: opened.append(output.path) or open_output(output, **kw),
    )
    run_blocks(make_plan(config_mod.parse(replacing)), plan_of(second).block_ids)
    assert opened.count(str(store)) == 1  # one job opens the store once, and checks it then
    replaced = read_back(str(store))[0]
    np.testing.assert_array_equal(replaced, run_as_well(second, "alone"))
    assert not np.array_equal(replaced, written)
    assert chunkflow(second, "status")[0].splitlines()[0] == "8/8 blocks done"

    # the first run's markers describe blocks overwritten since: none counts, it is refused
    status = chunkflow(first, "status")[0].splitlines()
    assert status[0] == "0/8 blocks done" and f"(fingerprint {two}; this" in status[1]
    assert sum(line.startswith("  stale ") for line in status) == 8
    with pytest.raises(VolumeError, match=f"fingerprint {two}; this config's is {one}"):
        create_output(plan_of(first))
    with pytest.raises(VolumeError, match=f"fingerprint {two}; this config's is {one}"):
        prepare(first).reconcile()
    assert read_back(str(store))[0].tobytes() == replaced.tobytes()


def test_changed_settings_of_one_run_set_aside_what_the_output_no_longer_holds(small_config):
    """One state dir, settings A, then B (the store is its own: B takes it over, as Snakemake's
    rerun of a changed setting does), then A again: A's old markers describe blocks B has
    overwritten, so they are set aside before Snakemake looks, and every block is computed."""
    first = run_all_blocks(small_config)
    other = config_with(small_config, **OTHER_OVERLAP)
    assert prepare(other).reconcile() == []  # nothing of B's to set aside yet
    run_all_blocks(other)
    state, one = small_config["state_dir"], plan_of(small_config).fingerprint
    assert len(list(Path(state, "blocks", one).glob("*.json"))) == 8

    warnings = prepare(small_config).reconcile()
    assert len(warnings) == 1 and "set aside its 8 earlier done-marker(s)" in warnings[0]
    assert (
        not Path(state, "blocks", one).exists()
        and not RunState(Path(state), one).output_record().exists()
    )
    aside = [p for p in Path(state, "blocks").iterdir() if p.name.startswith(f"{one}.superseded-")]
    assert len(aside) == 1 and len(list(aside[0].glob("*.json"))) == 8
    status = chunkflow(small_config, "status")[0].splitlines()
    assert status[0] == "0/8 blocks done"
    assert sum(line.startswith("  stale ") for line in status) == 8

    again = run_all_blocks(small_config)
    assert again.tobytes() == first.tobytes()
    assert chunkflow(small_config, "status")[0].splitlines()[0] == "8/8 blocks done"


# ---------------------------------------------------------------------------------------------
# fault 3: done-markers that are not whole markers


def break_markers(state_dir: str, fingerprint: str) -> dict[str, bytes]:
    """Damage five markers in five ways; return their new bytes by block id."""

    def path(block_id: str) -> Path:
        return RunState(Path(state_dir), fingerprint).marker(block_id)

    text = path("z0_y0_x0").read_text()
    wrong_type = json.loads(path("z1_y0_x0").read_text()) | {"patches": "many"}
    broken = {
        "z0_y0_x0": text[: len(text) // 2],  # cut short
        "z0_y0_x1": "[1, 2, 3]",  # not an object
        "z0_y1_x0": '{"garbage": true}',  # not a marker
        "z0_y1_x1": path("z1_y1_x1").read_text(),  # another block's marker
        "z1_y0_x0": json.dumps(wrong_type),  # a field of the wrong type
    }
    for block_id, content in broken.items():
        path(block_id).write_text(content)
    return {b: c.encode() for b, c in broken.items()}


def test_broken_markers_count_as_missing_with_one_warning(small_config):
    written = run_all_blocks(small_config)
    state, fp = small_config["state_dir"], plan_of(small_config).fingerprint
    broken = break_markers(state, fp)

    out, err = chunkflow(small_config, "status")
    lines = out.splitlines()
    assert lines[:2] == ["3/8 blocks done", "  running 0, failed 0, missing 5"]
    assert [x for x in lines if x.startswith("  missing")] == [f"  missing {b}" for b in broken]
    (warning,) = err.splitlines()
    assert "WARNING: 5 done-marker(s) do not count" in warning
    assert "z0_y0_x0.json' cannot be read" in warning
    out, err = chunkflow(small_config, "summary", "--json", str(Path(state).parent / "s.json"))
    assert json.loads(Path(state).parent.joinpath("s.json").read_text())["blocks_done"] == 3
    assert len(err.splitlines()) == 1 and "5 done-marker(s) do not count" in err

    warnings = prepare(small_config).reconcile()  # what the Snakefile does before the DAG
    assert len(warnings) == 1 and warnings[0].startswith("set aside 5 done-marker(s)")
    folder = RunState(Path(state), fp).marker_dir()
    for block_id, content in broken.items():
        assert not (folder / f"{block_id}.json").exists()
        assert (folder / f"{block_id}.json.invalid").read_bytes() == content
    out, err = chunkflow(small_config, "status")
    assert out.splitlines()[0] == "3/8 blocks done" and err == ""

    run_blocks(make_plan(config_mod.parse(small_config)), list(broken))
    assert read_back(small_config["output"]["path"])[0].tobytes() == written.tobytes()
    assert chunkflow(small_config, "status")[0].splitlines()[0] == "8/8 blocks done"


def test_status_lists_each_marker_folder_once(small_config, monkeypatch):
    """`chunkflow status` stays cheap at many blocks: each folder is listed once, and only the
    current fingerprint's markers are read."""
    run_all_blocks(small_config)
    run_all_blocks(config_with(small_config, **OTHER_OVERLAP))  # a second fingerprint folder
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(Path(path).name) or real(path))
    from chunkflow.state.markers import ANY_STORE, read_markers

    plan = plan_of(small_config)  # the second run took the store over: any store's markers
    census = read_markers(RunState.of(plan), plan.block_ids, ANY_STORE)
    done, stale, missing = census.done, census.stale, census.missing
    assert (len(done), stale, missing) == (8, [], [])
    other = plan_of(config_with(small_config, **OTHER_OVERLAP)).fingerprint
    assert sorted(listed) == sorted(["blocks", plan.fingerprint, other])


# ---------------------------------------------------------------------------------------------
# real Snakemake runs (BASE_CONFIG of test_workflow.py: 4 blocks)


@pytest.mark.workflow
def test_two_run_dirs_on_one_output(finished, tmp_path, run_env, elsewhere):
    """Fault 1 in the workflow: a second run directory with another overlap and the first's
    output is refused before any job; with output.replace it recomputes every block, and the
    first run then is refused instead of reporting the mix as done."""
    first = copy_run(finished[0], tmp_path / "first")
    store = first / BASE_CONFIG["output"]["path"]
    changes = {"output.path": str(store), "inference.overlap": [1, 2, 6]}
    second = make_run_dir(tmp_path / "second", config_with(BASE_CONFIG, **changes))
    one, two = fingerprint(first), fingerprint(second)
    before = snapshot(store)

    refused = snakemake(second, run_env, elsewhere, ok=False)
    assert refused.returncode != 0 and "Traceback" not in refused.text
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("chunkflow: error:")]
    assert f"(fingerprint {one}; this config's is {two}); set output.replace: true" in line
    assert snapshot(store) == before
    assert not (second / ".chunkflow" / "blocks").exists()
    assert not (second / ".chunkflow" / "logs").exists()  # no job ran

    write_config(second, config_with(read_config(second), **{"output.replace": True}))
    result = snakemake(second, run_env, elsewhere)
    counts = {"create_output": 1, "infer_block": N_BLOCKS, "summary": 1, "all": 1}
    assert job_counts(result.text) == counts
    assert f"{N_BLOCKS}/{N_BLOCKS} blocks" in result.stdout
    assert recorded(str(store)) == two
    assert np.array_equal(output(second)[...], reference(second, tmp_path / "ref"))

    again = snakemake(first, run_env, elsewhere, "-n", ok=False)
    assert again.returncode != 0 and "Nothing to be done" not in again.text
    assert f"(fingerprint {two}; this config's is {one})" in again.stderr
    status = subprocess.run(
        [CHUNKFLOW, "status", "-c", "config.yaml"], cwd=first, capture_output=True, text=True
    ).stdout.splitlines()
    assert status[0] == f"0/{N_BLOCKS} blocks done"


@pytest.mark.workflow
def test_lost_snakemake_records_and_a_changed_setting_rerun_every_block(
    finished,
    tmp_path,
    run_env,
    elsewhere,
):
    """Fault 2: without `.snakemake/` Snakemake cannot compare params; the fingerprint in the
    markers' path makes them missing targets all the same."""
    run_dir = copy_run(finished[0], tmp_path / "run")
    old = fingerprint(run_dir)
    shutil.rmtree(run_dir / ".snakemake")
    write_config(run_dir, config_with(read_config(run_dir), **{"inference.overlap": [1, 2, 6]}))
    new = fingerprint(run_dir)

    status = subprocess.run(
        [CHUNKFLOW, "status", "-c", "config.yaml"], cwd=run_dir, capture_output=True, text=True
    ).stdout.splitlines()
    assert status[0] == f"0/{N_BLOCKS} blocks done"
    assert sum(line.startswith("  stale (settings changed) ") for line in status) == N_BLOCKS

    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    counts = {"create_output": 1, "infer_block": N_BLOCKS, "summary": 1, "all": 1}
    assert job_counts(dry.text) == counts
    assert all("Missing output files" in r for r in reasons(dry.text, "infer_block"))
    assert job_counts(snakemake(run_dir, run_env, elsewhere).text) == counts
    assert {m["fingerprint"] for m in markers(run_dir).values()} == {new}
    assert len(list((marker_dir(run_dir).parent / old).glob("*.json"))) == N_BLOCKS
    assert recorded(str(run_dir / BASE_CONFIG["output"]["path"])) == new
    assert np.array_equal(output(run_dir)[...], reference(run_dir, tmp_path / "ref"))


@pytest.mark.workflow
def test_broken_markers_are_set_aside_and_their_blocks_rerun(
    finished,
    tmp_path,
    run_env,
    elsewhere,
):
    """Fault 3 in the workflow: the main snakemake sets the broken markers aside (a job's
    re-parse, `--mode remote`, does not) and reruns exactly their blocks."""
    run_dir = copy_run(finished[0], tmp_path / "run")
    expected = output(run_dir)[...]
    folder = marker_dir(run_dir)
    whole = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    broken = {
        "z0_y0_x0": '{"block": "z0_y0_x0", "box": {"sta',  # cut short
        "z0_y1_x0": "[]",
        "z1_y0_x0": '{"garbage": true}',
    }
    for block_id, content in broken.items():
        (folder / f"{block_id}.json").write_text(content)

    remote = snakemake(run_dir, run_env, elsewhere, "-n", "--mode", "remote", ok=False)
    assert "Traceback" not in remote.text
    assert all((folder / f"{b}.json").read_text() == c for b, c in broken.items())

    result = snakemake(run_dir, run_env, elsewhere)
    assert job_counts(result.text) == {"infer_block": 3, "summary": 1, "all": 1}
    (warning,) = [x for x in result.stderr.splitlines() if x.startswith("chunkflow: warning:")]
    assert "set aside 3 done-marker(s) that do not count as *.invalid" in warning
    for block_id, content in broken.items():
        assert (folder / f"{block_id}.json.invalid").read_text() == content
    assert set(markers(run_dir)) == {p.removesuffix(".json") for p in whole}
    kept = {n: (folder / n).stat().st_mtime_ns for n in whole if n[:-5] not in broken}
    assert kept == {n: t for n, t in whole.items() if n[:-5] not in broken}
    assert np.array_equal(output(run_dir)[...], expected)
    assert job_counts(snakemake(run_dir, run_env, elsewhere, "-n").text) == {}


GATED_MODEL = """\
import os
import time
from pathlib import Path

from torch import nn

HERE = Path(__file__).parent


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Tanh(), nn.Conv3d(4, 2, 1), nn.Sigmoid())

    def forward(self, x):
        if bool(x.abs().sum() > 0):
            try:
                os.close(os.open(HERE / "gate.started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:  # the first pass on real data waits until the test releases it
                deadline = time.time() + 150
                while not (HERE / "gate.release").exists() and time.time() < deadline:
                    time.sleep(0.1)
        return self.body(x)


def build_model():
    return Net()
"""


@pytest.mark.workflow
def test_a_snakemake_refused_by_the_lock_changes_nothing_the_running_one_reads(
    tmp_path,
    run_env,
    elsewhere,
):
    """Fault 4: while a run's first block job waits, a second snakemake in the same directory
    with another overlap is refused by Snakemake's lock; the running one's later jobs still
    read their own config (named by its content) and finish with their settings. Then a
    changed batch_size (a new stored config, a Path param) reruns nothing."""
    import torch

    run_dir = make_run_dir(tmp_path / "run")
    (run_dir / "gated.py").write_text(GATED_MODEL)
    sys.path.insert(0, str(run_dir))
    try:
        import gated
    finally:
        sys.path.remove(str(run_dir))
    torch.manual_seed(0)
    torch.save(gated.build_model().state_dict(), run_dir / "gated.pt")
    gated_model = {"model.path": "gated.py", "model.weights": "gated.pt"}
    config = config_with(BASE_CONFIG, **gated_model)
    write_config(run_dir, config)
    configs = run_dir / ".chunkflow" / "configs"
    log_path = tmp_path / "first.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(
            [*snakemake_cmd(run_dir), "--cores", "1"],
            cwd=elsewhere,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for((run_dir / "gate.started").exists, 120, first, "the first block job")
            stored = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in configs.iterdir()}
            assert len(stored) == 1
            write_config(run_dir, config_with(config, **{"inference.overlap": [1, 2, 6]}))
            second = snakemake(run_dir, run_env, elsewhere, ok=False)
            assert second.returncode != 0
            assert "LockException" in second.text or "cannot be locked" in second.text
            for name, (content, stamp) in stored.items():
                assert (configs / name).read_bytes() == content
                assert (configs / name).stat().st_mtime_ns == stamp
            (run_dir / "gate.release").touch()
            assert first.wait(timeout=180) == 0, log_path.read_text()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    write_config(run_dir, config)
    done_now = markers(run_dir)
    assert len(done_now) == N_BLOCKS
    assert {m["fingerprint"] for m in done_now.values()} == {fingerprint(run_dir)}
    assert np.array_equal(output(run_dir)[...], reference(run_dir, tmp_path / "ref"))

    write_config(run_dir, config_with(config, **{"inference.batch_size": 1}))
    dry = snakemake(run_dir, run_env, elsewhere, "-n")
    assert job_counts(dry.text) == {} and "Nothing to be done" in dry.text
    assert len(list(configs.iterdir())) == 3  # each config stored once, by its content
