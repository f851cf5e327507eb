"""I/O of one piece against a local S3 server: chunkflow's reads and writes against a bare
concurrent fetch (and put) of the same chunk objects, at the same concurrency.

Starts moto's S3 server on localhost, writes a synthetic EM piece (``--shape``, uint8, chunks
``--chunks``, zstd as zarr's default) into a zarr v3 array in a bucket, then, ``--repeats``
times, interleaved:

- ours, read: ``open_volume(url).read(piece)`` (zarr over obstore: fetch and decode);
- bare, read: every chunk object fetched with obstore's ``get_async``, at most
  ``async.concurrency`` (zarr's setting, the same for ours) in flight, nothing decoded;
- ours, write: ``volume.write(piece, data)`` (encode and put);
- bare, write: the same objects' bytes put again with ``put_async``, as many in flight.

Prints the medians in MB/s (of the uncompressed piece for ours; of the same objects for bare) and
ours ÷ bare (goal ≥ 0.8). Both sides talk to the same single-process server (moto is Python),
so the ratio measures what chunkflow adds to the transfer, not what S3 can deliver.

    .venv/bin/python benchmarks/object_io.py [--shape 64 1024 1024] [--chunks 32 256 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

import numpy as np
import zarr

from chunkflow.demo import synthetic_em
from chunkflow.geometry import Box
from chunkflow.volumes import open_volume
from chunkflow.volumes.base import VolumeInfo
from chunkflow.volumes.stores import object_store
from chunkflow.volumes.zarr_volume import create_array

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--chunks", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import obstore

    server = start_server()
    limit = int(zarr.config.get("async.concurrency"))
    url = f"s3://{BUCKET}/piece.zarr"
    piece = Box.from_shape((0, 0, 0), tuple(args.shape))
    data = synthetic_em(tuple(args.shape), seed=1)
    create_array(url, VolumeInfo(tuple(args.shape), "uint8", tuple(args.chunks)))
    volume = open_volume(url, mode="r+")
    volume.write(piece, data)
    store = object_store(url)
    keys = [k["path"] for batch in obstore.list(store) for k in batch if "/c/" in f"/{k['path']}"]
    objects = {k: obstore.get(store, k).bytes().to_bytes() for k in keys}
    stored = sum(len(v) for v in objects.values())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"piece {'x'.join(map(str, args.shape))} uint8 ({data.nbytes / 1e6:.0f} MB), "
        f"{len(keys)} chunk objects, {stored / 1e6:.1f} MB stored; {limit} in flight\n"
    )
    times: dict[str, list[float]] = {
        name: [] for name in ("ours read", "bare read", "ours write", "bare write")
    }
    for _ in range(args.repeats):
        reader = open_volume(url)
        times["ours read"].append(timed(lambda r=reader: r.read(piece)))
        times["bare read"].append(timed(lambda: asyncio.run(bare_get(store, keys, limit))))
        writer = open_volume(url, mode="r+")
        times["ours write"].append(timed(lambda w=writer: w.write(piece, data)))
        times["bare write"].append(timed(lambda: asyncio.run(bare_put(store, objects, limit))))
    check = open_volume(url).read(piece)
    assert np.array_equal(check, data), "the piece read back differs from what was written"
    median = {name: statistics.median(t) for name, t in times.items()}
    print("| | ours s | bare s | ours MB/s (piece) | bare MB/s (objects) | **ours ÷ bare** |")
    print("|---|---|---|---|---|---|")
    for what in ("read", "write"):
        ours, bare = median[f"ours {what}"], median[f"bare {what}"]
        print(
            f"| {what} | {ours:.3f} | {bare:.3f} | {data.nbytes / 1e6 / ours:.0f} | "
            f"{stored / 1e6 / bare:.0f} | **{bare / ours:.2f}** |"
        )
    server.stop()


if __name__ == "__main__":
    main()
