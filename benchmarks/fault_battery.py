"""Faults an operator's bad day brings, each tried on a copy of the demo run (8 blocks).

For each fault: how the faulty run ended (or what the first plain run after it said), what
`chunkflow status` then said, and how many blocks it counted done whose output is not what a
clean run wrote (read back and compared); then the remedy, if the fault needs one (a disk
remounted, a file put back, what an error line says to do), a plain rerun (no `--unlock`, nothing
deleted by hand), `chunkflow verify` (and one more rerun and verify if it invalidated blocks), and
the output compared byte for byte with a clean run's. Each row is classified:

- CLEAN: status never counted a wrong block done, the rerun finished, verify passed and the
  output equals the clean run's;
- WRONG-BUT-DONE: a wrong block counted done that the procedure did not repair (the output then
  differs while the run says done), or status counted one done and verify let it through;
- STUCK: the rerun after the remedy did not finish;
- UNCLEAR: anything else (e.g. the output right, but verify failing).

Needs root (tmpfs mounts for the full disk and the read-only store). Takes ~25 min on two cores.
Usage:

    .venv/bin/python benchmarks/fault_battery.py [--work DIR] [--cores N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
import zarr

REPO = Path(__file__).resolve().parents[1]
CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))
OUTPUT = "out/affinities.zarr"  # relative to the run directory
STATE = ".chunkflow"
STREAMED = {"piece_size": [16, 128, 128]}  # 8 pieces a block: partial sums are carried
DAY = 24 * 3600
JOB_LINES = {"rule infer_block:", "localrule infer_block:"}  # how Snakemake starts a block job


@dataclass
class Outcome:
    fault: str
    faulty_run: str = ""
    status_after: str = ""
    wrong_done: int = 0  # blocks status counted done whose output is not the clean run's
    remedy: str = "none"
    rerun: str = ""
    verify: str = ""
    equal: str = "n/a"
    verdict: str = ""


@dataclass
class Battery:
    root: Path
    demo: Path
    cores: int
    clean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clean_streamed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clean_dir: Path | None = None

    # -- run directories ---------------------------------------------------------------------

    def make_run(self, name: str, output: Path | None = None, **changes) -> Path:
        """A run directory of the demo config (``changes`` at the top level or as
        ``section.key``); its output folder a link to ``output`` if given."""
        run_dir = self.root / name
        run_dir.mkdir(parents=True)
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        config["input"]["path"] = str(self.demo / "raw.zarr")
        config["model"]["path"] = str(self.demo / "boundary_net.pt2")
        config["output"]["path"] = OUTPUT
        write_config(run_dir, config, **changes)
        if output is None:
            (run_dir / "out").mkdir()
        else:
            (run_dir / "out").symlink_to(output, target_is_directory=True)
        return run_dir

    def finished_copy(self, name: str) -> Path:
        """A copy of the clean, finished run (its Snakemake records and file times too)."""
        assert self.clean_dir is not None
        run_dir = self.root / name
        shutil.copytree(self.clean_dir, run_dir, symlinks=True)
        return run_dir

    def own_file(self, run_dir: Path, key: str) -> Path:
        """A private copy of the demo's input or model for ``run_dir`` (``input``/``model``),
        set in its config: a fault may change it."""
        source = Path(read_config(run_dir)[key]["path"])
        copy = run_dir / f"own-{source.name}"
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
        write_config(run_dir, read_config(run_dir), **{f"{key}.path": str(copy)})
        return copy

    # -- runs --------------------------------------------------------------------------------

    def run(self, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            run_cmd(run_dir, self.cores, *extra), capture_output=True, text=True, timeout=1800
        )

    def start(self, run_dir: Path) -> subprocess.Popen:
        return subprocess.Popen(
            run_cmd(run_dir, self.cores), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait(self, process: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = process.communicate(timeout=1800)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    # -- the procedure after a fault ---------------------------------------------------------

    def reference(self, run_dir: Path) -> np.ndarray:
        """The clean run's output for ``run_dir``'s piece size (blocks streamed in pieces sum
        their patches in another order: a few uint8 voxels differ by 1)."""
        return self.clean_streamed if "piece_size" in read_config(run_dir) else self.clean

    def wrong_done(self, run_dir: Path) -> int:
        """How many blocks `status` counts done whose output differs from the clean run's (an
        unreadable block counts as different)."""
        import chunkflow
        from chunkflow.state.output_store import marker_census

        clean = self.reference(run_dir)
        with contextlib.chdir(run_dir), quiet():
            try:
                plan = chunkflow.make_plan(chunkflow.load_config("config.yaml"))
                done = marker_census(plan).done
            except chunkflow.ChunkflowError:
                return 0  # status refuses: nothing counted done
            wrong = 0
            for marker in done:
                box = chunkflow.Box(marker.box["start"], marker.box["stop"])
                try:
                    data = zarr.open_array(OUTPUT, mode="r")[(slice(None), *box.slices())]
                except Exception:  # noqa: BLE001 (whatever a damaged store raises)
                    wrong += 1
                    continue
                wrong += not np.array_equal(data, clean[(slice(None), *box.slices())])
        return wrong

    def finish(
        self,
        run_dir: Path,
        outcome: Outcome,
        remedy: tuple[str, Callable[[], object]] | None = None,
        first: subprocess.CompletedProcess | None = None,
    ) -> Outcome:
        """The procedure after the fault (see the module's docstring); ``remedy``: what it
        does, and doing it."""
        if first is None:  # the fault was made on a run at rest: the first plain run after it
            first = self.run(run_dir)
        outcome.faulty_run = outcome.faulty_run or ended(first)
        outcome.status_after = status_line(run_dir)
        outcome.wrong_done = self.wrong_done(run_dir)
        if remedy is not None:
            outcome.remedy, fix = remedy
            fix()
        rerun = self.run(run_dir)
        outcome.rerun = ended(rerun)
        check = chunkflow(run_dir, "verify")
        outcome.verify = "passed" if check.returncode == 0 else f"exit {check.returncode}"
        if "invalidated" in check.stdout:
            rerun = self.run(run_dir)
            again = chunkflow(run_dir, "verify")
            outcome.verify += f" ({invalidated(check)} invalidated); rerun, verify " + (
                "passed" if again.returncode == 0 else f"exit {again.returncode}"
            )
            outcome.rerun += f"; after verify: {ended(rerun)}"
            check = again
        if rerun.returncode == 0:
            output = zarr.open_array(str(run_dir / OUTPUT), mode="r")[:]
            same = np.array_equal(output, self.reference(run_dir))
            outcome.equal = "yes" if same else "NO"
        outcome.verdict = verdict(outcome, rerun.returncode == 0, check.returncode == 0)
        return outcome


def verdict(o: Outcome, finished: bool, verified: bool) -> str:
    if not finished:
        return "STUCK"
    if o.equal == "NO":
        return "WRONG-BUT-DONE"
    if o.wrong_done and "invalidated" not in o.verify:
        return "WRONG-BUT-DONE"  # counted done, and no check found it
    return "CLEAN" if verified and o.equal == "yes" else "UNCLEAR"


# -- helpers ------------------------------------------------------------------------------------


def read_config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def write_config(run_dir: Path, config: dict, **changes) -> None:
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run_cmd(run_dir: Path, cores: int, *extra: str) -> list[str]:
    return [CHUNKFLOW, "run", "-d", str(run_dir), "--cores", str(cores), "--keep-going", *extra]


def chunkflow(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHUNKFLOW, *args[:1], "-d", str(run_dir), *args[1:]],
        capture_output=True,
        text=True,
        timeout=900,
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import logging

    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def last_error(result: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed run: a one-line cause if one was printed."""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    for sign in ("chunkflow: error:", "Error", "error"):
        found = [line for line in lines if sign in line]
        if found:
            return found[-1 if sign == "chunkflow: error:" else 0][:150]
    return lines[-1][:150] if lines else ""


def ended(result: subprocess.CompletedProcess) -> str:
    text = result.stdout + result.stderr
    if result.returncode == 0:
        if "Nothing to be done" in text:
            return "exit 0, nothing to do"
        jobs = sum(line.strip() in JOB_LINES for line in text.splitlines())
        return f"exit 0, {jobs} block job(s)"
    return f"exit {result.returncode}: {last_error(result)}"


def status_line(run_dir: Path) -> str:
    result = chunkflow(run_dir, "status")
    if result.returncode != 0:
        return f"exit {result.returncode}: {last_error(result)}"
    lines = result.stdout.splitlines()
    notes = [line.strip() for line in lines[1:] if "failed" in line and ":" in line]
    return "; ".join([lines[0], *notes[:1]])[:150]


def invalidated(check: subprocess.CompletedProcess) -> int:
    return sum("(marker invalidated)" in line for line in check.stdout.splitlines())


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
        time.sleep(0.1)
    raise TimeoutError("the fault's moment did not come")


def markers(run_dir: Path) -> list[Path]:
    return sorted((run_dir / STATE / "blocks").glob("*/*.json"))


def output_chunks(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / OUTPUT / "c").rglob("*") if p.is_file())


def progress_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / STATE / "pieces").glob("*/progress.json"))


def touch(paths: list[Path], seconds: float) -> None:
    when = time.time() + seconds
    for path in paths:
        os.utime(path, (when, when))


# -- faults during a run ------------------------------------------------------------------------


def during_run(b: Battery, name: str, fault: str, act, streamed: bool = False) -> Outcome:
    """Start a fresh run, ``act(process, run_dir)`` once a block is done and a block job is in
    its pieces, let the run end, then the procedure."""
    run_dir = b.make_run(name, **(STREAMED if streamed else {}))
    process = b.start(run_dir)
    wait_for(lambda: markers(run_dir) and block_jobs(run_dir))
    if streamed:
        wait_for(lambda: progress_files(run_dir))
    else:
        time.sleep(1.0)  # well into the next block
    act(process, run_dir)
    return b.finish(run_dir, Outcome(fault), first=b.wait(process))


def kill_job(sig: int):
    return lambda process, run_dir: os.kill(block_jobs(run_dir)[0], sig)


def kill_run(sig: int):
    return lambda process, run_dir: process.send_signal(sig)


def model_replaced_mid_run(b: Battery) -> Outcome:
    run_dir = b.make_run("model-swap")
    model = b.own_file(run_dir, "model")
    kept = model.read_bytes()
    process = b.start(run_dir)
    wait_for(lambda: markers(run_dir))
    other = b.root / "other-model.pt2"
    if not other.exists():  # the demo model with other weights: the same file name and size
        make_other_model(model, other)
    shutil.copy(other, model)
    outcome = Outcome("model file replaced by another mid-run, then put back")
    put_back = ("the model put back", lambda: model.write_bytes(kept))
    return b.finish(run_dir, outcome, put_back, first=b.wait(process))


def make_other_model(model: Path, other: Path) -> None:
    """The demo network with its affinity weights scaled, saved as the demo saves its own."""
    import torch

    from chunkflow.app import demo

    net = demo.boundary_net()
    with torch.no_grad():
        net.affinity.weight.mul_(1.1)
    demo.boundary_net = lambda: net
    demo._save_boundary_net(other)


def output_fault(b: Battery, name: str, fault: str, size: str) -> Outcome:
    """The output on a tmpfs of ``size``: ``full`` leaves it too small; the read-only case
    finishes a run, drops two markers and remounts the store read-only for the faulty run. The
    remedy makes the store large and writable again."""
    with tmpfs(b.root / f"{name}-mnt", size) as mount:
        run_dir = b.make_run(name, output=mount)
        if fault.startswith("read-only"):
            assert b.run(run_dir).returncode == 0
            for marker in markers(run_dir)[:2]:
                marker.unlink()
            remount(mount, "ro")
        remedy = ("store remounted large and writable", lambda: remount(mount, "rw,size=512m"))
        return b.finish(run_dir, Outcome(fault), remedy)


def killed_mid_block(b: Battery, name: str) -> Path:
    """A streamed run whose block jobs were all SIGKILLed (and the run with them) once a
    block's partial sums are carried: its piece state is on disk."""
    run_dir = b.make_run(name, **STREAMED)
    process = b.start(run_dir)
    wait_for(lambda: list((run_dir / STATE / "pieces").glob("*/*.npy")) and progress_files(run_dir))
    process.send_signal(signal.SIGKILL)
    for pid in block_jobs(run_dir):
        os.kill(pid, signal.SIGKILL)
    process.wait()
    return run_dir


def piece_state_fault(b: Battery, name: str, fault: str, damage: Callable[[Path], None]) -> Outcome:
    run_dir = killed_mid_block(b, name)
    (victim,) = progress_files(run_dir)[:1]
    damage(victim)
    return b.finish(run_dir, Outcome(fault))


def carried(progress: Path) -> Path:
    return sorted(progress.parent.glob("*.npy"))[0]


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))


def taken_over_and_back(b: Battery) -> Outcome:
    """A streamed run killed mid-block; a second run directory takes its output over
    (``output.replace``, another overlap) and finishes; the first takes it back."""
    first = killed_mid_block(b, "take-back")
    second = b.make_run("take-over", **{"inference.overlap": [4, 48, 48], "output.replace": True})
    (second / "out").rmdir()
    (second / "out").symlink_to(first / "out", target_is_directory=True)
    taking = b.run(second)
    outcome = Outcome("output taken over by another run mid-block, then taken back")
    outcome.faulty_run = f"other run: {ended(taking)}"
    back = {"output.replace": True}
    remedy = (
        "output.replace: true (as the error says)",
        lambda: write_config(first, read_config(first), **back),
    )
    return b.finish(first, outcome, remedy)


def same_text_other_data(b: Battery) -> Outcome:
    """Two run directories, one config text with a relative input path; the second's input is
    other data of the same shape; both write one (absolute) output."""
    first = b.make_run("same-text-1")
    shutil.copytree(b.demo / "raw.zarr", first / "raw.zarr")
    write_config(first, read_config(first), **{"input.path": "raw.zarr"})
    write_config(first, read_config(first), **{"output.path": str(first / OUTPUT)})
    assert b.run(first).returncode == 0
    second = b.root / "same-text-2"
    second.mkdir()
    shutil.copy(first / "config.yaml", second / "config.yaml")
    raw = zarr.open_array(str(b.demo / "raw.zarr"), mode="r")
    other = zarr.create_array(
        str(second / "raw.zarr"), shape=raw.shape, chunks=raw.chunks, dtype=raw.dtype
    )
    other.attrs.update(raw.attrs.asdict())
    other[:] = 255 - raw[:]
    refused = b.run(second)
    outcome = Outcome("2 run dirs, same config text, other data behind the relative input path")
    outcome.faulty_run = f"second: {ended(refused)}"
    return b.finish(first, outcome)


def missing_input_chunk(b: Battery) -> Outcome:
    run_dir = b.make_run("input-chunk")
    raw = b.own_file(run_dir, "input")
    chunks = sorted(p for p in (raw / "c").rglob("*") if p.is_file())
    chunk = chunks[len(chunks) // 2]
    kept = chunk.read_bytes()
    chunk.unlink()
    outcome = Outcome("an input chunk missing (incomplete copy), then copied")
    return b.finish(run_dir, outcome, ("the chunk copied", lambda: chunk.write_bytes(kept)))


def config_fault(b: Battery, name: str, fault: str, **changes) -> Outcome:
    """A fresh run with a bad setting; the remedy puts the demo's back."""
    run_dir = b.make_run(name)
    good = read_config(run_dir)
    write_config(run_dir, read_config(run_dir), **changes)
    return b.finish(
        run_dir, Outcome(fault), ("setting put back", lambda: write_config(run_dir, good))
    )


def empty_model(b: Battery) -> Outcome:
    run_dir = b.make_run("empty-model")
    model = b.own_file(run_dir, "model")
    kept = model.read_bytes()
    model.write_bytes(b"")
    put_back = ("the model put back", lambda: model.write_bytes(kept))
    return b.finish(run_dir, Outcome("model file empty"), put_back)


# -- faults on a finished run ---------------------------------------------------------------


def at_rest(b: Battery, name: str, fault: str, act: Callable[[Path], object]) -> Outcome:
    """``act`` on a copy of the finished clean run, then the procedure."""
    run_dir = b.finished_copy(name)
    act(run_dir)
    return b.finish(run_dir, Outcome(fault))


def verified_then_changed(run_dir: Path) -> None:
    assert chunkflow(run_dir, "verify").returncode == 0
    chunks = output_chunks(run_dir)
    shutil.copy(chunks[3], chunks[2])  # another chunk's bytes: a valid chunk, wrong values


def state_dated(days: float) -> Callable[[Path], None]:
    """Every file of the state dated ``days`` ahead, and a block to do."""

    def act(run_dir: Path) -> None:
        markers(run_dir)[0].unlink()
        touch(list((run_dir / STATE).rglob("*")), days * DAY)

    return act


def model_dated_ahead(b: Battery) -> Callable[[Path], None]:
    """The run's own copy of the model dated a day ahead, and a block to do."""

    def act(run_dir: Path) -> None:
        markers(run_dir)[0].unlink()
        touch([b.own_file(run_dir, "model")], DAY)

    return act


def marker_lies(run_dir: Path) -> None:
    path = markers(run_dir)[0]
    data = json.loads(path.read_text())
    data["output_sha256"] = "0" * 64
    path.write_text(json.dumps(data))


def damaged_store(b: Battery) -> Outcome:
    run_dir = b.finished_copy("store-meta")
    (run_dir / OUTPUT / "zarr.json").unlink()
    aside = run_dir / "out" / "affinities.damaged.zarr"
    remedy = ("moved aside, as the error line says", lambda: (run_dir / OUTPUT).rename(aside))
    return b.finish(run_dir, Outcome("output store's zarr.json deleted"), remedy)


def settings_changed_and_back(b: Battery) -> Outcome:
    run_dir = b.finished_copy("settings-back")
    good = read_config(run_dir)
    write_config(run_dir, read_config(run_dir), **{"inference.overlap": [4, 48, 48]})
    changed = b.run(run_dir)
    write_config(run_dir, good)
    outcome = Outcome("overlap changed and run, then changed back")
    outcome.faulty_run = f"changed: {ended(changed)}"
    return b.finish(run_dir, outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the run directories here")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run the faults whose names start so")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("fault_battery: needs root (it mounts tmpfs file systems)")
    root = args.work or Path(tempfile.mkdtemp(prefix="fault-battery-"))
    root.mkdir(parents=True, exist_ok=True)
    demo = root / "demo"
    subprocess.run([CHUNKFLOW, "demo-data", "--dir", str(demo)], check=True, capture_output=True)
    b = Battery(root, demo, args.cores)
    b.clean_dir = b.make_run("clean")
    assert b.run(b.clean_dir).returncode == 0
    b.clean = zarr.open_array(str(b.clean_dir / OUTPUT), mode="r")[:]
    streamed = b.make_run("clean-streamed", **STREAMED)
    assert b.run(streamed).returncode == 0
    b.clean_streamed = zarr.open_array(str(streamed / OUTPUT), mode="r")[:]
    out = lambda r: r / OUTPUT  # noqa: E731
    faults: dict[str, Callable[[], Outcome]] = {
        # during a run
        "full": lambda: output_fault(b, "full", "disk full under the output (4 MB)", "4m"),
        "ro": lambda: output_fault(b, "ro", "read-only output store, 2 blocks to do", "512m"),
        "term-run": lambda: during_run(b, "term-run", "SIGTERM to the run", kill_run(15)),
        "kill-run": lambda: during_run(b, "kill-run", "SIGKILL to the run", kill_run(9)),
        "kill-job": lambda: during_run(b, "kill-job", "SIGKILL of a block job", kill_job(9)),
        "term-job": lambda: during_run(b, "term-job", "SIGTERM of a block job", kill_job(15)),
        "segv-job": lambda: during_run(b, "segv-job", "SIGSEGV in a block job", kill_job(11)),
        "kill-piece": lambda: during_run(
            b, "kill-piece", "SIGKILL of a job mid-block (pieces)", kill_job(9), streamed=True
        ),
        "model-swap": lambda: model_replaced_mid_run(b),
        # piece state of a block killed mid-way, damaged
        "carry-flip": lambda: piece_state_fault(
            b, "carry-flip", "carried sum: a byte flipped", lambda p: flip(carried(p))
        ),
        "carry-cut": lambda: piece_state_fault(
            b, "carry-cut", "carried sum truncated", lambda p: carried(p).write_bytes(b"\x93NUMPY")
        ),
        "carry-empty": lambda: piece_state_fault(
            b, "carry-empty", "carried sum empty", lambda p: carried(p).write_bytes(b"")
        ),
        "carry-gone": lambda: piece_state_fault(
            b, "carry-gone", "carried sum deleted", lambda p: carried(p).unlink()
        ),
        "progress-edit": lambda: piece_state_fault(
            b,
            "progress-edit",
            "piece progress edited (3 more pieces)",
            lambda p: p.write_text(
                json.dumps(
                    {
                        **json.loads(p.read_text()),
                        "written": 3 + json.loads(p.read_text())["written"],
                    }
                )
            ),
        ),
        "progress-cut": lambda: piece_state_fault(
            b, "progress-cut", "piece progress truncated", lambda p: p.write_text('{"wri')
        ),
        "take-back": lambda: taken_over_and_back(b),
        "same-text": lambda: same_text_other_data(b),
        "input-chunk": lambda: missing_input_chunk(b),
        "batch": lambda: config_fault(
            b, "batch", "inference.batch_size: 100000", **{"inference.batch_size": 100000}
        ),
        "inside": lambda: config_fault(
            b,
            "inside",
            "output.path inside the input",
            **{"output.path": str(demo / "raw.zarr" / "out.zarr")},
        ),
        "empty-model": lambda: empty_model(b),
        # on a finished run
        "marker-gone": lambda: at_rest(
            b, "marker-gone", "a done-marker deleted", lambda r: markers(r)[0].unlink()
        ),
        "marker-cut": lambda: at_rest(
            b, "marker-cut", "a done-marker truncated", lambda r: markers(r)[0].write_text('{"blo')
        ),
        "marker-lies": lambda: at_rest(
            b, "marker-lies", "a done-marker's checksum edited", marker_lies
        ),
        "chunk-gone": lambda: at_rest(
            b, "chunk-gone", "an output chunk deleted", lambda r: output_chunks(r)[5].unlink()
        ),
        "chunk-cut": lambda: at_rest(
            b,
            "chunk-cut",
            "an output chunk truncated",
            lambda r: output_chunks(r)[5].write_bytes(b"\x28\xb5"),
        ),
        "verified-changed": lambda: at_rest(
            b,
            "verified-changed",
            "verify passed, then an output chunk changed",
            verified_then_changed,
        ),
        "store-meta": lambda: damaged_store(b),
        "output-gone": lambda: at_rest(
            b, "output-gone", "the output store deleted", lambda r: shutil.rmtree(out(r))
        ),
        "state-gone": lambda: at_rest(
            b, "state-gone", "the state directory deleted", lambda r: shutil.rmtree(r / STATE)
        ),
        "snakemake-gone": lambda: at_rest(
            b,
            "snakemake-gone",
            "Snakemake's records (.snakemake/) deleted",
            lambda r: shutil.rmtree(r / ".snakemake"),
        ),
        "model-future": lambda: at_rest(
            b, "model-future", "model file dated a day ahead, a block to do", model_dated_ahead(b)
        ),
        "input-future": lambda: at_rest(
            b,
            "input-future",
            "input metadata dated a day ahead",
            lambda r: touch([Path(read_config(r)["input"]["path"], "zarr.json")], DAY),
        ),
        "state-future": lambda: at_rest(
            b, "state-future", "every state file dated a day ahead, a block to do", state_dated(1)
        ),
        "state-past": lambda: at_rest(
            b, "state-past", "every state file dated a day back, a block to do", state_dated(-1)
        ),
        "settings-back": lambda: settings_changed_and_back(b),
    }
    chosen = [n for n in faults if not args.only or any(n.startswith(o) for o in args.only)]
    outcomes = []
    for name in chosen:
        print(f"fault_battery: {name}", file=sys.stderr, flush=True)
        try:
            outcomes.append(faults[name]())
        except Exception as err:  # noqa: BLE001 (a fault the battery could not stage: a row)
            outcomes.append(Outcome(name, faulty_run=f"battery failed: {err!r}"[:150]))
    # the input's metadata was dated ahead in place: put it back for a later run
    touch([demo / "raw.zarr" / "zarr.json"], 0)
    print(
        "| fault | the faulty run | `status` after it | counted done, wrong | remedy | plain rerun "
        "| `verify` | = clean run | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        cells = (
            o.fault,
            o.faulty_run,
            o.status_after,
            str(o.wrong_done),
            o.remedy,
            o.rerun,
            o.verify,
            o.equal,
            o.verdict,
        )
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    counts = {
        v: sum(o.verdict == v for o in outcomes)
        for v in ("CLEAN", "WRONG-BUT-DONE", "STUCK", "UNCLEAR")
    }
    print(f"\n{len(outcomes)} faults: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.work is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
