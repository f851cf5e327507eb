"""The neuroglancer view of a run: state (positions in x, y, z, layers), link, local server."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import config_with, smooth_volume, write_volume

from chunkflow import config as config_mod
from chunkflow.inspect import view
from chunkflow.plan.run_plan import make_plan
from chunkflow.settings import OutputSettings
from chunkflow.volumes.base import VolumeInfo
from chunkflow.volumes.precomputed import PrecomputedVolume


def file_url(path: Path) -> str:
    return f"precomputed://{path.as_uri()}"


@pytest.fixture
def run_config(small_config, tmp_path):
    """The small config on a zarr input with voxel offset (2, 3, 5) and resolution (40, 8, 4)."""
    raw = write_volume(
        tmp_path / "raw-off.zarr", smooth_volume((20, 48, 56)), (2, 3, 5), (40.0, 8.0, 4.0)
    )
    return config_with(small_config, **{"input.path": raw})


def gzipped_precomputed(url: str) -> str:
    """A small precomputed volume written by chunkflow with gzip'd chunks."""
    info = VolumeInfo((4, 8, 8), "uint8", (4, 8, 8), (0, 0, 0), (40.0, 8.0, 4.0), None)
    settings = OutputSettings("", "uint8", (4, 8, 8), 3, encoding="gzip")
    volume = PrecomputedVolume.create(url, info, settings)
    volume.write(volume.bounds, np.ones((4, 8, 8), dtype="uint8"))
    return url


def test_neuroglancer_state_centres_on_the_roi_in_xyz(tmp_path, run_config):
    config = config_with(
        run_config,
        **{
            "output.path": file_url(tmp_path / "out"),
            "roi.offset": [4, 3, 9],
            "roi.size": [12, 40, 40],
        },
    )
    plan = make_plan(config_mod.parse(config))
    state = view.state(plan)
    assert state["position"] == [29.0, 23.0, 10.0]  # x, y, z of the ROI's centre, in voxels
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [8e-9, "m"], "z": [4e-8, "m"]}
    layers = {layer["name"]: layer["source"] for layer in state["layers"]}
    assert layers["output"] == f"precomputed://{(tmp_path / 'out').as_uri()}"
    raw = layers["input"]  # a plain zarr v3: placed by its voxel offset, channel axis none
    assert raw["url"] == f"zarr3://{(tmp_path / 'raw-off.zarr').as_uri()}"
    assert raw["transform"]["matrix"] == [[1, 0, 0, 2], [0, 1, 0, 3], [0, 0, 1, 5]]
    link = view.url(state)
    assert json.loads(urllib.parse.unquote(link.split("#!", 1)[1])) == state
    # a zarr output (created or not): channel axis c^, placed at the ROI's start
    plan = make_plan(
        config_mod.parse(config_with(config, **{"output.path": str(tmp_path / "o.zarr")}))
    )
    out = next(layer["source"] for layer in view.state(plan)["layers"] if layer["name"] == "output")
    assert out["url"] == f"zarr3://{(tmp_path / 'o.zarr').as_uri()}"
    assert out["transform"]["outputDimensions"] == {
        "c^": [1, ""],
        "z": [4e-8, "m"],
        "y": [8e-9, "m"],
        "x": [4e-9, "m"],
    }
    assert [row[-1] for row in out["transform"]["matrix"]] == [0, 4, 3, 9]


def test_view_serves_the_local_volumes(tmp_path, run_config):
    url = gzipped_precomputed(file_url(tmp_path / "out"))
    plan = make_plan(config_mod.parse(config_with(run_config, **{"output.path": url})))
    httpd, base = view.server(plan, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        state = view.state(plan, base)
        sources = {layer["name"]: layer["source"] for layer in state["layers"]}
        assert sources["output"] == f"precomputed://{base}/output"
        assert sources["input"]["url"] == f"zarr3://{base}/input"
        with urllib.request.urlopen(f"{base}/output/info") as reply:
            assert json.loads(reply.read())["scales"][0]["resolution"] == [4, 8, 40]
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
        chunk = next((tmp_path / "out").glob("*/*.gz"))  # output.encoding gzip
        with urllib.request.urlopen(f"{base}/output/{chunk.parent.name}/{chunk.stem}") as reply:
            assert reply.headers["Content-Encoding"] == "gzip"
            assert reply.read() == chunk.read_bytes()  # the browser unzips it
        with urllib.request.urlopen(f"{base}/input/zarr.json") as reply:
            assert json.loads(reply.read())["shape"] == [20, 48, 56]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/input/../../etc/passwd")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{base}/elsewhere/info")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_view_command_and_summary_print_the_state(tmp_path, run_config, capsys):
    from chunkflow.app import cli
    from chunkflow.inspect.summary import format_summary, summarize

    config = config_with(run_config, **{"output.path": file_url(tmp_path / "out")})
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    assert cli.main(["view", "--config", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan = make_plan(config_mod.parse(config))
    assert printed == view.state(plan) and printed["position"] == [33.0, 27.0, 12.0]
    assert cli.main(["view", "--config", str(path)]) == 0
    link = capsys.readouterr().out.strip()
    assert link == view.url(view.state(plan)) and link.startswith(view.NEUROGLANCER + "#!")
    assert link in format_summary(summarize(plan, []))


def test_view_says_why_it_leaves_out_an_hdf5_layer(tmp_path, small_config, capsys):
    from format_cases import hdf5_input

    from chunkflow.app import cli

    config = config_with(small_config, **{"input.path": hdf5_input(tmp_path)})
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    assert cli.main(["view", "--config", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [layer["name"] for layer in json.loads(out)["layers"]] == ["output"]
    assert err.splitlines() == [
        f"chunkflow: the input layer '{config['input']['path']}' is left out: neuroglancer "
        "cannot read HDF5; `chunkflow view --serve` serves it as zarr"
    ]


def test_view_serves_an_hdf5_volume_as_zarr(tmp_path, small_config):
    """Neuroglancer reads zarr over HTTP: the served HDF5 dataset's .zarray, and each chunk
    whole (zeros past the volume's end), as the dataset holds it."""
    import h5py

    raw = smooth_volume((20, 48, 56))
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f.create_dataset("raw", data=raw, chunks=(8, 16, 16)).attrs["voxel_offset"] = (2, 3, 5)
    config = config_with(small_config, **{"input.path": f"{tmp_path / 'raw.h5'}:/raw"})
    plan = make_plan(config_mod.parse(config))
    httpd, base = view.server(plan, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert view.left_out(plan, base) == []
        source = next(s["source"] for s in view.state(plan, base)["layers"] if s["name"] == "input")
        assert source["url"] == f"zarr://{base}/input"
        assert [row[-1] for row in source["transform"]["matrix"]] == [2, 3, 5]
        with urllib.request.urlopen(f"{base}/input/.zarray") as reply:
            meta = json.loads(reply.read())
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert meta["shape"] == [20, 48, 56] and meta["chunks"] == [8, 16, 16]
        assert (meta["dtype"], meta["compressor"]) == ("|u1", None)
        for key, box in (("1.2.0", np.s_[8:16, 32:48, 0:16]), ("2.2.3", np.s_[16:, 32:, 48:])):
            with urllib.request.urlopen(f"{base}/input/{key}") as reply:
                chunk = np.frombuffer(reply.read(), dtype=np.uint8).reshape(8, 16, 16)
            part = raw[box]
            assert np.array_equal(chunk[: part.shape[0], :, : part.shape[2]], part)
            assert chunk.sum() == part.sum()  # the rest of an edge chunk: zeros
        for missing in ("3.0.0", "0.0", "x.y.z", "0.0.-1", "zarr.json"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{base}/input/{missing}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_summary_names_the_most_gpu_memory_a_block_held(small_config):
    from dataclasses import replace

    from chunkflow.inspect.summary import format_summary, summarize
    from chunkflow.job.local_run import run_locally

    plan = make_plan(config_mod.parse(small_config))
    markers = run_locally(plan)  # on the CPU: no GPU memory
    assert summarize(plan, markers)["peak_gpu_memory_mb"] is None
    assert "GPU memory" not in format_summary(summarize(plan, markers))
    on_gpu = [
        replace(m, ran_on={**m.ran_on, "peak_gpu_memory_mb": 100.0 * (i + 1)})
        for i, m in enumerate(markers)
    ]
    summary = summarize(plan, on_gpu)
    assert summary["peak_gpu_memory_mb"] == 100.0 * len(markers)
    assert f"peak GPU memory of a block {100 * len(markers):,} MB" in format_summary(summary)
