"""I/O against a local S3 server: one piece, chunkflow's reads and writes against a bare
concurrent fetch (and put) of the same chunk objects at the same concurrency; then one block
job with input and output in the bucket, and how long it waited on I/O while computing.

Starts moto's S3 server on localhost. Part 1: for each of ``--codecs`` (zstd, zarr's default,
and none), writes a synthetic EM piece (``--shape``, uint8, chunks ``--chunks``) into a zarr v3
array in a bucket, then, ``--repeats`` times, interleaved:

- ours, read: ``open_volume(url).read(piece)`` (zarr over obstore: fetch and decode);
- zarr, read: the same array opened with zarr alone (its ObjectStore, no chunkflow retries);
- bare, read: every chunk object fetched with obstore's ``get_async``, at most
  ``async.concurrency`` (zarr's setting, the same for ours) in flight, nothing decoded;
- ours, write: ``volume.write(piece, data)`` (encode and put); zarr alone likewise;
- bare, write: the same objects' bytes put again with ``put_async``, as many in flight.

Prints the medians in MB/s (of the uncompressed piece for ours; of the same objects for bare) and
ours ÷ bare (goal ≥ 0.8). Both sides talk to the same single-process server (moto is Python, on
the same cores), so the ratio measures what chunkflow adds to the transfer, not what S3 can
deliver.

Part 2 (skipped with ``--no-block``): a ``--block`` of synthetic EM in the bucket (zstd) is
computed by `chunkflow run-block` with the demo net, the output written to the bucket, and the
same block on local disk; prints each job's wall time, the seconds of each stage from its
done-marker (reads and writes run beside the compute) and ``io_wait``, the seconds the compute
waited for them (goal: near 0, I/O hidden behind the compute).

    .venv/bin/python benchmarks/io.py [--shape 64 1024 1024] [--chunks 32 256 256] [--repeats 5]
        [--codecs zstd none] [--block 64 1024 1024] [--piece Z Y X] [--threads 2] [--no-block]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
import zarr
from zarr.storage import ObjectStore

from chunkflow import config as config_mod
from chunkflow.app.demo import synthetic_em, write_demo
from chunkflow.geometry.boxes import Box
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import DoneMarker
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_volume
from chunkflow.volumes.base import VolumeInfo
from chunkflow.volumes.stores import object_store, zarr_store
from chunkflow.volumes.zarr_volume import create_array

REPO = Path(__file__).resolve().parents[1]

BUCKET = "chunkflow-io"


def start_server() -> object:
    """moto's S3 server on a free localhost port, its endpoint and credentials in the
    environment, and the bucket made."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return server


async def bare_get(store: object, keys: list[str], limit: int) -> int:
    """Fetch every key, ``limit`` in flight; the bytes fetched."""
    import obstore

    gate = asyncio.Semaphore(limit)

    async def one(key: str) -> int:
        async with gate:
            return len(await (await obstore.get_async(store, key)).bytes_async())

    return sum(await asyncio.gather(*(one(k) for k in keys)))


async def bare_put(store: object, objects: dict[str, bytes], limit: int) -> None:
    """Put every object, ``limit`` in flight."""
    import obstore

    gate = asyncio.Semaphore(limit)

    async def one(key: str, data: bytes) -> None:
        async with gate:
            await obstore.put_async(store, key, data)

    await asyncio.gather(*(one(k, v) for k, v in objects.items()))


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def piece_array(url: str, shape: tuple[int, ...], chunks: tuple[int, ...], codec: str) -> None:
    """A uint8 zarr v3 array at ``url`` as chunkflow lays one out, compressed with ``codec``."""
    if codec == "zstd":  # chunkflow's own output layout (zarr's default codec)
        create_array(url, VolumeInfo(shape, "uint8", chunks))
        return
    zarr.create_array(
        store=zarr_store(url, "w"),
        shape=shape,
        chunks=chunks,
        dtype="uint8",
        fill_value=0,
        compressors=None,
        attributes={"voxel_offset": [0, 0, 0], "resolution": [1.0, 1.0, 1.0]},
    )


def piece_io(args: argparse.Namespace, codec: str, limit: int) -> list[str]:
    """Part 1 for ``codec``: the table rows of reads and writes, ours against bare."""
    import obstore

    url = f"s3://{BUCKET}/piece-{codec}.zarr"
    shape = tuple(args.shape)
    piece = Box.from_shape((0, 0, 0), shape)
    data = synthetic_em(shape, seed=1)
    piece_array(url, shape, tuple(args.chunks), codec)
    open_volume(url, mode="r+").write(piece, data)
    store = object_store(url)
    keys = [k["path"] for batch in obstore.list(store) for k in batch if "/c/" in f"/{k['path']}"]
    objects = {k: obstore.get(store, k).bytes().to_bytes() for k in keys}
    stored = sum(len(v) for v in objects.values())
    times: dict[str, list[float]] = {
        f"{side} {what}": [] for side in ("ours", "zarr", "bare") for what in ("read", "write")
    }
    for _ in range(args.repeats):
        reader = open_volume(url)
        times["ours read"].append(timed(lambda r=reader: r.read(piece)))
        plain = zarr.open_array(ObjectStore(store), mode="r+")  # zarr alone: no retries
        times["zarr read"].append(timed(lambda a=plain: a[...]))
        times["bare read"].append(timed(lambda: asyncio.run(bare_get(store, keys, limit))))
        writer = open_volume(url, mode="r+")
        times["ours write"].append(timed(lambda w=writer: w.write(piece, data)))
        times["zarr write"].append(timed(lambda a=plain: a.__setitem__(..., data)))
        times["bare write"].append(timed(lambda: asyncio.run(bare_put(store, objects, limit))))
    check = open_volume(url).read(piece)
    assert np.array_equal(check, data), "the piece read back differs from what was written"
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for what in ("read", "write"):
        ours, plain, bare = (median[f"{side} {what}"] for side in ("ours", "zarr", "bare"))
        rows.append(
            f"| {what}, {codec} ({len(keys)} objects, {stored / 1e6:.1f} MB) | {ours:.3f} | "
            f"{plain:.3f} | {bare:.3f} | {data.nbytes / 1e6 / ours:.0f} | "
            f"{stored / 1e6 / bare:.0f} | **{bare / ours:.2f}** | {plain / ours:.2f} |"
        )
    return rows


def block_job(run_dir: Path, where: str, args: argparse.Namespace) -> dict:
    """`chunkflow run-block` of one ``--block`` of the demo net, input and output in the
    bucket (``where`` 's3') or on disk; its wall time and its done-marker."""
    root = f"s3://{BUCKET}/block" if where == "s3" else str(run_dir)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["input"]["path"] = f"{root}/raw.zarr"
    config["model"]["path"] = str(run_dir / "demo/boundary_net.pt2")
    config["output"]["path"] = f"{root}/out-{where}.zarr"
    config["output"]["chunk_size"] = list(args.chunks)
    config["block_size"] = list(args.block)
    if args.piece:
        config["piece_size"] = list(args.piece)
    config["inference"]["threads"] = args.threads
    config["state_dir"] = str(run_dir / f"state-{where}")
    path = run_dir / f"{where}.yaml"
    path.write_text(yaml.safe_dump(config))
    chunkflow = str(Path(sys.executable).with_name("chunkflow"))
    subprocess.run([chunkflow, "create-output", "--config", str(path)], check=True)
    started = time.perf_counter()
    subprocess.run([chunkflow, "run-block", "--config", str(path), "z0_y0_x0"], check=True)
    wall = time.perf_counter() - started
    plan = make_plan(config_mod.parse(config))
    marker = DoneMarker.read(RunState.of(plan).marker("z0_y0_x0"))
    return {"where": where, "wall": wall, "marker": marker}


def block_io(args: argparse.Namespace) -> None:
    """Part 2: one block job in the bucket and one on disk, and what each waited on I/O."""
    shape = tuple(args.block)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_demo(run_dir / "demo")
        data = synthetic_em(shape, seed=2)
        for root in (f"s3://{BUCKET}/block", str(run_dir)):
            piece_array(f"{root}/raw.zarr", shape, tuple(args.chunks), "zstd")
            open_volume(f"{root}/raw.zarr", mode="r+").write(Box.from_shape((0, 0, 0), shape), data)
        jobs = [block_job(run_dir, where, args) for where in ("s3", "disk")]
    print(
        f"\nblock {'x'.join(map(str, shape))} uint8 ({np.prod(shape) / 1e6:.0f} Mvoxels), demo "
        f"net, {args.threads} threads\n"
    )
    print(
        "| input and output | pieces | wall s | read s | infer s | write s | **io_wait s** | retries |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for job in jobs:
        marker, t = job["marker"], job["marker"].timings_s
        print(
            f"| {job['where']} | {marker.pieces} | {job['wall']:.1f} | {t['read']:.2f} | "
            f"{t['infer']:.1f} | {t['write']:.2f} | **{t['io_wait']:.2f}** | {marker.io_retries} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--chunks", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--codecs", nargs="+", choices=["zstd", "none"], default=["zstd", "none"])
    parser.add_argument("--block", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--piece", type=int, nargs=3, help="piece_size (default: the workflow's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-block", action="store_true", help="skip part 2, the block job")
    args = parser.parse_args()
    server = start_server()
    limit = int(zarr.config.get("async.concurrency"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"piece {'x'.join(map(str, args.shape))} uint8; {limit} requests in flight\n")
    print(
        "| | ours s | zarr s | bare s | ours MB/s (piece) | bare MB/s (objects) "
        "| **ours ÷ bare** | ours ÷ zarr |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for codec in args.codecs:
        print("\n".join(piece_io(args, codec, limit)))
    if not args.no_block:
        block_io(args)
    server.stop()


if __name__ == "__main__":
    main()
