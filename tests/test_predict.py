"""``chunkflow.predict``: a numpy array in, the workflow's output out; a named output gets a run
directory that the workflow takes over, and a second call resumes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from workflow_runs import BASE_CONFIG, N_BLOCKS, job_counts, output, read_config, snakemake

import chunkflow


def settings_of(run_dir: Path) -> dict:
    """BASE_CONFIG's settings as ``predict`` takes them (the model in ``run_dir``)."""
    config = read_config(run_dir)
    model = config["model"]
    return {
        "model": run_dir / model["path"],
        "input_patch_size": model["input_patch_size"],
        "output_patch_size": model["output_patch_size"],
        "block_size": config["block_size"],
        "inference": config["inference"],
        "progress": False,
    }


def test_predict_on_a_numpy_array_equals_the_workflows_output(finished, tmp_path):
    run_dir = finished[0]
    raw = zarr.open_array(str(run_dir / "data" / "raw.zarr"), mode="r")[...]
    layout = {k: v for k, v in BASE_CONFIG["output"].items() if k != "path"}
    got = chunkflow.predict(raw, **settings_of(run_dir), output=layout)
    want = output(run_dir)[...]
    assert isinstance(got, np.ndarray) and got.shape == want.shape == (2, *raw.shape)
    assert np.array_equal(got, want)


def test_a_named_output_is_a_run_the_workflow_takes_over(finished, tmp_path, run_env, elsewhere):
    run_dir = finished[0]
    raw = zarr.open_array(str(run_dir / "data" / "raw.zarr"), mode="r")[...]
    path = tmp_path / "pred.zarr"
    layout = {**BASE_CONFIG["output"], "path": str(path)}
    volume = chunkflow.predict(raw, **settings_of(run_dir), output=layout)
    assert isinstance(volume, chunkflow.Volume)
    assert np.array_equal(volume.read(volume.bounds), output(run_dir)[...])

    work = tmp_path / "pred.zarr.chunkflow"  # beside the output: config, state, the input's copy
    config = read_config(work)
    assert config["output"]["path"] == str(path)
    assert config["input"]["path"] == str(work / "input.zarr")
    assert np.array_equal(zarr.open_array(config["input"]["path"], mode="r")[...], raw)
    dry = snakemake(work, run_env, elsewhere, "-n")
    assert "infer_block" not in job_counts(dry.text), dry.text  # every block is done

    markers = sorted((work / ".chunkflow" / "blocks").glob("*/*.json"))
    assert len(markers) == N_BLOCKS
    markers[0].unlink()  # a lost block: the next call computes it alone
    stamps = {m: m.stat().st_mtime_ns for m in markers[1:]}
    chunkflow.predict(raw, **settings_of(run_dir), output=layout)
    assert markers[0].is_file() and {m: m.stat().st_mtime_ns for m in markers[1:]} == stamps


def test_a_temporary_run_leaves_nothing(finished, tmp_path, monkeypatch):
    run_dir = finished[0]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    raw = zarr.open_array(str(run_dir / "data" / "raw.zarr"), mode="r")[...]
    layout = {k: v for k, v in BASE_CONFIG["output"].items() if k != "path"}
    chunkflow.predict(raw, **settings_of(run_dir), output=layout)
    assert list(tmp_path.iterdir()) == []


def test_data_of_another_rank_is_refused(finished):
    with pytest.raises(ValueError, match=r"data has shape \(4, 4\): give \(z, y, x\)"):
        chunkflow.predict(np.zeros((4, 4)), **settings_of(finished[0]))


def test_the_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    from chunkflow.app.demo import write_demo

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = readme.split("## From Python")[1].split("```python\n")[1].split("```")[0]
    write_demo(tmp_path / "resources" / "demo")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet, namespace)
    affinities = namespace["affinities"]
    assert affinities.shape == (3, 32, 256, 256) and affinities.dtype == np.float32
    assert 0.0 <= affinities.min() and affinities.max() <= 1.0 and affinities.std() > 0.01


def test_sections_merge_and_the_defaults_follow_what_is_given(finished, tmp_path):
    """A section given as a dict is merged with what the arguments make of it; without an
    output path the result is an array, also with a run directory of one's own; the output's
    chunk defaults to fit a given block; a Path names an output; a URL needs ``run_dir``."""
    run_dir = finished[0]
    raw = zarr.open_array(str(run_dir / "data" / "raw.zarr"), mode="r")[...]
    settings = {**settings_of(run_dir), "block_size": np.array([8, 16, 16])}
    work = tmp_path / "work"
    got = chunkflow.predict(
        raw,
        **settings,
        run_dir=work,
        input={"padding": "zero"},
        model_options={"output_channels": 2},
    )
    config = read_config(work)
    assert config["input"] == {"path": str(work / "input.zarr"), "padding": "zero"}
    assert config["model"]["output_channels"] == 2 and config["model"]["path"].endswith("net.pt")
    assert config["output"]["chunk_size"] == config["block_size"] == [8, 16, 16]
    assert isinstance(got, np.ndarray) and got.shape == (2, *raw.shape)
    assert not np.array_equal(got, output(run_dir)[...])  # zero padding: other values at edges

    named = chunkflow.predict(raw, **settings, output=tmp_path / "p.zarr")
    assert isinstance(named, chunkflow.Volume) and (tmp_path / "p.zarr.chunkflow").is_dir()
    with pytest.raises(ValueError, match="not a local path: give run_dir="):
        chunkflow.predict(raw, **settings, output="s3://bucket/p.zarr")


def test_a_zarr_array_is_read_where_it_is_or_copied(finished, tmp_path):
    """A zarr array in a local store is the run's input as it is (no copy); one in memory is
    copied slab by slab; both give what its numpy values give."""
    run_dir = finished[0]
    stored = zarr.open_array(str(run_dir / "data" / "raw.zarr"), mode="r")
    layout = {k: v for k, v in BASE_CONFIG["output"].items() if k != "path"}
    want = chunkflow.predict(stored[...], **settings_of(run_dir), output=layout)

    work = tmp_path / "in_place"
    got = chunkflow.predict(stored, **settings_of(run_dir), output=layout, run_dir=work)
    assert np.array_equal(got, want)
    assert read_config(work)["input"]["path"] == str(run_dir / "data" / "raw.zarr")
    assert not (work / "input.zarr").exists()

    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=stored.shape, dtype=stored.dtype, chunks=(3, 16, 16)
    )
    in_memory[...] = stored[...]
    copied = tmp_path / "copied"
    got = chunkflow.predict(in_memory, **settings_of(run_dir), output=layout, run_dir=copied)
    assert np.array_equal(got, want)
    assert np.array_equal(zarr.open_array(str(copied / "input.zarr"), mode="r")[...], stored[...])
