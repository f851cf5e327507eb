"""The run report: one self-contained HTML page (inline CSS and SVG, PNG data URIs, no script).

It shows the block grid coloured by state, throughput over time, time per stage, and a z-slice
of the input next to the prediction. Its costs are bounded at any scale: it takes the markers
already read (one listing of their folder), lists the block logs once and reads only the tails
of those without a marker, draws at most ``MAX_CELLS`` grid cells (aggregating blocks beyond),
and reads one z-slice of one block.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from chunkflow.errors import ChunkflowError
from chunkflow.geometry.boxes import Box, ceil_div
from chunkflow.inspect.block_logs import unfinished_logs
from chunkflow.inspect.summary import format_summary, summarize
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.files import write_text_atomic
from chunkflow.state.markers import STAGES, DoneMarker
from chunkflow.state.run_state import RunState

MAX_CELLS = 65_536  # grid cells drawn in all, over every map
MAX_LAYERS = 64  # maps (z-layers of cells)
MAX_BINS = 40  # throughput intervals
THUMB_PX = 256  # the thumbnails' longest side, at most

# Block states, in the legend's order; each is also the CSS class of a cell of one block.
STATES = ("done", "background", "failed", "missing", "unscheduled")
LABELS = {
    "done": "done",
    "background": "background (not inferred)",
    "failed": "failed (log with an error, no marker)",
    "missing": "no marker (not run yet, running, or killed)",
    "unscheduled": "outside the mask",
}
COLOURS = {
    "done": "#2e7d32",
    "background": "#90a4ae",
    "failed": "#c62828",
    "missing": "#e0e0e0",
    "unscheduled": "#ffffff",
}
DONE, BACKGROUND, FAILED, MISSING, UNSCHEDULED = range(len(STATES))


def write_report(
    plan: RunPlan, markers: list[DoneMarker], path: str | Path, state: RunState | None = None
) -> Path:
    """Write the report of ``plan`` with its done-``markers`` (read from ``state``, default:
    the plan's state dir) to ``path`` (atomically)."""
    write_text_atomic(Path(path), render(plan, markers, state or RunState.of(plan)))
    return Path(path)


def render(plan: RunPlan, markers: list[DoneMarker], state: RunState) -> str:
    """The report page."""
    states = block_states(plan, markers)
    out = html.escape(plan.settings.output.path)
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    sections = [
        f"<h1>chunkflow run report</h1><p>{out}, fingerprint {plan.fingerprint}; made {now}</p>",
        _summary(plan, markers),
        "<h2>Blocks</h2>" + grid_section(states, plan.settings.block_size),
        "<h2>Throughput</h2>" + throughput_section(markers),
        "<h2>Time per stage</h2>" + stage_table(markers),
        "<h2>Prediction</h2>" + thumbnail_section(plan, markers, state),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>chunkflow: {out}</title><style>{CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def _summary(plan: RunPlan, markers: list[DoneMarker]) -> str:
    """The summary's text, its neuroglancer link a link."""
    summary = summarize(plan, markers)
    url = html.escape(summary["neuroglancer"])
    text = html.escape(format_summary(summary)).replace(url, f"<a href='{url}'>open it</a>")
    return f"<pre class='summary'>{text}</pre>"


CSS = (
    "body{font-family:sans-serif;margin:1.5em;max-width:72em;color:#222}"
    "pre.summary{white-space:pre-wrap;word-break:break-all;background:#f5f5f5;padding:.6em}"
    ".maps{display:flex;flex-wrap:wrap;gap:1em}.map figcaption{font-size:.8em}"
    ".legend span{display:inline-block;margin-right:1.2em}"
    ".legend i{display:inline-block;width:.9em;height:.9em;border:1px solid #999;"
    "margin-right:.3em;vertical-align:middle}"
    "rect.cell{stroke:#fff;stroke-width:.5}rect.has-failed{stroke:#c62828;stroke-width:1.5}"
    + "".join(f"rect.{s}{{fill:{c}}}" for s, c in COLOURS.items())
    + "rect.unscheduled{stroke:#ddd}"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:right;"
    "border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:left}"
    ".thumbs{display:flex;gap:1.5em}.thumbs img{width:256px;image-rendering:pixelated;"
    "border:1px solid #999}.chart text{font-size:11px}.note{color:#555;font-size:.9em}"
)


# ---------------------------------------------------------------------------------------------
# block states


def block_states(plan: RunPlan, markers: list[DoneMarker]) -> np.ndarray:
    """The state (index into ``STATES``) of every block of the grid, as an array of its shape.

    A block without a marker whose log (``logs/infer_block/<block>.log``, written since this
    fingerprint's output record) ends with an error failed.
    """
    grid = plan.grid
    if plan.settings.mask is None:
        states = np.full(grid.shape, MISSING, np.int8)
    else:
        states = np.full(grid.shape, UNSCHEDULED, np.int8)
        for block in plan.blocks:
            states[block.index] = MISSING
    for marker in markers:
        states[grid.block_by_id(marker.block).index] = BACKGROUND if marker.skipped else DONE
    for index in _failed(plan, states):
        states[index] = FAILED
    return states


def _failed(plan: RunPlan, states: np.ndarray) -> list[tuple[int, ...]]:
    """The missing blocks whose log of this fingerprint's run ends with an error."""
    missing = _MissingBlocks(plan, states)
    logs = unfinished_logs(plan, missing)
    return [plan.grid.block_by_id(log.block).index for log in logs if log.state == "failed"]


@dataclass(frozen=True)
class _MissingBlocks:
    """The ids of the blocks whose state is ``MISSING``, as a container (no list of them)."""

    plan: RunPlan
    states: np.ndarray

    def __contains__(self, block_id: object) -> bool:
        try:
            index = self.plan.grid.block_by_id(str(block_id)).index
        except KeyError:
            return False  # not a block's name
        return bool(self.states[index] == MISSING)


@dataclass(frozen=True)
class CellSize:
    """How many blocks one drawn cell covers along z and along y and x."""

    z: int
    yx: int

    @classmethod
    def for_grid(cls, shape: tuple[int, ...]) -> CellSize:
        """One block per cell where the grid fits ``MAX_LAYERS`` maps and ``MAX_CELLS`` cells;
        else the fewest blocks per cell that do."""
        nz, ny, nx = shape
        z = ceil_div(nz, MAX_LAYERS)
        yx = 1
        while ceil_div(nz, z) * ceil_div(ny, yx) * ceil_div(nx, yx) > MAX_CELLS:
            yx += 1
        return cls(z, yx)

    def describe(self, block_size: tuple[int, ...]) -> str:
        if (self.z, self.yx) == (1, 1):
            return f"one cell is one block ({' x '.join(map(str, block_size))} voxels, z y x)"
        return (
            f"one cell is {self.z} x {self.yx} x {self.yx} blocks (z y x), coloured by the "
            "fraction of its blocks done; a red border: one of them failed"
        )


def cell_counts(states: np.ndarray, size: CellSize) -> np.ndarray:
    """Per cell, the number of blocks in each state: shape (layers, rows, cols, len(STATES))."""
    nz, ny, nx = states.shape
    layers, rows, cols = ceil_div(nz, size.z), ceil_div(ny, size.yx), ceil_div(nx, size.yx)
    padded = np.full((layers * size.z, rows * size.yx, cols * size.yx), -1, np.int8)
    padded[:nz, :ny, :nx] = states
    cells = padded.reshape(layers, size.z, rows, size.yx, cols, size.yx)
    return np.stack([(cells == s).sum(axis=(1, 3, 5)) for s in range(len(STATES))], axis=-1)


def grid_section(states: np.ndarray, block_size: tuple[int, ...]) -> str:
    size = CellSize.for_grid(states.shape)
    totals = np.bincount(states.ravel(), minlength=len(STATES))
    legend = "".join(
        f"<span class='legend-{s}'><i style='background:{COLOURS[s]}'></i>{LABELS[s]}: "
        f"<b>{int(totals[i]):,}</b></span>"
        for i, s in enumerate(STATES)
        if totals[i] or s != "unscheduled"
    )
    counts = cell_counts(states, size)
    maps = "".join(_layer_map(counts[layer], layer, size) for layer in range(counts.shape[0]))
    return (
        f"<p class='legend'>{legend}</p><p class='note'>{size.describe(block_size)}; one map "
        f"per z-layer of cells, y down, x across.</p><div class='maps'>{maps}</div>"
    )


def _layer_map(counts: np.ndarray, layer: int, size: CellSize) -> str:
    rows, cols = counts.shape[:2]
    px = max(3, min(24, 480 // max(rows, cols)))
    z0, z1 = layer * size.z, (layer + 1) * size.z - 1
    caption = f"z {z0}" if size.z == 1 else f"z {z0}..{z1}"
    rects = [
        _cell(counts[r, c], (layer, r, c), size, c * px, r * px, px)
        for r in range(rows)
        for c in range(cols)
    ]
    return (
        f"<figure class='map'><svg width='{cols * px}' height='{rows * px}' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(rects)}</svg>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _cell(counts: np.ndarray, cell: tuple[int, int, int], size: CellSize, x, y, px) -> str:
    box = f"x='{x}' y='{y}' width='{px}' height='{px}'"
    if (size.z, size.yx) == (1, 1):
        state = STATES[int(np.argmax(counts))]
        return f"<rect class='cell {state}' {box}><title>z{cell[0]}_y{cell[1]}_x{cell[2]}: {state}</title></rect>"
    scheduled = int(counts.sum() - counts[UNSCHEDULED])
    if not scheduled:
        return f"<rect class='cell unscheduled' {box}/>"
    done = int(counts[DONE] + counts[BACKGROUND])
    fill = _mix(COLOURS["missing"], COLOURS["done"], done / scheduled)
    failed = " has-failed" if counts[FAILED] else ""
    first = [c * k for c, k in zip(cell, (size.z, size.yx, size.yx), strict=True)]
    return (
        f"<rect class='cell agg{failed}' style='fill:{fill}' {box} data-done='{done}' "
        f"data-blocks='{scheduled}'><title>from z{first[0]}_y{first[1]}_x{first[2]}: "
        f"{done}/{scheduled} done, {int(counts[FAILED])} failed</title></rect>"
    )


def _mix(low: str, high: str, fraction: float) -> str:
    a, b = (np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)]) for c in (low, high))
    return "#" + "".join(f"{int(round(v)):02x}" for v in a + (b - a) * fraction)


# ---------------------------------------------------------------------------------------------
# throughput and stages


def throughput_bins(markers: list[DoneMarker]) -> tuple[float, list[float]]:
    """The interval length (s) and, per interval from the first block's start to the last
    block's finish, the voxels computed in it divided by its length: each block's voxels
    spread evenly over the seconds it ran (``DoneMarker.seconds``), so that a steady run looks
    steady however its blocks finish (in pairs, say). Up to ``MAX_BINS`` intervals, at most
    one per second (the markers' finish times are whole seconds); (0, []) without a span."""
    if not markers:
        return 0.0, []
    ends = np.array([datetime.fromisoformat(m.finished).timestamp() for m in markers])
    starts = ends - np.array([m.seconds for m in markers])
    start, span = float(starts.min()), float(ends.max() - starts.min())
    if span <= 0:
        return 0.0, []
    bins = max(1, min(MAX_BINS, int(span)))
    edges = start + span * np.arange(bins + 1) / bins
    overlap = np.clip(
        np.minimum(ends[:, None], edges[None, 1:]) - np.maximum(starts[:, None], edges[None, :-1]),
        0.0,
        None,
    )  # (block, interval) seconds
    lengths = ends - starts
    share = np.where(  # a block of no duration: all of it where it ends
        lengths[:, None] > 0,
        overlap / np.where(lengths > 0, lengths, 1.0)[:, None],
        np.arange(bins)[None, :] == np.minimum((ends - start) * bins // span, bins - 1)[:, None],
    )
    voxels = np.array([m.voxels for m in markers], dtype=np.float64) @ share
    width = span / bins
    return width, [float(v) / width for v in voxels]


def throughput_section(markers: list[DoneMarker]) -> str:
    width, rates = throughput_bins(markers)
    if not rates:
        return "<p class='note'>No finished blocks yet.</p>"
    w, h, left, bottom, top = 640, 240, 70, 40, 12
    unit, scale = _time_unit(width * len(rates))
    peak = max(rates) or 1.0
    xs = [left + (i + 0.5) * (w - left - 10) / len(rates) for i in range(len(rates))]
    ys = [top + (h - top - bottom) * (1 - r / peak) for r in rates]
    points = "".join(
        f"<circle class='point' cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#1565c0'>"
        f"<title>{i * width / scale:.3g}–{(i + 1) * width / scale:.3g} {unit}: "
        f"{r:.4g} voxels/s</title></circle>"
        for i, (x, y, r) in enumerate(zip(xs, ys, rates, strict=True))
    )
    bar = (w - left - 10) / len(rates)
    bars = "".join(
        f"<rect x='{x - bar / 2:.1f}' y='{y:.1f}' width='{bar:.1f}' height='{h - bottom - y:.1f}' "
        "fill='#bbdefb' stroke='#fff'/>"
        for x, y in zip(xs, ys, strict=True)
    )
    ticks = "".join(
        f"<text x='{left - 6}' y='{top + (h - top - bottom) * (1 - f) + 4:.1f}' "
        f"text-anchor='end'>{_si(peak * f)}</text>"
        for f in (0, 0.5, 1)
    ) + "".join(
        f"<text x='{left + f * (w - left - 10):.1f}' y='{h - bottom + 16}' "
        f"text-anchor='middle'>{f * width * len(rates) / scale:.3g}</text>"
        for f in (0, 0.5, 1)
    )
    return (
        f"<svg class='chart' width='{w}' height='{h}' xmlns='http://www.w3.org/2000/svg'>{bars}"
        f"<line x1='{left}' y1='{h - bottom}' x2='{w - 10}' y2='{h - bottom}' stroke='#444'/>"
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{h - bottom}' stroke='#444'/>"
        f"{points}{ticks}"
        f"<text class='x-label' x='{(w + left) / 2}' y='{h - 6}' text-anchor='middle'>"
        f"time since the first block started ({unit})</text>"
        f"<text class='y-label' x='14' y='{(h - bottom + top) / 2}' text-anchor='middle' "
        f"transform='rotate(-90 14 {(h - bottom + top) / 2})'>voxels/s</text></svg>"
        f"<p class='note'>{len(rates)} intervals of {width:.3g} s: the voxels computed in each "
        "interval (each block's spread over the seconds it ran), divided by its length.</p>"
    )


def _time_unit(seconds: float) -> tuple[str, float]:
    return ("h", 3600.0) if seconds >= 7200 else ("min", 60.0) if seconds >= 120 else ("s", 1.0)


def _si(value: float) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g}"


def stage_table(markers: list[DoneMarker]) -> str:
    """Per stage, the seconds summed over the blocks (exactly rounded: in any order) and the
    median per block, to the millisecond."""
    if not markers:
        return "<p class='note'>No finished blocks yet.</p>"
    rows = "".join(
        f"<tr class='stage-{s}'><td>{s}</td>"
        f"<td class='sum'>{math.fsum(m.timings_s[s] for m in markers):.3f}</td>"
        f"<td class='median'>{statistics.median(m.timings_s[s] for m in markers):.3f}</td></tr>"
        for s in STAGES
    )
    return (
        "<table class='stages'><tr><th>stage</th><th>sum over blocks (s)</th>"
        f"<th>median per block (s)</th></tr>{rows}</table>"
        f"<p class='note'>{len(markers):,} blocks done.</p>"
    )


# ---------------------------------------------------------------------------------------------
# thumbnails


def thumbnail_block(plan: RunPlan, markers: list[DoneMarker]) -> DoneMarker | None:
    """The inferred block whose centre is nearest the ROI's (None if none was inferred)."""
    centre = np.array(plan.roi.start) + np.array(plan.roi.shape) / 2
    inferred = [m for m in markers if not m.skipped]

    def distance(m: DoneMarker) -> float:
        box = _box(m)
        return float(np.sum((np.array(box.start) + np.array(box.shape) / 2 - centre) ** 2))

    return min(inferred, key=lambda m: (distance(m), m.block), default=None)


def _box(marker: DoneMarker) -> Box:
    return Box(marker.box["start"], marker.box["stop"])


def thumbnail_slice(plan: RunPlan, box: Box) -> Box:
    """The one-voxel-thick z-slice of ``box`` nearest the ROI's centre."""
    z = min(max(plan.roi.start[0] + plan.roi.shape[0] // 2, box.start[0]), box.stop[0] - 1)
    return Box((z, *box.start[1:]), (z + 1, *box.stop[1:]))


def thumbnails(plan: RunPlan, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The input (grey) and the prediction (grey: channel 0; RGB: channels 0-2) of the z-slice
    ``box``, every ``step``-th pixel so that the longest side is at most ``THUMB_PX``, as uint8:
    uint8 values as they are, others scaled from their minimum..maximum to 0..255."""
    from chunkflow.volumes import open_input, open_output

    settings = plan.settings
    step = ceil_div(max(box.shape[1:]), THUMB_PX)
    raw = open_input(settings.input).read(box)
    pred = open_output(settings.output).read(box)
    image = raw.reshape(-1, *box.shape[1:])[0, ::step, ::step]
    pred = pred.reshape(-1, *box.shape[1:])[:, ::step, ::step]
    shown = np.moveaxis(pred[:3], 0, -1) if pred.shape[0] >= 3 else pred[0]
    return to_uint8(image), to_uint8(shown)


def to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    low, high = float(a.min()), float(a.max())
    if high <= low:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a.astype(np.float64) - low) * (255 / (high - low))).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    """A PNG of (h, w) grey or (h, w, 3) RGB uint8 pixels (no filtering, zlib level 9)."""
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels, np.uint8).reshape(h, -1)
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if pixels.ndim == 2 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def thumbnail_section(plan: RunPlan, markers: list[DoneMarker], state: RunState) -> str:
    from chunkflow.state.output_store import needs_finish

    marker = thumbnail_block(plan, markers)
    if marker is None:
        return "<p class='note'>No inferred block yet.</p>"
    if needs_finish(plan) and not state.finish_record.exists():
        return (
            "<p class='note'>This output format is assembled after the last block "
            "(finish_output): the prediction is shown once it is.</p>"
        )
    box = thumbnail_slice(plan, _box(marker))
    try:
        images = thumbnails(plan, box)
    except (ChunkflowError, OSError) as err:  # the page is made without them, and says why
        return f"<p class='note'>The slice {box} could not be read: {html.escape(str(err))}</p>"
    figures = "".join(
        f"<figure><img id='thumb-{name}' alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(png(image)).decode()}'><figcaption>{name}</figcaption></figure>"
        for name, image in zip(("input", "prediction"), images, strict=True)
    )
    return (
        f"<div class='thumbs'>{figures}</div><p class='note'>Block {marker.block} (nearest the "
        f"ROI's centre), z-slice {box.start[0]}, y {box.start[1]}..{box.stop[1]}, "
        f"x {box.start[2]}..{box.stop[2]}, one pixel in {ceil_div(max(box.shape[1:]), THUMB_PX)} "
        "along y and x. Prediction: channel 0 grey, or channels 0-2 as RGB. Values other than "
        "uint8 are scaled from their minimum..maximum.</p>"
    )
