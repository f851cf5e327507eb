"""The `chunkflow` command: plan, create the output, run blocks by hand, report, make the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from chunkflow import config as config_mod
from chunkflow.errors import ChunkflowError

log = logging.getLogger("chunkflow")


def _plan(args: argparse.Namespace):
    settings = config_mod.load(args.config)  # config errors first, before the heavier imports
    from chunkflow.plan import make_plan

    return make_plan(settings)


def cmd_plan(args: argparse.Namespace) -> None:
    plan = _plan(args)
    blocks = plan.blocks
    counts = [len(plan.patches(b)) for b in blocks]
    whole = plan.whole_roi_patch_count()
    s = plan.settings
    print(f"input   {s.input.path}: {plan.input_info.bounds} (z, y, x), {plan.input_info.dtype}")
    print(f"roi     {plan.roi}, {plan.roi.size:,} voxels")
    masked = f", {len(blocks)} of them in the mask {s.mask.path}" if s.mask else ""
    print(
        f"blocks  {len(plan.grid)} = {' x '.join(map(str, plan.grid.shape))} of "
        f"{list(s.block_size)}{masked}; {len(plan.job_groups())} jobs of up to "
        f"{s.blocks_per_job} block(s)"
    )
    print(
        f"patches {sum(counts):,} in all, {min(counts)}..{max(counts)} per block; "
        f"a single whole-ROI pass needs {whole:,} ({sum(counts) / whole:.2f}x), "
        f"placement {s.inference.placement}"
    )
    shards = f", shards {list(s.output.shard_size)}" if s.output.shard_size else ""
    print(f"output  {s.output.path}: {s.output.dtype}, chunks {list(s.output.chunk_size)}{shards}")
    if args.blocks:
        for block, n in zip(blocks, counts, strict=True):
            print(f"  {block.id}  {block.box}  {n} patches")


def cmd_create_output(args: argparse.Namespace) -> None:
    from chunkflow.output_store import create_output

    volume, created = create_output(_plan(args))
    verb = "created" if created else "reusing matching"
    print(f"{verb} output {volume.path}: {volume.info.channels} channels, {volume.info.bounds}")
    if args.record:
        from dataclasses import asdict

        from chunkflow.markers import write_json_atomic

        write_json_atomic(
            Path(args.record), {"path": volume.path, "created": created, **asdict(volume.info)}
        )


def cmd_finish_output(args: argparse.Namespace) -> None:
    from chunkflow.output_store import finish_output

    volume = finish_output(_plan(args))
    print(f"finished output {volume.path}")
    if args.record:
        from chunkflow.markers import write_json_atomic

        write_json_atomic(Path(args.record), {"path": volume.path, "finished": True})


def cmd_run_block(args: argparse.Namespace) -> None:
    from chunkflow.block import run_blocks

    settings = config_mod.load(args.config)
    block_ids = [Path(b).stem if b.endswith(".json") else b for b in args.block]
    for marker in run_blocks(settings, block_ids, args.expect_fingerprint):
        what = "background, skipped" if marker.skipped else f"{marker.patches} patches"
        print(
            f"{marker.block}: {what}, {marker.timings_s['total']:.2f} s on {marker.ran_on['device']}"
        )


def _markers(plan):
    from chunkflow.markers import read_markers

    return read_markers(plan.settings.state_dir, plan.block_ids, plan.fingerprint)


def cmd_status(args: argparse.Namespace) -> None:
    plan = _plan(args)
    done, stale, missing = _markers(plan)
    from chunkflow.summary import skipped_note

    skipped = sum(1 for marker in done if marker.skipped)
    print(f"{len(done)}/{len(plan.blocks)} blocks done{skipped_note(skipped)}")
    for label, ids in (("stale (settings changed)", stale), ("missing", missing)):
        for block_id in ids[: args.show]:
            print(f"  {label} {block_id}")


def cmd_summary(args: argparse.Namespace) -> None:
    from chunkflow.summary import format_summary, summarize

    plan = _plan(args)
    summary = summarize(plan, _markers(plan)[0])
    text = format_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.text:
        Path(args.text).write_text(text + "\n")
    print(text)


def cmd_view(args: argparse.Namespace) -> None:
    from chunkflow import view

    plan = _plan(args)
    httpd, base = view.server(plan, args.port) if args.serve else (None, None)
    state = view.state(plan, base)
    print(json.dumps(state, indent=1) if args.json else view.url(state), flush=True)
    if httpd is not None:
        print(f"serving the local volumes at {base}; Ctrl-C stops", file=sys.stderr)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            httpd.server_close()


def cmd_demo_data(args: argparse.Namespace) -> None:
    from chunkflow.demo import write_demo

    raw, model = write_demo(args.dir)
    print(f"demo volume {raw}\ndemo model  {model}")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from chunkflow.onnx_export import export_onnx

    difference = export_onnx(
        args.model, args.out, args.input_patch_size, args.channels, args.weights, args.opset
    )
    print(f"wrote {args.out}; ONNX Runtime vs torch on a random batch: max |diff| {difference:.1e}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chunkflow", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        cp = sub.add_parser(name, help=help, description=help)
        cp.set_defaults(func=func)
        if name not in ("demo-data", "export-onnx"):
            cp.add_argument("-c", "--config", default="config/config.yaml", help="config YAML")
        return cp

    command("plan", cmd_plan, "show the block grid and patch counts").add_argument(
        "--blocks", action="store_true", help="list every block"
    )
    command(
        "create-output", cmd_create_output, "create the output store (or check an existing one)"
    ).add_argument("--record", help="also write the output's metadata as JSON here")
    command(
        "finish-output", cmd_finish_output, "make the output whole after the blocks (HDF5: VDS)"
    ).add_argument("--record", help="also write a JSON record here")
    rb = command("run-block", cmd_run_block, "compute blocks by id, without Snakemake")
    rb.add_argument(
        "block", nargs="+", help="block ids such as z0_y1_x2, or their done-marker paths (*.json)"
    )
    rb.add_argument("--expect-fingerprint", help="refuse to run if the settings hash differs")
    command("status", cmd_status, "count finished blocks").add_argument(
        "--show", type=int, default=20, help="list at most this many missing blocks"
    )
    sm = command("summary", cmd_summary, "aggregate the done-markers")
    sm.add_argument("--json", help="also write the summary as JSON here")
    sm.add_argument("--text", help="also write the summary text here")
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        args.func(args)
    except ChunkflowError as err:
        print(f"chunkflow: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be written or read: no traceback for that
        print(f"chunkflow: error: {err}; check the path and its permissions", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
