"""The model check before any job: its seconds and the peak memory of Snakemake's own process.

A run directory with the demo volume and a config of the residual 3D U-Net of ``unet.py`` at
``--width`` (default (32, 64, 128): 1,718,019 parameters) with ``--patch`` patches and
``--batch-size``. `snakemake --dry-run` plans, checks the model and an existing output, as every
run does before its first job; it runs ``--repeats`` times with the check's cache emptied and as
often with it kept (alternating). The difference of the medians is the check's seconds; the peak
RSS of the uncached runs (GNU time's ``%M``: a child of this large process would count this
process's memory, which it inherits until it runs Snakemake) is what the check costs the
Snakemake process, on a cluster a login node.

``--chunkflow DIR`` runs another checkout's package and workflow (e.g. a `git worktree` of an
earlier commit) with this venv: before and after, side by side.

    .venv/bin/python benchmarks/model_check.py [--width 32 64 128] [--patch 36 288 288]
        [--batch-size 1] [--repeats 3] [--chunkflow DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import path_without_slurm
from unet import UNet3D, parameter_count, write_model

from chunkflow.app.demo import write_demo

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dry_run(run_dir: Path, tree: Path, cached: bool) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `snakemake --dry-run` of ``tree``'s workflow."""
    if not cached:
        shutil.rmtree(run_dir / ".chunkflow" / "model_checks", ignore_errors=True)
    peak = run_dir / "peak_kb.txt"
    command = ["/usr/bin/time", "-f", "%M", "-o", str(peak)]
    command += [str(BIN / "snakemake"), "-s", str(tree / "workflow" / "Snakefile")]
    command += ["-d", str(run_dir), "--configfile", str(run_dir / "config.yaml")]
    command += ["--cores", "1", "--dry-run", "--quiet", "all"]
    env = {**os.environ, "PYTHONPATH": str(tree), "PATH": path_without_slurm(run_dir)}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"snakemake failed:\n{result.stderr[-3000:]}")
    return wall, int(peak.read_text().split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, nargs=3, default=[32, 64, 128])
    parser.add_argument("--patch", type=int, nargs=3, default=[36, 288, 288])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunkflow", type=Path, default=REPO, help="the checkout to run")
    args = parser.parse_args()
    width = tuple(args.width)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_demo(run_dir / "resources", (64, 512, 512))
        net_file, weights = write_model(run_dir, width)
        net = UNet3D(width=width)
        config = yaml.safe_load((args.chunkflow / "config" / "config.yaml").read_text())
        config["input"]["path"] = str(run_dir / "resources" / "raw.zarr")
        config["model"] = {
            "path": str(net_file),
            "weights": str(weights),
            "input_patch_size": args.patch,
            "output_patch_size": args.patch,
            "output_channels": 3,
        }
        config["inference"]["batch_size"] = args.batch_size
        config["block_size"] = [64, 512, 512]
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        dry_run(run_dir, args.chunkflow, cached=False)  # warm the file cache, write .snakemake
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for cached in (False, True):
                runs[cached].append(dry_run(run_dir, args.chunkflow, cached))
    walls = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    rss = {k: max(r for _, r in v) for k, v in runs.items()}
    print(
        f"U-Net width {width}: {parameter_count(net):,} parameters, patches "
        f"{'x'.join(map(str, args.patch))}, batch size {args.batch_size}, torch "
        f"{torch.__version__}, checkout {args.chunkflow}"
    )
    print(f"snakemake --dry-run, medians of {args.repeats}:")
    print(f"   model not checked yet: {walls[False]:6.2f} s, peak RSS {rss[False]:7.0f} MB")
    print(f"   check cached:          {walls[True]:6.2f} s, peak RSS {rss[True]:7.0f} MB")
    print(f"the check: {walls[False] - walls[True]:.2f} s, {rss[False] - rss[True]:.0f} MB more")


if __name__ == "__main__":
    main()
