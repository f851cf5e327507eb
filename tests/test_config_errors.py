"""User mistakes, through the real `chunkflow` command: one line on stderr, no traceback, no writes.

Every case writes its config as a YAML file, runs the CLI as a subprocess and checks that stderr is
exactly one line starting with ``chunkflow: error:`` that holds the expected fragments, that the
exit code is not 0, and that neither the case's output store nor its state directory was created
(or, for an existing store, that not one of its bytes changed).

The cases of one test run concurrently (each in its own directory, with its own output path and
state dir) and all failures are reported together: a subprocess costs ~0.3 s, ~2 s with torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from helpers import ConstantNet, config_with, save_torchscript

from chunkflow import config as config_mod
from chunkflow.errors import VolumeError
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.volumes import open_volume

_SCRIPT = Path(sys.executable).with_name("chunkflow")
CHUNKFLOW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkflow"]
ERROR = "chunkflow: error: "


@dataclass
class Case:
    """One CLI call that must fail: ``changes`` are applied to the base config (dotted keys)."""

    name: str
    fragments: tuple[str, ...]
    changes: dict[str, Any] = field(default_factory=dict)
    command: tuple[str, ...] = ("plan",)
    config_text: str | bytes | None = None  # the config file's exact content, instead of a config
    config_arg: str | None = None  # a --config path, instead of writing one
    absent: tuple[str, ...] = ()  # fragments that must not appear


@dataclass
class Outcome:
    case: Case
    config: dict[str, Any]
    result: subprocess.CompletedProcess


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CHUNKFLOW, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cases(tmp_path: Path, base: dict[str, Any], cases: list[Case]) -> list[Outcome]:
    """Run every case concurrently, each in ``tmp_path/<name>`` with its own output and state."""

    def one(case: Case) -> Outcome:
        home = tmp_path / case.name
        home.mkdir(exist_ok=True)  # a test may have put an existing store there
        own = {"output.path": str(home / "out.zarr"), "state_dir": str(home / "state")}
        config = config_with(base, **{**own, **case.changes})
        if case.config_arg is not None:
            config_arg = case.config_arg
        elif case.config_text is not None:
            config_arg = str(home / "cfg.yaml")
            text = case.config_text
            content = text.encode() if isinstance(text, str) else text
            Path(config_arg).write_bytes(content)
        else:
            config_arg = str(write_config(home / "cfg.yaml", config))
        command, *rest = case.command
        result = run_cli(home, command, "--config", config_arg, *rest)
        return Outcome(case, config_with(base, **own), result)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(one, cases))


def one_line_error(result: subprocess.CompletedProcess, fragments, absent=()) -> list[str]:
    """Problems with ``result``: it must fail with one ``chunkflow: error:`` line of fragments."""
    problems = []
    if result.returncode == 0:
        problems.append(f"exit code 0, stdout {result.stdout!r}")
    if "Traceback" in result.stderr:
        problems.append("a traceback: " + result.stderr[-400:])
    lines = result.stderr.splitlines()
    if len(lines) != 1 or not lines[0].startswith(ERROR):
        problems.append(f"stderr is not one '{ERROR}' line: {result.stderr[-400:]!r}")
        return problems
    # the path of the case's directory holds its name: look only at what follows the prefix
    message = lines[0].removeprefix(ERROR)
    problems += [f"{f!r} missing from {message!r}" for f in fragments if f not in message]
    problems += [f"{f!r} should not be in {message!r}" for f in absent if f in message]
    return problems


def check_failures(outcomes: list[Outcome], written_ok: bool = False) -> None:
    """Every outcome failed with the right line; nothing was written (unless ``written_ok``)."""
    problems = []
    for outcome in outcomes:
        found = one_line_error(outcome.result, outcome.case.fragments, outcome.case.absent)
        if not written_ok:
            for path in (outcome.config["output"]["path"], outcome.config["state_dir"]):
                if Path(path).exists():
                    found.append(f"{path} was written")
        problems += [f"[{outcome.case.name}] {p}" for p in found]
    assert not problems, "\n".join(problems)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself) with its bytes."""
    if root.is_file():
        return {".": root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def create_store(config: dict[str, Any]) -> None:
    """Create the output store of ``config`` in-process (torch is already loaded here)."""
    create_output(make_plan(config_mod.parse(config)))


def get(config: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


# ---------------------------------------------------------------------------------------------
# the fixture's config is fine: every error case below differs from it in one thing


def test_small_config_plans_and_writes_nothing(tmp_path, small_config):
    path = write_config(tmp_path / "cfg.yaml", small_config)
    result = run_cli(tmp_path, "plan", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "blocks  8 = 2 x 2 x 2" in result.stdout
    assert not Path(small_config["output"]["path"]).exists()
    assert not Path(small_config["state_dir"]).exists()


# ---------------------------------------------------------------------------------------------
# the config file itself


def test_missing_or_unreadable_config_file(tmp_path, small_config):
    cases = [
        Case(
            "missing",
            ("/nope.yaml' not found", "pass an existing YAML file"),
            config_arg="nope.yaml",
        ),
        Case(
            "unclosed",
            ("not valid YAML at line 2", "fix its syntax"),
            config_text="input: [unclosed\nmodel: 3\n",
        ),
        Case(
            "indentation",
            ("not valid YAML at line 3",),
            config_text="input:\n  path: a\n path: b\n",
        ),
        Case("a-list", ("must hold a mapping", "list"), config_text="- input\n- output\n"),
        Case(
            "duplicate-key",
            ("key 'block_size' appears twice (lines 2 and 4)", "keep one of them"),
            config_text="input: {path: raw.zarr}\nblock_size: [8, 8, 8]\nstate_dir: s\nblock_size: [4, 4, 4]\n",
        ),
        Case(
            "duplicate-nested-key",
            ("key 'path' appears twice (lines 2 and 3)",),
            config_text="model:\n  path: a.pt\n  path: b.pt\n",
        ),
        Case("not-utf8", ("cannot be read", "utf-8"), config_text=b"input: \xff\xfe\n"),
        Case("a-directory", ("is a directory", "pass the YAML file itself"), config_arg="."),
        Case("empty", ("is empty",), config_text=""),
        Case("comment-only", ("is empty",), config_text="# nothing yet\n"),
        Case("empty-run-block", ("is empty",), config_text="", command=("run-block", "z0_y0_x0")),
    ]
    check_failures(run_cases(tmp_path, small_config, cases))
    # without --config, `chunkflow` reads config.yaml or config/config.yaml of the run directory
    bare = subprocess.run([*CHUNKFLOW, "plan"], cwd=tmp_path, capture_output=True, text=True)
    expected = ("no config.yaml or config/config.yaml in run directory '.'", "--config FILE")
    assert not one_line_error(bare, expected)


def test_a_path_that_cannot_be_written(tmp_path, small_config):
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path / "cfg.yaml", small_config)
    result = run_cli(tmp_path, "summary", "--config", str(config), "--json", "a-file/s.json")
    assert not one_line_error(result, ("Not a directory", "a-file/s.json", "check the path"))


# ---------------------------------------------------------------------------------------------
# schema: unknown, missing and mistyped keys


def test_unknown_keys_name_the_key_and_suggest_the_right_one(tmp_path, small_config):
    def renamed(old: str, new: str) -> dict[str, Any]:
        return {old: None, new: get(small_config, old)}

    cases = [
        # the typo also leaves a required key missing: the message must be about the typo
        Case(
            "top",
            ("unknown config key 'blocksize'", "did you mean 'block_size'?"),
            renamed("block_size", "blocksize"),
            absent=("is missing",),
        ),
        Case(
            "model",
            ("'input_patch_sise'", "did you mean 'input_patch_size'?", "in 'model'"),
            renamed("model.input_patch_size", "model.input_patch_sise"),
            absent=("is missing",),
        ),
        Case(
            "output",
            ("'chunks_size'", "did you mean 'chunk_size'?", "in 'output'"),
            renamed("output.chunk_size", "output.chunks_size"),
            absent=("is missing",),
        ),
        Case(
            "inference",
            ("'overlapp'", "did you mean 'overlap'?", "in 'inference'"),
            renamed("inference.overlap", "inference.overlapp"),
        ),
        Case("roi", ("'ofset'", "did you mean 'offset'?", "in 'roi'"), {"roi.ofset": [0, 0, 0]}),
        Case(
            "no-close-match",
            (
                "unknown config key 'frobnicate' in 'inference'",
                "valid keys: batch_size, blend, crop_margin, device, non_finite, overlap",
            ),
            {"inference.frobnicate": True},
            absent=("did you mean",),
        ),
        Case(
            "two-typos",
            ("'bachsize' (did you mean 'batch_size'?)", "'treads' (did you mean 'threads'?)"),
            {"inference.bachsize": 2, "inference.treads": 2},
        ),
    ]
    check_failures(run_cases(tmp_path, small_config, cases))


def test_missing_required_keys(tmp_path, small_config):
    keys = ["block_size", "model", "input.path", "output.chunk_size", "model.input_patch_size"]
    cases = [Case(key, (f"config key '{key}' is missing", "add it"), {key: None}) for key in keys]
    check_failures(run_cases(tmp_path, small_config, cases))


def test_wrong_types_and_values(tmp_path, small_config):
    table = [
        ("block_size", "12", ("'block_size' must be a list of 3 integers", "got '12'")),
        ("block_size", 12, ("'block_size' must be a list of 3 integers", "got 12")),
        ("block_size", [12, 24], ("'block_size' must be a list of 3 integers", "got [12, 24]")),
        ("block_size", [12, 24, 32, 8], ("'block_size' must be a list of 3 integers",)),
        ("block_size", [-12, 24, 32], ("'block_size'", "integers ≥ 1", "entry 0 is -12")),
        ("block_size", [12, 0, 32], ("'block_size'", "integers ≥ 1", "entry 1 is 0")),
        ("block_size", [12, 24, "32"], ("'block_size'", "entry 2 is '32'")),
        ("block_size", [12, 24, 32.5], ("'block_size'", "entry 2 is 32.5")),
        ("inference.overlap", [2, -1, 6], ("'inference.overlap'", "≥ 0", "entry 1 is -1")),
        ("inference.batch_size", "4", ("'inference.batch_size' must be of type integer", "'4'")),
        ("inference.batch_size", True, ("'inference.batch_size' must be of type integer",)),
        ("inference.threads", 0, ("'inference.threads' must be ≥ 1, got 0",)),
        (
            "output.dtype",
            "int7",
            ("'output.dtype' is 'int7'", "use one of: float32, float16, uint8"),
        ),
        ("output.zarr_format", "3", ("'output.zarr_format' is '3'", "use one of: 2, 3")),
        ("input.path", 17, ("'input.path' must be of type string, got 17",)),
        ("model", "net.pt", ("'model' must be of type object",)),
    ]
    cases = [
        Case(f"{i}-{key}", fragments, {key: value})
        for i, (key, value, fragments) in enumerate(table)
    ]
    check_failures(run_cases(tmp_path, small_config, cases))


# ---------------------------------------------------------------------------------------------
# geometry that cannot work


def test_impossible_geometry(tmp_path, small_config):
    # the fixture: volume 20 x 48 x 56, chunks [4, 8, 8], patches [8, 18, 20] -> [6, 16, 18]
    patches = "model.input_patch_size", "model.output_patch_size"
    cases = [
        # block_size: 10 lies between 8 and 12 (z), 30 between 24 and 32 (x); 24 (y) is fine
        Case(
            "block-multiple",
            (
                "block_size [10, 24, 30] is not a whole multiple of output.chunk_size [4, 8, 8] along z, x",
                "nearest valid block sizes: [8, 24, 24] or [12, 24, 32]",
            ),
            {"block_size": [10, 24, 30]},
        ),
        Case(
            "block-one-axis",
            ("along y;", "nearest valid block sizes: [12, 16, 32] or [12, 24, 32]"),
            {"block_size": [12, 20, 32]},
        ),
        Case(
            "block-below-chunk",
            ("along z;", "nearest valid block sizes: [4, 24, 32]"),
            {"block_size": [2, 24, 32]},
            absent=(" or ",),
        ),
        # the output patch must fit in the ROI: padding gives context, not predictions
        Case(
            "patch-vs-roi-z",
            ("output_patch_size is 6 along z but the ROI is only 4 voxels", "padding"),
            {"roi.size": [4, 48, 56]},
        ),
        Case(
            "patch-vs-roi-y",
            ("output_patch_size is 16 along y but the ROI is only 8 voxels",),
            {"roi.offset": [0, 40, 0], "roi.size": [20, 8, 56]},
        ),
        Case(
            "overlap-equal-z",
            ("inference.overlap [6, 4, 6] must be smaller than model.output_patch_size", "along z"),
            {"inference.overlap": [6, 4, 6]},
        ),
        Case(
            "overlap-larger-x",
            ("inference.overlap", "along x", "use e.g. [1, 4, 4]"),
            {"inference.overlap": [2, 4, 19]},
        ),
        Case(
            "odd-difference-z",
            ("odd along z (8 - 5)", "make the difference even"),
            {patches[1]: [5, 16, 18]},
        ),
        Case("odd-difference-x", ("odd along x (21 - 18)",), {patches[0]: [8, 18, 21]}),
        Case(
            "output-larger-than-input",
            ("larger than model.input_patch_size", "along y"),
            {patches[1]: [6, 20, 18]},
        ),
        Case(
            "roi-offset-beyond",
            ("roi.offset [30, 0, 0] lies outside the input bounds",),
            {"roi": {"offset": [30, 0, 0]}},
        ),
        Case(
            "roi-past-the-end",
            ("reaches outside the input volume", "shrink roi.size or move roi.offset"),
            {"roi": {"offset": [0, 0, 50], "size": [8, 24, 32]}},
        ),
        Case(
            "roi-before-the-start",
            ("the ROI [(-4, 0, 0), (8, 24, 32)) reaches outside",),
            {"roi": {"offset": [-4, 0, 0], "size": [12, 24, 32]}},
        ),
        Case(
            "roi-too-large-run-block",
            ("the ROI [(0, 0, 0), (20, 48, 64)) reaches outside",),
            {"roi": {"size": [20, 48, 64]}},
            command=("run-block", "z0_y0_x0"),
        ),
    ]
    check_failures(run_cases(tmp_path, small_config, cases))


def test_a_one_voxel_output_patch_is_fine(tmp_path, small_config):
    """The default overlap (a quarter of the patch) of a 1-voxel patch is 0: a valid config."""
    config = config_with(
        small_config,
        **{
            "inference.overlap": None,
            "model.input_patch_size": [3, 18, 20],
            "model.output_patch_size": [1, 16, 18],
        },
    )
    result = run_cli(tmp_path, "plan", "--config", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# files named in the config


def test_missing_or_unusable_files(tmp_path, small_config):
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "weights.pt").write_bytes(b"not used")
    (tmp_path / "net.py").write_text("def build_model():\n    raise AssertionError\n")
    model = str(tmp_path / "nets" / "net.pt")
    missing = str(tmp_path / "missing.zarr")
    weights = str(tmp_path / "weights.pt")
    cases = [
        Case(
            f"input-{name.replace('/', '-')}",
            (f"input.path: volume '{tmp_path / name}' does not exist", "check the path"),
            {"input.path": str(tmp_path / name)},
        )
        for name in ("missing.zarr", "missing", "nowhere/raw.zarr")
    ]
    # every command checks the files before it does anything
    cases += [
        Case(
            "input-run-block",
            (f"input.path: volume '{missing}' does not exist",),
            {"input.path": missing},
            command=("run-block", "z0_y0_x0"),
        ),
        Case(
            "model-plan",
            (f"model.path '{model}' not found", "point it at your model file"),
            {"model.path": model},
        ),
        Case(
            "model-create-output",
            (f"model.path '{model}' not found",),
            {"model.path": model},
            command=("create-output",),
        ),
        Case(
            "weights-with-torchscript",
            ("model.weights is only used with a .py model", "remove model.weights"),
            {"model.weights": weights},
        ),
        Case(
            "weights-with-torchscript-run-block",
            ("model.weights is only used with a .py model",),
            {"model.weights": weights},
            command=("run-block", "z0_y0_x0"),
        ),
    ]
    cases += [
        Case(
            "input-not-an-array",
            ("input.path", "empty.zarr' is not a readable zarr store"),
            {"input.path": str(tmp_path / "empty.zarr")},
        ),
        Case(
            "input-not-zarr",
            ("input.path: cannot tell the format", "*.zarr"),
            {"input.path": str(tmp_path)},
        ),
        Case(
            "python-model-without-weights",
            ("is a Python file: set model.weights too",),
            {"model.path": str(tmp_path / "net.py")},
        ),
        Case(
            "weights-missing",
            ("model.weights", "w.pt' not found"),
            {"model.path": str(tmp_path / "net.py"), "model.weights": str(tmp_path / "w.pt")},
        ),
    ]
    check_failures(run_cases(tmp_path, small_config, cases))


# ---------------------------------------------------------------------------------------------
# the existing output store: refused when it differs, and then left exactly as it was
# (each mismatching field, the zarr format and the channel count: test_volumes.py, in-process)


def test_existing_output_that_differs_is_refused_and_left_untouched(tmp_path, small_config):
    # the store each case finds was made by an earlier config that differed in one thing
    earlier = {
        "dtype": ({"output.dtype": "uint8"}, ("dtype uint8 (expected float32)",)),
        "shape": ({"roi.size": [20, 48, 48]}, ("shape [20, 48, 48] (expected [20, 48, 56])",)),
    }
    cases = []
    for name, (changes, fragments) in earlier.items():
        output = tmp_path / name / "out.zarr"
        create_store(config_with(small_config, **changes, **{"output.path": str(output)}))
        cases.append(
            Case(
                name,
                (
                    f"output '{output}' exists with different",
                    *fragments,
                    "delete it or choose another output.path",
                ),
                command=("create-output",),
            )
        )
    # a directory that is no zarr array
    (tmp_path / "empty-dir" / "out.zarr").mkdir(parents=True)
    (tmp_path / "empty-dir" / "out.zarr" / "notes.txt").write_text("mine")
    cases.append(
        Case("empty-dir", ("out.zarr' is not a readable zarr store",), command=("create-output",))
    )
    before = {case.name: snapshot(tmp_path / case.name / "out.zarr") for case in cases}
    assert all(before.values())

    check_failures(run_cases(tmp_path, small_config, cases), written_ok=True)
    for name, files in before.items():
        assert snapshot(tmp_path / name / "out.zarr") == files, f"[{name}] the store changed"
        assert not (tmp_path / name / "state").exists(), f"[{name}] the state dir was written"


def test_existing_matching_output_is_reused_untouched(tmp_path, small_config):
    create_store(small_config)
    output = Path(small_config["output"]["path"])
    before = snapshot(output)
    path = write_config(tmp_path / "cfg.yaml", small_config)
    result = run_cli(tmp_path, "create-output", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"reusing matching output {output}" in result.stdout
    assert snapshot(output) == before


# ---------------------------------------------------------------------------------------------
# run-block: unknown blocks, and a model that does not give what the config and store say


def test_unknown_block_ids_are_refused_before_any_block_runs(tmp_path, small_config):
    table = {
        "past-the-grid": ("z2_y0_x0", ("block index (2, 0, 0) outside the grid (2, 2, 2)",)),
        "not-an-id": ("block7", ("'block7' is not a block id (expected z<i>_y<j>_x<k>)",)),
        "two-axes": ("z0_y0", ("'z0_y0' is not a block id",)),
        "leading-zero": ("z01_y0_x0", ("'z01_y0_x0' is not a block id",)),
        "negative": ("z-1_y0_x0", ("'z-1_y0_x0' is not a block id",)),
    }
    create_store(small_config)
    output = Path(small_config["output"]["path"])
    before = snapshot(output)
    cases = [  # after a valid id, which must not run either
        Case(
            name,
            (*fragments, "`chunkflow plan --blocks` lists the blocks"),
            {"output.path": str(output)},
            command=("run-block", "z0_y0_x0", block_id),
        )
        for name, (block_id, fragments) in table.items()
    ]
    outcomes = run_cases(tmp_path, small_config, cases)
    check_failures(outcomes, written_ok=True)
    for outcome in outcomes:
        assert not Path(outcome.config["state_dir"]).exists(), f"[{outcome.case.name}] a marker"
    assert snapshot(output) == before


def test_models_that_do_not_fit_the_config_or_the_store(tmp_path, small_config):
    def constant(name: str, channels: int, crop: tuple[int, int, int]) -> str:
        return save_torchscript(ConstantNet(0.5, channels=channels, crop=crop), tmp_path / name)

    over_crop = constant("over-crop.pt", 2, (2, 2, 2))  # output 4 x 14 x 16, not 6 x 16 x 18
    three = constant("three.pt", 3, (1, 1, 1))  # the right shape, 3 channels
    expected = "expected (batch, channels, 6, 16, 18)"
    run_block = ("run-block", "z0_y0_x0")
    create_store(small_config)  # made with the right model; the cases swap the model file
    output = Path(small_config["output"]["path"])
    before = snapshot(output)

    def store_for(name: str, changes: dict[str, Any]) -> Path:
        """A copy of the store in the case's home that records the case's fingerprint (a store
        of other results is refused before the model is loaded)."""
        copy = tmp_path / name / "out.zarr"
        shutil.copytree(output, copy)
        config = config_with(small_config, **changes, **{"output.path": str(copy)})
        fingerprint = make_plan(config_mod.parse(config)).fingerprint
        open_volume(str(copy), mode="r+").record_fingerprint(fingerprint, "a" * 32)
        return copy

    # cpu, not auto: auto on a CPU-only machine logs a warning line first
    run_shape = {"model.path": over_crop, "inference.device": "cpu"}
    run_three = {"model.path": three, "inference.device": "cpu"}
    copies = [store_for("run-shape", run_shape), store_for("run-channels", run_three)]
    copied = [snapshot(copy) for copy in copies]
    cases = [
        # create-output probes the model with one patch
        Case(
            "create-shape",
            ("the model returned shape [1, 2, 4, 14, 16]", expected, "model.output_patch_size"),
            {"model.path": over_crop},
            command=("create-output",),
        ),
        Case(
            "create-channels",
            ("returned 2 channels but 3 are expected", "model.output_channels"),
            {"model.output_channels": 3},
            command=("create-output",),
        ),
        Case("run-without-store", ("does not exist", "chunkflow create-output"), command=run_block),
        # run-block on the existing store
        Case(
            "run-shape",
            ("the model returned shape [3, 2, 4, 14, 16]", expected),
            run_shape,
            command=run_block,
        ),
        Case("run-channels", ("returned 3 channels",), run_three, command=run_block),
    ]
    outcomes = run_cases(tmp_path, small_config, cases)
    check_failures(outcomes[:3])
    check_failures(outcomes[3:], written_ok=True)
    for outcome in outcomes[3:]:  # (a job's record of its pid comes and goes: jobs/)
        state = Path(outcome.config["state_dir"])
        assert not list(state.glob("blocks/*/*.json")), "a done-marker was written"
        assert not list(state.glob("jobs/*")), "a job that ended left its record"
    assert snapshot(output) == before
    assert [snapshot(copy) for copy in copies] == copied


def test_plan_checks_an_existing_output_without_the_model(tmp_path, small_config):
    """RunPlan.existing_output: what create-output checks before loading the model (and
    what a block job should check before writing into the store)."""
    plan = make_plan(config_mod.parse(small_config))
    assert plan.existing_output() is None  # no store yet: nothing to check
    create_store(small_config)
    output = Path(small_config["output"]["path"])
    before = snapshot(output)
    assert plan.existing_output().path == small_config["output"]["path"]  # the matching store
    mismatches = {
        "output.dtype": ("uint8", "dtype float32 (expected uint8)"),
        "output.chunk_size": ([4, 8, 16], "chunk_size [4, 8, 8] (expected [4, 8, 16])"),
        "roi.size": ([20, 48, 48], "shape [20, 48, 56] (expected [20, 48, 48])"),
        "model.output_channels": (3, "channels 2 (expected 3)"),
        "output.zarr_format": (2, "zarr format 3 (expected 2)"),
    }
    for key, (value, fragment) in mismatches.items():
        other = make_plan(config_mod.parse(config_with(small_config, **{key: value})))
        with pytest.raises(VolumeError) as err:
            other.existing_output()
        assert fragment in str(err.value), key
    assert snapshot(output) == before


def test_block_job_refuses_a_store_laid_out_for_other_settings(small_config):
    from run_helpers import run_all_blocks

    from chunkflow.job.block_job import run_blocks
    from chunkflow.state.run_state import RunState

    before = run_all_blocks(small_config)
    fingerprint = make_plan(config_mod.parse(small_config)).fingerprint
    marker = RunState(Path(small_config["state_dir"]), fingerprint).marker("z0_y0_x0")
    stamp = marker.stat().st_mtime_ns
    changed = config_mod.parse(config_with(small_config, **{"output.dtype": "uint8"}))
    with pytest.raises(VolumeError, match=r"dtype float32 \(expected uint8\)"):
        run_blocks(make_plan(changed), ["z0_y0_x0"])
    assert marker.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(zarr.open_array(small_config["output"]["path"])[...], before)


def test_crop_margin_needs_crop_placement(small_config):
    from chunkflow.errors import ConfigError

    with pytest.raises(
        ConfigError, match="crop_margin is only used with inference.placement: crop"
    ):
        config_mod.parse(config_with(small_config, **{"inference.crop_margin": [1, 2, 2]}))
    crop = {"inference.crop_margin": [1, 2, 2], "inference.placement": "crop"}
    assert config_mod.parse(config_with(small_config, **crop)).inference.crop_margin == (1, 2, 2)
