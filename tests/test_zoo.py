"""bioimage.io model packages as ``model.path``: built offline with bioimageio.spec, run block-wise
by chunkflow and compared with bioimageio.core's prediction of the whole volume in memory.

How the two are made comparable: the test network (``zoo_arch.TinyNet``) sees one voxel of
context and every package declares a halo of 2, so each of our patches computes exact values
and the tiling cannot change them; core pads the whole volume by the halo in the package's
padding mode (symmetric), as chunkflow pads at the volume's edges; and core is given the
volume's statistics (``fixed_dataset_statistics``), which chunkflow measures over the whole
volume (it is small) — core would otherwise measure them over the volume padded by the halo,
or, for a 2D package, slice by slice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import smooth_volume, write_volume
from zoo_packages import core_predict, make_package

import chunkflow
from chunkflow.config import parse
from chunkflow.errors import ConfigError
from chunkflow.plan.run_plan import make_plan

ZMUV = {"id": "zero_mean_unit_variance", "kwargs": {}}
SIGMOID = {"id": "sigmoid"}

# (name, ndim, weights, zipped, preprocessing, postprocessing): every weights format in 2D and
# 3D, a folder and a zip, and each processing step at least once
CASES = [
    ("3d-torchscript", 3, "torchscript", False, [ZMUV], [SIGMOID]),
    (
        "3d-state-dict-zip",
        3,
        "pytorch_state_dict",
        True,
        [{"id": "scale_range", "kwargs": {"min_percentile": 1, "max_percentile": 99.5}}],
        [{"id": "binarize", "kwargs": {"threshold": 0.5}}],
    ),
    (
        "3d-onnx",
        3,
        "onnx",
        False,
        [
            {"id": "scale_linear", "kwargs": {"gain": 0.01, "offset": -1.0}},
            {"id": "clip", "kwargs": {"min": -0.8, "max": 0.9}},
        ],
        [{"id": "softmax", "kwargs": {"axis": "channel"}}],
    ),
    (
        "2d-torchscript",
        2,
        "torchscript",
        True,
        [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 110.0, "std": 40.0}}],
        [SIGMOID],
    ),
    (
        "2d-state-dict",
        2,
        "pytorch_state_dict",
        False,
        [{"id": "clip", "kwargs": {"min_percentile": 5, "max_percentile": 95}}, ZMUV],
        [],
    ),
    (
        "2d-onnx",
        2,
        "onnx",
        False,
        [{"id": "scale_range", "kwargs": {"min_percentile": 0, "max_percentile": 100}}],
        [{"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": 0.5}}],
    ),
]
SHAPE = {3: (20, 40, 44), 2: (5, 40, 44)}
PATCH = {3: [12, 20, 16], 2: [1, 20, 24]}  # the packages take 8 + a multiple of 4 per axis


def volume_statistics(volume: np.ndarray) -> dict[str, Any]:
    """The statistics of ``volume`` in core's spelling: mean, population std, and numpy's linear
    quantiles at the percentiles the cases use."""
    values = volume.astype(np.float64).ravel()
    percentiles = [0, 1, 5, 95, 99.5, 100]
    quantiles = np.quantile(volume.astype(np.float32).ravel(), np.array(percentiles) / 100)
    return {
        "mean": values.mean(),
        "std": values.std(),
        "quantiles": dict(zip(percentiles, quantiles.tolist(), strict=True)),
    }


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    return {
        name: make_package(
            root / name,
            ndim=ndim,
            weights=weights,
            zipped=zipped,
            preprocessing=pre,
            postprocessing=post,
        )
        for name, ndim, weights, zipped, pre, post in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_blockwise_equals_bioimageio_core_and_one_block(case, packages, tmp_path):
    name, ndim, weights, _, _, _ = case
    volume = smooth_volume(SHAPE[ndim], seed=3)
    settings = {"input_patch_size": PATCH[ndim], "progress": False}
    z = SHAPE[ndim][0]
    blocks = chunkflow.predict(
        volume,
        packages[name],
        **settings,
        output={"chunk_size": [z, 8, 8]},
        block_size=[z, 16, 24],  # 3 x 2 blocks, each streamed in pieces
        piece_size=[z, 8, 8],
        run_dir=tmp_path / "blocks",
    )
    whole = chunkflow.predict(volume, packages[name], **settings)
    assert blocks.shape == whole.shape == (2, *SHAPE[ndim])
    assert np.abs(blocks - whole).max() <= 1e-6  # seam-free: blocks and pieces change nothing

    reference = core_predict(
        packages[name],
        volume,
        weights=weights,
        statistics=volume_statistics(volume),
        pad_input=True,
    )
    assert np.abs(blocks - reference).max() <= 1e-5
    assert blocks.std() > 0.01  # the comparison is not of constants


def test_measured_statistics_and_the_packages_files_are_in_the_fingerprint(packages, tmp_path):
    volume = smooth_volume((32, 130, 128), seed=4)  # the default patch's output fits
    path = write_volume(tmp_path / "raw.zarr", volume, chunks=(16, 64, 64))
    config = {
        "input": {"path": path},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [16, 64, 64]},
        "block_size": [32, 128, 128],
        "model": {"path": str(packages["3d-state-dict-zip"])},
        "state_dir": str(tmp_path / "state"),
    }
    plan = make_plan(parse(config))
    want = np.quantile(volume.astype(np.float32).ravel(), [0.01, 0.995])
    assert plan.settings.model.statistics == {
        "percentiles": {"1": pytest.approx(want[0]), "99.5": pytest.approx(want[1])}
    }
    assert plan.settings.input.padding == "symmetric"  # the package's (bioimage.io's default)
    assert plan.settings.model.weights_format == "pytorch_state_dict"
    assert plan.geometry.input_size == (32, 128, 128)  # the default patch: 8 + 4k, at least that
    assert plan.geometry.output_size == (28, 124, 124)  # less the halo of 2 per side

    given = {**config, "model": {**config["model"], "statistics": plan.settings.model.statistics}}
    assert make_plan(parse(given)).fingerprint == plan.fingerprint  # given = measured
    other = {"percentiles": {"1": 0.0, "99.5": 255.0}}
    changed = {**config, "model": {**config["model"], "statistics": other}}
    assert make_plan(parse(changed)).fingerprint != plan.fingerprint

    folder = make_package(tmp_path / "pkg", weights="onnx")  # a folder, edited in place
    config["model"] = {"path": str(folder)}
    before = make_plan(parse(config)).fingerprint
    (folder / "README.md").write_text("other documentation")
    np.save(folder / "test_input.npy", np.load(folder / "test_input.npy"))  # rewritten
    assert make_plan(parse(config)).fingerprint == before  # no file that makes results
    (folder / "weights.onnx").write_bytes((folder / "weights.onnx").read_bytes() + b" ")
    assert make_plan(parse(config)).fingerprint != before


def test_the_workflow_runs_a_package_as_predict_does(tmp_path, run_env):
    """A run directory whose config names a package: Snakemake plans it (the package's test,
    the statistics measured once: the block jobs read them from the stored config) and its
    output equals ``chunkflow.predict``'s; an edited description is other results."""
    packages = {
        "3d-torchscript": make_package(
            tmp_path / "pkg", preprocessing=[ZMUV], postprocessing=[SIGMOID]
        )
    }
    volume = smooth_volume((20, 40, 44), seed=5)
    run_dir = tmp_path / "run"
    path = write_volume(tmp_path / "raw.zarr", volume, chunks=(10, 20, 22))
    config = {
        "input": {"path": path},
        "output": {"path": "out.zarr", "chunk_size": [20, 20, 22]},
        "block_size": [20, 20, 22],
        "model": {"path": str(packages["3d-torchscript"]), "input_patch_size": [12, 20, 16]},
    }
    run_dir.mkdir()
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "chunkflow"), "run", "-d", str(run_dir), "--cores", "2"],
        env=run_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    planned = subprocess.run(
        [str(Path(sys.executable).parent / "chunkflow"), "plan", "-d", str(run_dir)],
        env=run_env,
        capture_output=True,
        text=True,
    )
    mean, std = volume.mean(), volume.std()
    assert (
        f"package 'chunkflow tiny 3d test model': torchscript weights, its test reproduced; "
        f"padding symmetric; input statistics mean {mean:.6g}, std {std:.6g}\n"
    ) in planned.stdout, planned.stdout + planned.stderr
    stored = list((run_dir / ".chunkflow" / "configs").glob("*.yaml"))
    assert len(stored) == 1
    jobs_config = yaml.safe_load(stored[0].read_text())
    assert set(jobs_config["model"]["statistics"]) == {"mean", "std"}
    import zarr

    got = zarr.open_array(str(run_dir / "out.zarr"), mode="r")[...]
    want = chunkflow.predict(
        volume, packages["3d-torchscript"], input_patch_size=[12, 20, 16], progress=False
    )
    assert np.array_equal(got, want)

    # a file of the package's folder edited in place (the folder itself unchanged): the next
    # run sees other results
    rdf = packages["3d-torchscript"] / "rdf.yaml"
    description = yaml.safe_load(rdf.read_text())
    step = {"id": "clip", "kwargs": {"min": -1e9, "max": 1e9}}  # the same values
    description["outputs"][0]["postprocessing"].insert(0, step)
    with open(rdf, "w") as same_inode:
        same_inode.write(yaml.safe_dump(description))
    again = subprocess.run(
        [str(Path(sys.executable).parent / "chunkflow"), "run", "-d", str(run_dir), "-n"],
        env=run_env,
        capture_output=True,
        text=True,
    )
    said = again.stdout + again.stderr
    assert again.returncode == 0 and "model.sha256" in said, said
    assert "every block will be computed" in said, said


def package_config(tmp_path: Path, package: Path, **model: Any) -> dict[str, Any]:
    volume = smooth_volume((12, 24, 24), seed=6)
    return {
        "input": {"path": write_volume(tmp_path / "raw.zarr", volume)},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [12, 24, 24]},
        "block_size": [12, 24, 24],
        "model": {"path": str(package), "input_patch_size": [12, 16, 16], **model},
        "state_dir": str(tmp_path / "state"),
    }


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"weights_format": "onnx"}, "model.weights_format is onnx but the package"),
        ({"weights": "w.pt"}, "model.weights is only used with a .py model"),
        (
            {"input_patch_size": [12, 18, 16]},
            "is 18 along y but the package takes 8 + a multiple of 4; use 16 or 20",
        ),
        (
            {"output_patch_size": [14, 12, 12]},
            "model.output_patch_size is 14 along z but the package gives 8 voxels there",
        ),
        (  # the halo is never written
            {"output_patch_size": [12, 16, 16]},
            "is 12 along z but the package gives 8 voxels there for model.input_patch_size "
            "[12, 16, 16]; use at most 8 (its output less its halo)",
        ),
        ({"statistics": {"mean": 1.0}}, None),  # the schema: std too
        ({"statistics": {"percentiles": {"1": 0.0}}}, "model.statistics lacks mean, std"),
        (
            {"input_patch_size": [4, 4, 4]},
            "is 4 along z but the package takes 8 + a multiple of 4; use 8",
        ),
    ],
)
def test_settings_a_package_cannot_take_fail_in_one_line(model, message, packages, tmp_path):
    config = package_config(tmp_path, packages["3d-torchscript"], **model)
    with pytest.raises(ConfigError) as caught:
        make_plan(parse(config))
    text = str(caught.value)
    assert "\n" not in text
    if message is not None:
        assert message in text, text


def test_a_package_whose_test_does_not_reproduce_fails_before_any_job(tmp_path, run_env):
    package = make_package(tmp_path / "broken", weights="torchscript", preprocessing=[ZMUV])
    expected = np.load(package / "test_output.npy")
    np.save(package / "test_output.npy", expected + 0.5)  # not what the network gives
    config = package_config(tmp_path, package)
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "chunkflow"),
            "plan",
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        env=run_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not reproduce its test output" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.zarr").exists()


def test_a_package_for_other_channels_is_refused(tmp_path):
    package = make_package(tmp_path / "two", in_channels=2)
    with pytest.raises(ConfigError, match=r"takes 2 input channel\(s\) but the input volume has 1"):
        chunkflow.predict(
            smooth_volume((12, 24, 24)), package, input_patch_size=[12, 16, 16], progress=False
        )


def test_the_readme_section_runs_as_written(tmp_path, monkeypatch):
    """README's "A model from the zoo": its Python snippet on the demo volume with a package at
    the path it names, then its config fragment in the demo config plans the same run."""
    import yaml

    from chunkflow.app.demo import write_demo

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## A model from the zoo")[1].split("\n## ")[0]
    snippet = section.split("```python\n")[1].split("```")[0]
    fragment = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])
    write_demo(tmp_path / "resources" / "demo")
    built = make_package(
        tmp_path / "models" / "boundaries",
        preprocessing=[ZMUV],
        postprocessing=[SIGMOID],
        out_channels=1,
        zipped=True,
    )
    assert built == tmp_path / "models" / "boundaries.zip"
    monkeypatch.chdir(tmp_path)
    exec(snippet, {})
    import zarr

    written = zarr.open_array("results/zoo_boundaries.zarr", mode="r")
    assert written.shape == (1, 64, 512, 512) and written.dtype == np.uint8
    assert 0 < written[...].std()

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    config["model"] = fragment["model"]
    config["output"]["path"] = "results/zoo_boundaries.zarr"
    plan = make_plan(parse(config))  # the fragment's defaults, as the README says
    assert plan.geometry.input_size == (32, 128, 128)
    assert plan.settings.model.weights_format == "torchscript"
    assert set(plan.settings.model.statistics) == {"mean", "std"}


def test_a_model_files_fingerprint_is_what_it_was_before_packages():
    """The package keys (``weights_format``, ``statistics``) are left out of the fingerprint
    while unset: finished runs of model files stay finished. The value is what commit 37a5f4c,
    before packages, printed for the same settings."""
    from chunkflow.config import load

    settings = load(Path(__file__).parents[1] / "config" / "config.yaml")
    assert settings.result_fingerprint("abc", {"x": 1}) == "5781c8d25f5d6f5a"


def test_a_per_slice_normalisation_reproduces_its_test_and_runs_seamlessly(tmp_path):
    """A package normalising each z-slice by its own statistics (``axes: [y, x]``): its own
    test is run as bioimage.io runs it (per slice), while over a volume chunkflow normalises by
    the volume's statistics, so blocks stay seamless."""
    per_slice = {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}
    package = make_package(tmp_path / "slices", preprocessing=[per_slice])
    volume = smooth_volume((20, 40, 44), seed=8)
    settings = {"input_patch_size": [12, 20, 16], "progress": False}
    whole = chunkflow.predict(volume, package, **settings)
    blocks = chunkflow.predict(
        volume, package, **settings, output={"chunk_size": [20, 8, 8]}, block_size=[20, 16, 24]
    )
    assert np.abs(blocks - whole).max() <= 1e-6
    dataset = {"mean": float(volume.mean()), "std": float(volume.std())}
    given = chunkflow.predict(volume, package, **settings, model_options={"statistics": dataset})
    assert np.abs(given - whole).max() <= 1e-5  # the statistics it measured are the volume's


def test_an_architecture_with_a_dataclass_loads(tmp_path):
    package = make_package(tmp_path / "dc", weights="pytorch_state_dict")
    with open(package / "zoo_arch.py", "a") as source:
        source.write(
            "\n\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass Cfg:\n    width: int = 4\n"
        )
    got = chunkflow.predict(
        smooth_volume((12, 24, 24)), package, input_patch_size=[12, 16, 16], progress=False
    )
    assert got.shape == (2, 12, 24, 24)


def test_a_2d_packages_z_patch_is_its_input_and_a_bad_test_tensor_is_one_line(tmp_path):
    flat = make_package(tmp_path / "flat", ndim=2)
    config = package_config(
        tmp_path, flat, input_patch_size=[4, 16, 16], output_patch_size=[2, 12, 12]
    )
    with pytest.raises(
        ConfigError, match=r"is 2 along z but the package gives 4 voxels there .*; use 4,"
    ):
        make_plan(parse(config))

    np.save(flat / "test_input.npy", np.zeros((2, 2), dtype=object), allow_pickle=True)
    with pytest.raises(chunkflow.ChunkflowError) as caught:
        chunkflow.predict(
            smooth_volume((12, 24, 24)), flat, input_patch_size=[4, 16, 16], progress=False
        )
    assert "its test input 'test_input.npy' is not a readable .npy file" in str(caught.value)
    assert "\n" not in str(caught.value)
