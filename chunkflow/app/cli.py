"""The `chunkflow` command: plan, create the output, run blocks by hand, report, make the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

import chunkflow
from chunkflow.app.entry import run_main
from chunkflow.errors import ChunkflowError

log = logging.getLogger("chunkflow")


def _plan(args: argparse.Namespace, of_a_run: bool = False):
    """The plan of ``args.config``; with ``of_a_run``, a one-line error first when no run has
    started there (its state directory does not exist)."""
    settings = chunkflow.load_config(args.config)  # config errors first, before heavier imports
    if of_a_run:
        from chunkflow.state.run_state import require_run

        require_run(settings.state_dir)  # before the plan reads input and model
    return chunkflow.make_plan(settings)


def cmd_plan(args: argparse.Namespace) -> None:
    given = args.voxels_per_second is not None
    if args.job_hours <= 0 or args.max_jobs <= 0 or (given and args.voxels_per_second <= 0):
        raise ChunkflowError("--job-hours, --voxels-per-second and --max-jobs must be positive")
    plan = _plan(args)
    from chunkflow.plan import costs as cost
    from chunkflow.state.model_facts import check_before_jobs

    # the model's and the existing output's mistakes, first; `plan` writes nothing (no cache)
    facts = check_before_jobs(plan, record=False)
    s, c = plan.settings, cost.plan_costs(plan)
    rate = args.voxels_per_second if given else s.job_voxels_per_second
    source = "--voxels-per-second" if given else "job.voxels_per_second"
    target = cost.JobTarget(args.job_hours, rate, args.max_jobs)
    listed = 100_000  # the most blocks --blocks lists: no accidental flood of a terminal
    if args.blocks and c.blocks > listed:
        raise ChunkflowError(
            f"--blocks would list {c.blocks:,} blocks (at most {listed:,}); "
            "leave it out, or plan a smaller roi"
        )
    print(f"input   {s.input.path}: {plan.input_info.bounds} (z, y, x), {plan.input_info.dtype}")
    print(f"roi     {plan.roi}, {plan.roi.size:,} voxels")
    masked = f", {c.blocks:,} of them in the mask {s.mask.path}" if s.mask else ""
    seconds, memory = cost.snakemake_planning(c.blocks)
    print(
        f"blocks  {len(plan.grid):,} = {' x '.join(map(str, plan.grid.shape))} of "
        f"{list(s.block_size)}{masked}; one job each, `snakemake -n` "
        f"~{cost.format_seconds(seconds)} and {cost.format_bytes(memory)} to plan them"
    )
    low, high = c.patches_per_block
    print(
        f"patches {c.patches:,} in all, {low}..{high} per block; a single whole-ROI pass needs "
        f"{c.whole_roi_patches:,} ({c.cost_factor:.2f}x), placement {s.inference.placement}"
    )
    low, high = map(cost.format_bytes, c.read_bytes_per_block)
    print(
        f"read    {cost.format_bytes(c.read_bytes)} of input "
        f"({c.read_bytes / c.roi_input_bytes:.2f}x the ROI's), {low}..{high} per block, "
        f"in pieces of {list(plan.piece_size)}"
    )
    if c.output_voxel_bytes is None:
        print(f"write   {c.written_voxels:,} voxels per channel (model.output_channels unset)")
    else:
        total, high = (
            cost.format_bytes(voxels * c.output_voxel_bytes)
            for voxels in (c.written_voxels, c.written_voxels_per_block)
        )
        print(f"write   {total}, up to {high} per block")
    shards = f", shards {list(s.output.shard_size)}" if s.output.shard_size else ""
    print(f"output  {s.output.path}: {s.output.dtype}, chunks {list(s.output.chunk_size)}{shards}")
    print(
        f"model   {s.model.path}: {facts.output_channels} output channels, patches "
        f"{list(plan.geometry.input_size)} -> {list(plan.geometry.output_size)}, batches of "
        f"{s.inference.batch_size} checked on zero patches"
    )
    if plan.package is not None:
        given = s.model.statistics or {}
        values = {k: v for k, v in given.items() if k != "percentiles"}
        values |= {f"p{k}": v for k, v in given.get("percentiles", {}).items()}
        statistics = ", ".join(f"{k} {v:.6g}" for k, v in values.items())
        print(
            f"package {plan.package.name!r}: {s.model.weights_format} weights, its test "
            f"reproduced; padding {s.input.padding}"
            + (f"; input statistics {statistics}" if statistics else "")
        )
    print(
        f"job     ~{cost.format_bytes(c.job_memory_bytes)} of memory, "
        f"~{cost.format_seconds(target.job_seconds(s.block_size))} at "
        f"{rate:.3g} voxels/s ({source}, an estimate: `chunkflow summary` measures it)"
    )
    advice = cost.recommend_block_size(
        plan.roi.shape, plan.storage_unit, plan.geometry.stride, target
    )
    jobs = cost.block_count(plan.roi.shape, advice)
    print(
        f"advice  block_size {list(advice)}: {jobs:,} job{'s' * (jobs != 1)} "
        f"over the ROI, ~{cost.format_seconds(target.job_seconds(advice))} per job "
        f"(--job-hours {args.job_hours:g}, --max-jobs {args.max_jobs:,})"
    )
    if c.blocks > args.max_jobs:
        print(
            f"warning: {c.blocks:,} block jobs, more than --max-jobs {args.max_jobs:,}: "
            f"`snakemake -n` would take ~{cost.format_seconds(seconds)} and "
            f"~{cost.format_bytes(memory)} to plan them; use a larger block_size (advice above)",
            file=sys.stderr,
        )
    if args.blocks:
        for block in plan.blocks if s.mask else plan.grid:
            print(f"  {block.id}  {block.box}  {c.block_patches(block.index)} patches")


def cmd_create_output(args: argparse.Namespace) -> None:
    from chunkflow.app import actions

    plan = _plan(args)
    print(actions.create_output(plan, chunkflow.RunState.of(plan)))
    if args.record:
        shutil.copyfile(chunkflow.RunState.of(plan).output_record(), args.record)


def cmd_finish_output(args: argparse.Namespace) -> None:
    from chunkflow.app import actions

    plan = _plan(args)
    print(actions.finish_output(plan, chunkflow.RunState.of(plan)))
    if args.record:
        shutil.copyfile(chunkflow.RunState.of(plan).finish_record, args.record)


def cmd_run_block(args: argparse.Namespace) -> None:
    from chunkflow.app import actions

    plan = _plan(args)
    block_ids = [Path(b).stem if b.endswith(".json") else b for b in args.block]
    for line in actions.compute_blocks(
        plan, block_ids, chunkflow.RunState.of(plan), args.expect_fingerprint
    ):
        print(line)


def cmd_status(args: argparse.Namespace) -> None:
    from chunkflow.inspect.status import format_status, run_status

    print(format_status(run_status(_plan(args, of_a_run=True)), args.show))


DRY_RUN = {"-n", "--dry-run", "--dryrun"}


def cmd_run(args: argparse.Namespace) -> None:
    from chunkflow.app.run_dir import (
        config_file,
        record_snakemake,
        snakemake_command,
        snakemake_record,
        unlock_if_stale,
    )
    from chunkflow.config import load_yaml

    directory = args.directory
    path = config_file(directory, args.config)
    config = load_yaml(path)  # a missing or broken config: one line here, not a traceback
    command = snakemake_command(directory, path, args.profile, args.snakemake_args)
    if not DRY_RUN.intersection(args.snakemake_args):  # a dry run takes no lock
        record = snakemake_record(directory, config)
        if note := unlock_if_stale(directory, record, command):
            print(f"chunkflow: {note}", file=sys.stderr, flush=True)
        record_snakemake(record)
    print(f"chunkflow: {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # Snakemake itself: its signals, its lock, its exit status


def cmd_summary(args: argparse.Namespace) -> None:
    from chunkflow.app import actions

    plan = _plan(args)
    print(actions.summary(plan, chunkflow.RunState.of(plan), args.json, args.text))


def cmd_report(args: argparse.Namespace) -> None:
    from chunkflow.app import actions

    plan = _plan(args, of_a_run=True)  # as status: no run, no report
    print(actions.report(plan, chunkflow.RunState.of(plan), args.out))


def cmd_verify(args: argparse.Namespace) -> None:
    from chunkflow.inspect.verify import VerifyOptions, run_verify

    options = VerifyOptions(
        args.jobs, args.sample, args.seed, args.inputs, args.invalidate_changed_inputs, args.again
    )
    status = run_verify(_plan(args), options, args.record)
    if status:
        raise SystemExit(status)  # blocks with problems: listed, and the summary says so


def cmd_view(args: argparse.Namespace) -> None:
    from chunkflow.inspect import view

    plan = _plan(args)
    httpd, base = view.server(plan, args.port) if args.serve else (None, None)
    for line in view.left_out(plan, base):
        print(f"chunkflow: {line}", file=sys.stderr)
    state = view.state(plan, base)
    print(json.dumps(state, indent=1) if args.json else view.url(state), flush=True)
    if httpd is not None:
        print(f"serving the local volumes at {base}; Ctrl-C stops", file=sys.stderr)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            httpd.server_close()


def cmd_demo_data(args: argparse.Namespace) -> None:
    from chunkflow.app.demo import write_demo

    raw, model = write_demo(args.dir)
    print(f"demo volume {raw}\ndemo model  {model}")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from chunkflow.engine.onnx_export import export_onnx

    difference = export_onnx(
        args.model, args.out, args.input_patch_size, args.channels, args.weights, args.opset
    )
    print(f"wrote {args.out}; ONNX Runtime vs torch on a random batch: max |diff| {difference:.1e}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chunkflow", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, **kwargs) -> argparse.ArgumentParser:
        cp = sub.add_parser(name, help=help, description=help, **kwargs)
        cp.set_defaults(func=func)
        if name not in ("demo-data", "export-onnx"):
            cp.add_argument(
                "-d",
                "--directory",
                default=".",
                metavar="RUN_DIR",
                help="the run directory, as snakemake's -d: relative paths in the config are "
                "taken from it (default: the current directory)",
            )
            cp.add_argument(
                *(() if name == "run" else ("-c",)),  # in `run`, -c is snakemake's --cores
                "--config",
                help="config YAML (default: config.yaml, or else config/config.yaml, in the run "
                "directory)",
            )
        return cp

    pl = command("plan", cmd_plan, "show the block grid, its costs and a block size to use")
    pl.add_argument("--blocks", action="store_true", help="list every block")
    pl.add_argument("--job-hours", type=float, default=1.0, help="target job length (default 1)")
    pl.add_argument(
        "--voxels-per-second",
        type=float,
        help="output voxels one job writes per second (default: the config's "
        "job.voxels_per_second, 5e7 unless set: an assumption for a 3D U-Net on one GPU; "
        "`chunkflow summary` measures it, Mvoxel/s per job)",
    )
    pl.add_argument(
        "--max-jobs",
        type=int,
        default=20_000,
        help="most block jobs to plan (default 20000: a minute of `snakemake -n`)",
    )
    command(
        "create-output", cmd_create_output, "create the output store (or check an existing one)"
    ).add_argument("--record", type=_here, help="also write the output's metadata as JSON here")
    command(
        "finish-output", cmd_finish_output, "make the output whole after the blocks (HDF5: VDS)"
    ).add_argument("--record", type=_here, help="also write a JSON record here")
    rb = command("run-block", cmd_run_block, "compute blocks by id, without Snakemake")
    rb.add_argument(
        "block", nargs="+", help="block ids such as z0_y1_x2, or their done-marker paths (*.json)"
    )
    rb.add_argument("--expect-fingerprint", help="refuse to run if the settings hash differs")
    command(
        "status",
        cmd_status,
        "blocks done, running, failed and missing; throughput, ETA, slowest and failed blocks",
    ).add_argument(
        "--show",
        type=_count_or_all,
        default=10,
        metavar="N",
        help="list at most N blocks of each kind (default 10; all: every one)",
    )
    rn = command(
        "run",
        cmd_run,
        "run the workflow: snakemake -s <this checkout's workflow/Snakefile> -d RUN_DIR "
        "--configfile CONFIG [--profile DIR], and any other snakemake arguments (e.g. -n)",
        allow_abbrev=False,  # a snakemake option is never taken for a prefix of ours
    )
    rn.add_argument("--profile", metavar="DIR", help="snakemake profile (e.g. profiles/slurm)")
    sm = command("summary", cmd_summary, "aggregate the done-markers")
    sm.add_argument("--json", type=_here, help="also write the summary as JSON here")
    sm.add_argument("--text", type=_here, help="also write the summary text here")
    command(
        "report", cmd_report, "write the HTML report: block map, throughput, stages, thumbnails"
    ).add_argument("--out", type=_here, help="the HTML file (default: <state_dir>/report.html)")
    vf = command(
        "verify",
        cmd_verify,
        "re-read finished blocks, check them against their done-markers, invalidate damaged ones",
    )
    vf.add_argument("--jobs", type=int, default=4, help="blocks checked at once (default 4)")
    vf.add_argument(
        "--sample", type=float, default=1.0, help="check this fraction of the finished blocks"
    )
    vf.add_argument("--seed", type=int, default=0, help="which blocks --sample picks (default 0)")
    vf.add_argument("--inputs", action="store_true", help="also check each block's input digest")
    vf.add_argument(
        "--invalidate-changed-inputs",
        action="store_true",
        help="also invalidate blocks whose input changed (implies --inputs)",
    )
    vf.add_argument(
        "--again", action="store_true", help="check blocks verified before too (verified.jsonl)"
    )
    vf.add_argument("--record", type=_here, help="also write the report as JSON here")
    vw = command("view", cmd_view, "print a neuroglancer link: the output over the input")
    vw.add_argument("--json", action="store_true", help="print the viewer state as JSON")
    vw.add_argument("--serve", action="store_true", help="serve local volumes over HTTP")
    vw.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free)")
    command("demo-data", cmd_demo_data, "write the synthetic demo volume and model").add_argument(
        "--dir", default="resources/demo", help="where to write them"
    )
    ex = command("export-onnx", cmd_export_onnx, "export a PyTorch model to ONNX, and check it")
    ex.add_argument("model", help="torch.export .pt2, .py (with --weights), or TorchScript .pt")
    ex.add_argument("out", help="the .onnx file to write")
    ex.add_argument("--input-patch-size", type=int, nargs=3, required=True, metavar=("Z", "Y", "X"))
    ex.add_argument("--channels", type=int, default=1, help="input channels (default 1)")
    ex.add_argument("--weights", help="state-dict file of a .py model")
    ex.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    return p


def _here(path: str) -> str:
    """A path on the command line, taken from the current directory (as Snakemake does),
    not from the run directory the command then works in."""
    return os.path.abspath(path)


def _count_or_all(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is neither a count nor 'all'")
    return int(value)


def _in_run_directory(args: argparse.Namespace) -> None:
    """Run the command; one that reads a config works in its run directory (``-d``)."""
    if args.command == "run" or not hasattr(args, "directory"):
        args.func(args)
        return
    from chunkflow.app.run_dir import inside

    with inside(args.directory, args.config) as config:
        args.config = str(config)
        args.func(args)


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, rest = cli.parse_known_args(argv)
    if args.command == "run":
        args.snakemake_args = rest
    elif rest:
        cli.error(f"unrecognized arguments: {' '.join(rest)}")
    return run_main(lambda: _in_run_directory(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
