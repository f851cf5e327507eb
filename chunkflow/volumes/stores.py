"""Where a zarr volume's objects live: a local folder, or an object store named by a URL
(``s3://bucket/key``, ``gs://bucket/key``, ``http(s)://host/path``, the last read-only).

Object stores are reached with obstore (Rust's object_store: concurrent requests, retries with
backoff for 5xx, timeouts and dropped connections). Credentials and endpoints come from each
ecosystem's usual environment, which SLURM jobs inherit: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (an
S3-compatible store: MinIO, Ceph, …) for s3://; ``GOOGLE_APPLICATION_CREDENTIALS`` (or
``GOOGLE_SERVICE_ACCOUNT``) for gs://.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chunkflow.errors import VolumeError, first_line

OBJECT_SCHEMES = ("s3://", "gs://", "http://", "https://")
READ_ONLY_SCHEMES = ("http://", "https://")
# a zarr node by its spelling: '*.zarr', or a path inside one ('image.ome.zarr/0')
ZARR_SPELLING = re.compile(r"\.zarr(/|$)")


def is_url(path: str) -> bool:
    """Whether ``path`` names an object in an object store rather than a local file."""
    return path.startswith(OBJECT_SCHEMES)


def names_zarr(path: str) -> bool:
    """Whether ``path`` is spelled as a zarr node (an array, a group, or a node inside one)."""
    return ZARR_SPELLING.search(path.rstrip("/")) is not None


def s3_endpoint() -> str | None:
    """The S3 endpoint that the AWS tools would use: ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` (None: Amazon's)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def object_store(url: str) -> Any:
    """The obstore store rooted at ``url``; a one-line VolumeError for a URL it cannot serve."""
    from obstore.store import from_url

    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    endpoint = s3_endpoint() if url.startswith("s3://") else None
    if endpoint:
        config["aws_endpoint"] = endpoint
        client["allow_http"] = endpoint.startswith("http://")
    if url.startswith("http://"):
        client["allow_http"] = True
    try:
        return from_url(url, config=config or None, client_options=client or None)
    except BaseException as err:  # obstore raises its own types, Rust panics included
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise VolumeError(f"cannot use '{url}' ({first_line(err)}); {_hint(url)}") from None


def zarr_store(path: str, mode: str) -> Any:
    """What ``zarr.open``/``zarr.create_array`` take as ``store`` for ``path``: the path itself
    when local, else a zarr ObjectStore (read-only for ``mode`` 'r' and for http(s))."""
    if not is_url(path):
        return path
    from zarr.storage import ObjectStore

    if mode != "r" and path.startswith(READ_ONLY_SCHEMES):
        raise VolumeError(f"'{path}' is read-only (http); write the output to s3://, gs:// or disk")
    return ObjectStore(object_store(path), read_only=mode == "r")


@contextlib.contextmanager
def _reported(action: str, url: str) -> Iterator[None]:
    """Turn a store's failure to ``action`` ``url`` into a one-line VolumeError (a missing
    object, FileNotFoundError, passes through)."""
    try:
        yield
    except (FileNotFoundError, VolumeError):
        raise
    except Exception as err:
        raise VolumeError(f"cannot {action} '{url}' ({first_line(err)}); {_hint(url)}") from None


def read_object(url: str, name: str) -> bytes | None:
    """The bytes of object ``name`` under ``url``; None when there is none. Other failures
    (no such bucket, no credentials, no connection after the retries) raise a VolumeError."""
    import obstore

    try:
        with _reported("read", f"{url}/{name}"):
            return obstore.get(object_store(url), name).bytes().to_bytes()
    except FileNotFoundError:
        return None


def holds_anything(url: str) -> bool:
    """Whether any object exists under ``url`` (a prefix): one short listing, never a full one."""
    import obstore

    if url.startswith(READ_ONLY_SCHEMES):  # http has no listing: ask for zarr metadata instead
        return any(read_object(url, n) is not None for n in ("zarr.json", ".zarray", ".zgroup"))
    with _reported("list", url):
        for batch in obstore.list(object_store(url), chunk_size=1):
            return len(batch) > 0
    return False


def location_exists(path: str) -> bool:
    """Whether anything exists at ``path``: a local file or folder, or objects under a URL."""
    return holds_anything(path) if is_url(path) else Path(path).exists()


def read_metadata(location: str, name: str) -> bytes | None:
    """The bytes of the file or object ``name`` in ``location``; None when there is none."""
    if is_url(location):
        return read_object(location, name)
    try:
        return Path(location, name).read_bytes()
    except OSError:
        return None


def _hint(url: str) -> str:
    if url.startswith("s3://"):
        return (
            "check the bucket name, AWS_ENDPOINT_URL (for MinIO, Ceph, …) and the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws)"
        )
    if url.startswith("gs://"):
        return "check the bucket name and GOOGLE_APPLICATION_CREDENTIALS"
    return "check the URL"
