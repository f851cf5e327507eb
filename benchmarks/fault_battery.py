"""Faults beyond issue 16's table, tried on copies of the demo run.

A full disk under the output, a read-only output store, SIGTERM to the whole run, SIGKILL and
SIGTERM of one block job while it writes. For each: how the faulty run ended, what
`chunkflow status` then said (is a damaged block ever counted done?), whether a plain rerun
(no `--unlock`, nothing deleted by hand) finished, whether `chunkflow verify` passed and whether
the output then equals a clean run's, byte for byte.

Needs root: the full disk and the read-only store are small tmpfs mounts. Takes ~15 min on two
cores. Usage:

    .venv/bin/python benchmarks/fault_battery.py [--work DIR] [--cores N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
import zarr

REPO = Path(__file__).resolve().parents[1]
CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))
OUTPUT = "out/affinities.zarr"  # relative to the run directory


@dataclass
class Outcome:
    fault: str
    faulty_run: str
    status_after: str
    rerun: str
    verify: str
    equal: str


def chunkflow(run_dir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHUNKFLOW, *args[:1], "-d", str(run_dir), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cmd(run_dir: Path, cores: int) -> list[str]:
    return [CHUNKFLOW, "run", "-d", str(run_dir), "--cores", str(cores), "--keep-going"]


def last_error(result: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed run: a job's one-line cause if Snakemake printed one."""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    for sign in ("chunkflow: error:", "Error", "error"):
        found = [line for line in lines if sign in line]
        if found:
            return found[0][:110]
    return lines[-1][:110] if lines else ""


def ended(result: subprocess.CompletedProcess) -> str:
    return "exit 0" if result.returncode == 0 else f"exit {result.returncode}: {last_error(result)}"


def make_run(root: Path, name: str, demo: Path, output: Path | None = None) -> Path:
    """A run directory of the demo config; the output at ``output`` (a link) if given."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["input"]["path"] = str(demo / "raw.zarr")
    config["model"]["path"] = str(demo / "boundary_net.pt2")
    config["output"]["path"] = OUTPUT
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "out").mkdir()
    if output is not None:
        (run_dir / "out").rmdir()
        (run_dir / "out").symlink_to(output, target_is_directory=True)
    return run_dir


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def block_jobs(run_dir: Path) -> list[int]:
    """The pids of the block jobs' Python processes (infer_block.py) working in ``run_dir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        python = "python" in Path(argv[0]).name
        if python and any(a.endswith("infer_block.py") for a in argv):
            if cwd == os.path.realpath(run_dir):
                found.append(int(pid))
    return found


def wait_for(condition: Callable[[], object], timeout: float = 300) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError("the fault's moment did not come")


def markers_done(run_dir: Path) -> int:
    return len(list((run_dir / ".chunkflow" / "blocks").glob("*/*.json")))


def finish(run_dir: Path, cores: int, clean: np.ndarray, outcome: Outcome) -> Outcome:
    """Status after the fault, then a plain rerun, verify and the comparison with ``clean``."""
    outcome.status_after = chunkflow(run_dir, "status").stdout.splitlines()[0]
    rerun = subprocess.run(run_cmd(run_dir, cores), capture_output=True, text=True, timeout=900)
    outcome.rerun = ended(rerun)
    check = chunkflow(run_dir, "verify")
    outcome.verify = (
        "passed" if check.returncode == 0 else f"exit {check.returncode}: {last_error(check)}"
    )
    if rerun.returncode == 0:
        same = np.array_equal(zarr.open_array(str(run_dir / OUTPUT), mode="r")[:], clean)
        outcome.equal = "yes" if same else "NO"
    return outcome


def kill_during_run(
    root: Path, name: str, demo: Path, cores: int, clean: np.ndarray, fault: str, kill
) -> Outcome:
    """Start the run, apply ``kill(process, run_dir)`` once a block job has started and before
    every block is done, let the run end, then rerun."""
    run_dir = make_run(root, name, demo)
    process = subprocess.Popen(
        run_cmd(run_dir, cores), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: markers_done(run_dir) >= 1 and block_jobs(run_dir))
    time.sleep(1.0)  # well into the next block's pieces
    kill(process, run_dir)
    out, err = process.communicate(timeout=900)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return finish(run_dir, cores, clean, Outcome(fault, ended(result), "", "", "", "n/a"))


def output_fault(
    root: Path, name: str, demo: Path, cores: int, clean: np.ndarray, fault: str, size: str
) -> Outcome:
    """The output on a tmpfs of ``size``: ``full`` leaves it too small; ``ro`` finishes a run,
    drops two markers and remounts the store read-only for the faulty rerun. The store is made
    large and writable again before the final rerun."""
    with tmpfs(root / f"{name}-mnt", size) as mount:
        run_dir = make_run(root, name, demo, output=mount)
        if fault.startswith("read-only"):
            first = subprocess.run(run_cmd(run_dir, cores), capture_output=True, text=True)
            assert first.returncode == 0, first.stderr[-2000:]
            for marker in sorted((run_dir / ".chunkflow" / "blocks").glob("*/*.json"))[:2]:
                marker.unlink()
            remount(mount, "ro")
        result = subprocess.run(run_cmd(run_dir, cores), capture_output=True, text=True)
        outcome = Outcome(fault, ended(result), "", "", "", "n/a")
        remount(mount, "rw,size=512m")
        return finish(run_dir, cores, clean, outcome)


def sigterm_run(process: subprocess.Popen, run_dir: Path) -> None:
    process.send_signal(signal.SIGTERM)


def sigkill_job(process: subprocess.Popen, run_dir: Path) -> None:
    os.kill(block_jobs(run_dir)[0], signal.SIGKILL)


def sigterm_job(process: subprocess.Popen, run_dir: Path) -> None:
    os.kill(block_jobs(run_dir)[0], signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the run directories here")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("fault_battery: needs root (it mounts tmpfs file systems)")
    root = args.work or Path(tempfile.mkdtemp(prefix="fault-battery-"))
    root.mkdir(parents=True, exist_ok=True)
    demo = root / "demo"
    subprocess.run([CHUNKFLOW, "demo-data", "--dir", str(demo)], check=True, capture_output=True)
    clean_dir = make_run(root, "clean", demo)
    clean_run = subprocess.run(run_cmd(clean_dir, args.cores), capture_output=True, text=True)
    assert clean_run.returncode == 0, clean_run.stderr[-2000:]
    clean = zarr.open_array(str(clean_dir / OUTPUT), mode="r")[:]
    cores, outcomes = args.cores, []
    outcomes.append(output_fault(root, "full", demo, cores, clean, "disk full (4 MB)", "4m"))
    outcomes.append(
        output_fault(root, "ro", demo, cores, clean, "read-only store, 2 blocks to do", "512m")
    )
    for name, fault, kill in (
        ("term-run", "SIGTERM to the run (snakemake)", sigterm_run),
        ("kill-job", "SIGKILL of one block job", sigkill_job),
        ("term-job", "SIGTERM of one block job", sigterm_job),
    ):
        outcomes.append(kill_during_run(root, name, demo, cores, clean, fault, kill))
    print("| fault | the faulty run | status after it | plain rerun | verify | = clean run |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        cells = (o.fault, o.faulty_run, o.status_after, o.rerun, o.verify, o.equal)
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if args.work is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
