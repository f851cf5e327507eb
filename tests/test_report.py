"""The HTML run report, opened in a real headless Chromium: its block map, throughput chart,
stage table and thumbnails against the markers and the volumes read independently."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import struct
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import ValidConvNet, config_with, save_torchscript, store_id
from run_helpers import read_back
from workflow_runs import (
    BASE_CONFIG,
    N_BLOCKS,
    copy_run,
    marker_dir,
    markers,
)

from chunkflow import config as config_mod
from chunkflow.inspect import report
from chunkflow.job.local_run import run_locally
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import STAGES, DoneMarker, read_markers
from chunkflow.state.run_state import RunState

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (`apt-get install chromium`; `make test` does)"
)
CHROMIUM = [
    str(BROWSER),
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
]


# ---------------------------------------------------------------------------------------------
# the browser


class Elements(HTMLParser):
    """Every element of a page as (tag, attributes, its own text), in document order."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], list[str]]] = []
        self.open: list[list[str]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}, []))
        if tag not in ("img", "br", "meta", "line", "circle", "polyline"):
            self.open.append(self.found[-1][2])

    def handle_endtag(self, tag: str) -> None:
        if self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1].append(data)

    def with_class(self, name: str) -> list[tuple[dict[str, str], str]]:
        return [(a, "".join(t)) for _, a, t in self.found if name in a.get("class", "").split()]

    def titles(self, name: str) -> list[str]:
        """The <title> texts following each element of class ``name`` (its tooltip)."""
        out = []
        for i, (_, attrs, _) in enumerate(self.found):
            if name in attrs.get("class", "").split():
                tag, _, text = self.found[i + 1]
                out.append("".join(text) if tag == "title" else "")
        return out


def browse(page: Path, *args: str) -> str:
    result = subprocess.run(
        [*CHROMIUM, *args, page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def dom(page: Path) -> Elements:
    """The page as Chromium parsed it."""
    return Elements(browse(page, "--dump-dom"))


def decoded(images: list[str], tmp: Path) -> list[np.ndarray]:
    """The pixels (h, w, RGB) of ``images`` (data URIs) as Chromium decodes them: drawn on a
    canvas, read back with getImageData into the page, dumped."""
    probe = tmp / "probe.html"
    probe.write_text(
        "<html><body><pre id='out'></pre>"
        + "".join(f"<img src='{src}'>" for src in images)
        + "<script>window.onload = () => { const out = [...document.images].map(im => {"
        "const c = document.createElement('canvas'); c.width = im.naturalWidth;"
        "c.height = im.naturalHeight; const g = c.getContext('2d'); g.drawImage(im, 0, 0);"
        "return [c.height, c.width, Array.from(g.getImageData(0, 0, c.width, c.height).data)];"
        "}); document.getElementById('out').textContent = JSON.stringify(out); };</script>"
        "</body></html>"
    )
    out = Elements(browse(probe, "--dump-dom", "--virtual-time-budget=5000")).found
    text = next("".join(t) for tag, a, t in out if a.get("id") == "out")
    return [np.array(px, np.uint8).reshape(h, w, 4)[..., :3] for h, w, px in json.loads(text)]


# ---------------------------------------------------------------------------------------------
# what the page should show, computed from the markers and volumes directly


STEADY_MARKER = {  # a block of 1000 voxels that took 10 s
    "block": "z0_y0_x0",
    "box": {"start": [0, 0, 0], "stop": [10, 10, 10]},
    "chunk_box": {"start": [0, 0, 0], "stop": [10, 10, 10]},
    "skipped": None,
    "patches": 1,
    "voxels": 1000,
    "pieces": 1,
    "piece_size": [10, 10, 10],
    "timings_s": {"read": 1.0, "infer": 8.0, "write": 2.0, "total": 11.0, "wall": 10.0},
    "ran_on": {"device": "cpu"},
    "model_sha256": "0" * 64,
    "fingerprint": "0" * 16,
    "chunkflow_version": "0",
    "output_dtype": "uint8",
    "output_sha256": "0" * 64,
    "input_digest": None,
    "finished": "",
}


def expected_rates(found: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """The throughput intervals' length (s) and rates as the page documents them: from the
    first start to the last finish, at most 40 and one per second; per interval, the voxels of
    each block times the share of its wall seconds in it, over the interval's length."""
    ends = [datetime.fromisoformat(m["finished"]).timestamp() for m in found]
    starts = [e - m["timings_s"]["wall"] for e, m in zip(ends, found, strict=True)]
    span = max(ends) - min(starts)
    bins = max(1, min(40, int(span)))
    width = span / bins
    rates = [0.0] * bins
    for begin, end, m in zip(starts, ends, found, strict=True):
        for i in range(bins):
            low, high = min(starts) + i * width, min(starts) + (i + 1) * width
            seconds = max(0.0, min(end, high) - max(begin, low))
            rates[i] += m["voxels"] * seconds / (end - begin) / width
    return width, rates


def thumbnail_slice(found: list[dict[str, Any]], roi_start, roi_shape) -> tuple[str, list]:
    """The inferred block nearest the ROI's centre (ties: the first id) and its z-slice box."""
    centre = np.array(roi_start) + np.array(roi_shape) / 2

    def distance(m):
        box = np.array(m["box"]["start"]), np.array(m["box"]["stop"])
        return float(np.sum(((box[0] + box[1]) / 2 - centre) ** 2)), m["block"]

    block = min((m for m in found if not m["skipped"]), key=distance)
    start, stop = block["box"]["start"], block["box"]["stop"]
    z = min(max(roi_start[0] + roi_shape[0] // 2, start[0]), stop[0] - 1)
    return block["block"], [[z, *start[1:]], [z + 1, *stop[1:]]]


def scaled(a: np.ndarray) -> np.ndarray:
    """uint8 as is; anything else stretched from its minimum..maximum to 0..255."""
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    return np.rint((a - a.min()) * 255 / (a.max() - a.min())).astype(np.uint8)


def expected_thumbnails(raw: np.ndarray, out: np.ndarray, box, offset, px: int) -> list:
    """Input (grey as RGB) and prediction (channel 0 grey, or channels 0-2 RGB) of ``box``,
    subsampled to at most ``px`` pixels along y and x."""
    (z, y0, x0), (_, y1, x1) = ((v - o for v, o in zip(c, offset, strict=True)) for c in box)
    step = math.ceil(max(y1 - y0, x1 - x0) / px)
    grey = scaled(raw[z, y0:y1:step, x0:x1:step])
    pred = out[:, z, y0:y1:step, x0:x1:step]
    rgb = scaled(np.stack(list(pred[:3]), -1)) if len(pred) >= 3 else scaled(pred[0])[..., None]
    return [np.repeat(grey[..., None], 3, -1), np.broadcast_to(rgb, (*rgb.shape[:2], 3))]


def images(page: Elements) -> list[str]:
    return [a["src"] for tag, a, _ in page.found if tag == "img"]


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.workflow
def test_report_of_a_snakemake_run(finished, tmp_path):
    """The summary rule's report: a cell per block, a chart point per interval conserving the
    voxels, the markers' stage times, the thumbnails' pixels; and it renders to a screenshot."""
    run_dir = finished[0]
    page_file = run_dir / ".chunkflow" / "report.html"
    page, found = dom(page_file), list(markers(run_dir).values())
    assert len(found) == N_BLOCKS

    cells = page.with_class("cell")
    assert len(cells) == N_BLOCKS and {a["class"] for a, _ in cells} == {"cell done"}
    assert sorted(page.titles("cell")) == sorted(f"{m['block']}: done" for m in found)

    width, expected = expected_rates(found)
    rates = [float(t.split(": ")[1].split()[0]) for t in page.titles("point")]
    assert rates == pytest.approx(expected, rel=1e-3, abs=1e-6 * max(expected))
    assert sum(rates) * width == pytest.approx(sum(m["voxels"] for m in found), rel=1e-3)

    sums = [float(text) for _, text in page.with_class("sum")]
    medians = [float(text) for _, text in page.with_class("median")]
    for i, stage in enumerate(STAGES):
        times = [m["timings_s"][stage] for m in found]
        assert f"{sums[i]:.3f}" == f"{math.fsum(times):.3f}"
        assert f"{medians[i]:.3f}" == f"{statistics.median(times):.3f}"

    config = BASE_CONFIG
    raw = zarr.open_array(str(run_dir / config["input"]["path"]), mode="r")[...]
    out, attrs = read_back(str(run_dir / config["output"]["path"]))
    block, box = thumbnail_slice(found, attrs["voxel_offset"], out.shape[1:])
    assert f"Block {block} " in "".join(t for _, t in page.with_class("note"))
    want = expected_thumbnails(raw, out, box, attrs["voxel_offset"], report.THUMB_PX)
    got = decoded(images(page), tmp_path)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))

    shot = tmp_path / "shot.png"
    browse(page_file, f"--screenshot={shot}", "--window-size=900,1200")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:24] == b"IHDR" + struct.pack(">II", 900, 1200)


def test_a_steady_run_of_blocks_finishing_in_pairs_looks_steady():
    """Two jobs at a time, each block 10 s: blocks finish in pairs, every 10 s. Binned by
    finish time the chart alternated full and empty intervals; spread over the seconds each
    block ran, every interval shows the run's rate."""
    finished = datetime.fromisoformat("2026-12-07T10:00:00+00:00").timestamp()
    pairs = [
        DoneMarker.from_json(
            {
                **STEADY_MARKER,
                "block": f"z{k}_y0_x{j}",
                "finished": datetime.fromtimestamp(finished + 10 * (k + 1))
                .astimezone()
                .isoformat(),
            }
        )
        for k in range(20)
        for j in range(2)
    ]
    width, rates = report.throughput_bins(pairs)
    assert len(rates) == 40 and width == pytest.approx(5.0)
    assert rates == pytest.approx([2 * 1000 / 10] * 40)


@pytest.mark.workflow
def test_report_command_shows_missing_and_failed_blocks(finished, tmp_path, run_env):
    """Mid-run: one block's marker gone (missing), another's job failed (its real log)."""
    run_dir = copy_run(finished[0], tmp_path / "run")
    folder = marker_dir(run_dir)
    (folder / "z1_y1_x0.json").unlink()
    (folder / "z0_y1_x0.json").unlink()
    state = run_dir / ".chunkflow"
    stored = next((state / "configs").glob("*.yaml"))
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "infer_block.py"
    with (state / "logs" / "infer_block" / "z0_y1_x0.log").open("w") as log:
        failed = subprocess.run(
            [sys.executable, str(script), "--config", str(stored), "--expect-fingerprint", "0"]
            + [str(folder / "z0_y1_x0.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=run_env,
        )
    assert failed.returncode != 0

    page_file = tmp_path / "mid-run.html"
    done = subprocess.run(
        [sys.executable, "-m", "chunkflow", "report", "-c", "config.yaml", "--out", page_file],
        cwd=run_dir,
        capture_output=True,
        text=True,
        env=run_env,
    )
    assert done.returncode == 0, done.stderr
    cells = Elements(browse(page_file, "--dump-dom"))
    states = dict(t.split(": ") for t in cells.titles("cell"))
    assert states == {
        "z0_y0_x0": "done",
        "z1_y0_x0": "done",
        "z0_y1_x0": "failed",
        "z1_y1_x0": "missing",
    }
    text = "".join("".join(t) for _, _, t in cells.found)
    assert "done: 2" in text and "no marker): 1" in text and "or killed): 1" in text


def test_large_grids_aggregate_and_thumbnails_downsample(small_config, tmp_path, monkeypatch):
    """A grid over MAX_CELLS draws cells of several blocks, coloured by the fraction done; a
    block slice over THUMB_PX is subsampled; three output channels show as RGB."""
    model = save_torchscript(ValidConvNet(channels_out=3), tmp_path / "net3.pt")
    config = config_with(small_config, **{"model.path": model, "output.dtype": "uint8"})
    plan = make_plan(config_mod.parse(config))
    run_locally(plan)
    done = read_markers(RunState.of(plan), plan.block_ids, store_id(plan)).done
    assert len(done) == 8  # a 2 x 2 x 2 grid
    done = [m for m in done if m.block != "z1_y1_x1"]
    monkeypatch.setattr(report, "MAX_CELLS", 4)  # 2 layers of one cell, of 1 x 2 x 2 blocks
    monkeypatch.setattr(report, "THUMB_PX", 10)
    page_file = report.write_report(plan, done, tmp_path / "report.html")
    page = dom(page_file)

    cells = page.with_class("agg")
    assert [(a["data-done"], a["data-blocks"]) for a, _ in cells] == [("4", "4"), ("3", "4")]
    assert "1 x 2 x 2 blocks" in "".join(t for _, t in page.with_class("note"))

    raw, _ = read_back(config["input"]["path"])
    out, attrs = read_back(config["output"]["path"])
    found = [m.to_json() for m in done]
    _, box = thumbnail_slice(found, attrs["voxel_offset"], out.shape[1:])
    want = expected_thumbnails(raw, out, box, attrs["voxel_offset"], 10)
    got = decoded(images(page), tmp_path)
    assert [g.shape for g in got] == [(6, 8, 3), (6, 8, 3)] == [w.shape for w in want]
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert len(np.unique(got[1].reshape(-1, 3), axis=0)) > 1  # a real picture, in colour
    assert not np.array_equal(got[1][..., 0], got[1][..., 1])
