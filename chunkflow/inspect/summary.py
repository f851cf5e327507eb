"""The run summary: done-markers aggregated into numbers a person can read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chunkflow.inspect import view
from chunkflow.plan.run_plan import RunPlan
from chunkflow.state.markers import STAGES, DoneMarker


def summarize(plan: RunPlan, markers: list[DoneMarker]) -> dict[str, Any]:
    """Totals over the finished blocks: voxels, patches, stage times, throughput."""
    job_seconds = {s: round(sum(m.timings_s[s] for m in markers), 3) for s in STAGES}
    voxels = sum(m.voxels for m in markers)
    patches = sum(m.patches for m in markers)
    ends = [datetime.fromisoformat(m.finished).timestamp() for m in markers]
    starts = [end - m.seconds for end, m in zip(ends, markers, strict=True)]
    busy = sum(m.seconds for m in markers)
    gpu = [m.ran_on["peak_gpu_memory_mb"] for m in markers if "peak_gpu_memory_mb" in m.ran_on]
    wall = max(ends) - min(starts) if markers else 0.0
    return {
        "output": plan.settings.output.path,
        "roi": plan.roi.to_json(),
        "blocks_done": len(markers),
        "blocks_total": len(plan.blocks),
        "blocks_skipped": sum(1 for m in markers if m.skipped),
        "voxels": voxels,
        "patches": patches,
        "patches_whole_roi": plan.whole_roi_patch_count(),
        "job_seconds": job_seconds,
        # older markers have no io_wait: counted as 0
        "io_wait_seconds": round(sum(m.timings_s.get("io_wait", 0.0) for m in markers), 3),
        "io_retries": sum(m.io_retries for m in markers),
        "wall_seconds": round(wall, 3),
        "voxels_per_second_wall": round(voxels / wall) if wall > 0 else None,
        "voxels_per_job_second": round(voxels / busy) if busy else None,
        "devices": sorted({m.ran_on["device"] for m in markers}),
        "peak_gpu_memory_mb": max(gpu) if gpu else None,  # the most one block held
        "neuroglancer": view.url(view.state(plan)),
    }


def skipped_note(skipped: int) -> str:
    """What follows a count of done blocks of which ``skipped`` were background ("" for none)."""
    return f" ({skipped} of them background, not inferred)" if skipped else ""


def format_summary(summary: dict[str, Any]) -> str:
    s = summary
    lines = [
        f"chunkflow: {s['blocks_done']}/{s['blocks_total']} blocks written to {s['output']}"
        + skipped_note(s["blocks_skipped"]),
        f"  ROI {s['roi']['start']} .. {s['roi']['stop']} (z, y, x), {s['voxels']:,} voxels",
        f"  {s['patches']:,} patches ({s['patches'] / max(1, s['patches_whole_roi']):.2f}x a single "
        f"whole-ROI pass) on {', '.join(s['devices']) or '-'}"
        + (
            f" (peak GPU memory of a block {s['peak_gpu_memory_mb']:,.0f} MB)"
            if s.get("peak_gpu_memory_mb")
            else ""
        ),
        "  job time: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["job_seconds"].items()),
        f"  I/O not hidden behind the compute: {s['io_wait_seconds']:.1f} s; object-store "
        f"requests retried: {s['io_retries']}",
    ]
    if s["voxels_per_second_wall"]:
        lines.append(
            f"  throughput: {s['voxels_per_second_wall'] / 1e6:.2f} Mvoxel/s wall-clock, "
            f"{s['voxels_per_job_second'] / 1e6:.2f} Mvoxel/s per job"
        )
    lines.append(
        f"  neuroglancer (output over input; `chunkflow view --serve` serves local files): "
        f"{s['neuroglancer']}"
    )
    return "\n".join(lines)
