"""Where a volume's objects live: a local folder, or an object store named by a URL
(``s3://bucket/key``, ``gs://bucket/key``, ``http(s)://host/path``, the last read-only).

Zarr stores in a bucket are reached with obstore (Rust's object_store: concurrent requests),
whose transient errors chunkflow retries and counts itself (``chunkflow.volumes.retries``);
precomputed ones with
cloud-volume, which reaches a custom S3 endpoint through a cloud-files alias
(``cloudvolume_path``). Credentials and endpoints come from each ecosystem's usual environment,
which SLURM jobs inherit: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (an S3-compatible store: MinIO,
Ceph, …) for s3://; ``GOOGLE_APPLICATION_CREDENTIALS`` (or ``GOOGLE_SERVICE_ACCOUNT``) for gs://.
A volume's ``storage_options`` (fsspec's spelling: ``endpoint_url``, ``region``, ``anon``) take
precedence over the environment for that volume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from chunkflow.errors import ConfigError, VolumeError, first_line
from chunkflow.volumes.retries import with_retries

OBJECT_SCHEMES = ("s3://", "gs://", "http://", "https://")
READ_ONLY_SCHEMES = ("http://", "https://")
# a zarr node by its spelling: '*.zarr', or a path inside one ('image.ome.zarr/0')
ZARR_SPELLING = re.compile(r"\.zarr(/|$)")
#: a volume's ``storage_options``: option → the URL schemes it applies to
OPTION_SCHEMES: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("s3://",),
    "region": ("s3://",),
    "anon": ("s3://", "gs://"),
}

StorageOptions = Mapping[str, Any]
NO_RETRIES = {"max_retries": 0}


def is_url(path: str) -> bool:
    """Whether ``path`` names an object in an object store rather than a local file."""
    return path.startswith(OBJECT_SCHEMES)


def names_zarr(path: str) -> bool:
    """Whether ``path`` is spelled as a zarr node (an array, a group, or a node inside one)."""
    return ZARR_SPELLING.search(path.rstrip("/")) is not None


def check_storage_options(key: str, path: str, options: StorageOptions | None) -> None:
    """Refuse, in one line naming the config ``key`` (``input.storage_options``), options that
    do not apply to ``path``: any for a local path, ``endpoint_url`` for gs://, …"""
    if not options:
        return
    scheme = next((s for s in OBJECT_SCHEMES if path.startswith(s)), None)
    where = "on disk" if scheme is None else "not one"
    for name in options:
        if scheme is None or scheme not in OPTION_SCHEMES[name]:
            applies = " and ".join(OPTION_SCHEMES[name])
            raise ConfigError(
                f"{key}.{name} applies to {applies} paths, and '{path}' is {where}; remove it"
            )
    other = sorted(set(options) - {"endpoint_url"})
    if other and not names_zarr(path):
        raise ConfigError(precomputed_option_error(f"{key}.{other[0]}", path))


def precomputed_option_error(option: str, path: str) -> str:
    """Why ``option`` does not apply to the precomputed volume ``path``, in one line."""
    return (
        f"{option} applies to zarr volumes; '{path}' is precomputed, read by cloud-volume, "
        "which takes only endpoint_url (for s3://); remove it"
    )


def s3_endpoint(options: StorageOptions | None = None) -> str | None:
    """The S3 endpoint of a volume: its ``endpoint_url`` option, else what the AWS tools
    would use, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (None: Amazon's)."""
    if options and options.get("endpoint_url"):
        return str(options["endpoint_url"])
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def obstore_options(
    url: str, options: StorageOptions | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """obstore's ``config`` and ``client_options`` for ``url`` and a volume's ``options``."""
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    options = options or {}
    if url.startswith("s3://"):
        endpoint = s3_endpoint(options)
        if endpoint:
            config["aws_endpoint"] = endpoint
            client["allow_http"] = endpoint.startswith("http://")
        if options.get("region"):
            config["aws_region"] = str(options["region"])
    if options.get("anon"):
        config["skip_signature"] = True  # public data: unsigned requests, no credentials
    if url.startswith("http://"):
        client["allow_http"] = True
    return config, client


def object_store(url: str, options: StorageOptions | None = None) -> Any:
    """The obstore store rooted at ``url``; a one-line VolumeError for a URL it cannot serve."""
    from obstore.store import from_url

    config, client = obstore_options(url, options)
    try:  # retried by chunkflow (volumes.retries), which counts them: none inside obstore
        return from_url(
            url, config=config or None, client_options=client or None, retry_config=NO_RETRIES
        )
    except BaseException as err:  # obstore raises its own types, Rust panics included
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise VolumeError(f"cannot use '{url}' ({first_line(err)}); {_hint(url)}") from None


def use_allowed_cpus() -> int:
    """Size zarr's codec threads to the CPUs this process may run on, and return their count:
    a SLURM job's allocation (``--cpus-per-gpu``, ``--cpus-per-task``), where zarr's default
    pool counts every core of the node."""
    import zarr

    cpus = len(os.sched_getaffinity(0))
    zarr.config.set({"threading.max_workers": cpus})
    return cpus


def zarr_store(path: str, mode: str, options: StorageOptions | None = None) -> Any:
    """What ``zarr.open``/``zarr.create_array`` take as ``store`` for ``path``: the path itself
    when local, else a zarr ObjectStore (read-only for ``mode`` 'r' and for http(s))."""
    if not is_url(path):
        return path
    from zarr.storage import ObjectStore

    from chunkflow.volumes.retrying_store import RetryingStore

    if mode != "r" and path.startswith(READ_ONLY_SCHEMES):
        raise VolumeError(f"'{path}' is read-only (http); write the output to s3://, gs:// or disk")
    return RetryingStore(ObjectStore(object_store(path, options), read_only=mode == "r"), path)


def cloudvolume_path(path: str, options: StorageOptions | None = None) -> str:
    """``path`` as cloud-volume reaches it: an ``s3://`` path whose volume has an S3 endpoint
    (``s3_endpoint``) through a cloud-files alias for that endpoint,
    ``chunkflow_s3_<hash>://bucket/key`` (cloud-volume refuses cloud-files' own spelling,
    ``s3://http://host/bucket/key``); other paths as they are."""
    endpoint = s3_endpoint(options) if path.startswith("s3://") else None
    if not endpoint:
        return path
    from cloudfiles import paths

    alias = f"chunkflow_s3_{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}"
    if alias not in paths.ALIASES:
        paths.add_alias(alias, f"s3://{endpoint.rstrip('/')}/")
    return f"{alias}://{path.removeprefix('s3://')}"


def browser_url(url: str, options: StorageOptions | None = None) -> str:
    """``url`` as a browser (neuroglancer) reaches it: the object of an S3-compatible store
    (``s3_endpoint``: MinIO, Ceph, …) path-style under its endpoint, ``<endpoint>/<bucket>/<key>``;
    any other URL as it is (neuroglancer reads s3://, gs:// and http(s):// itself)."""
    endpoint = s3_endpoint(options) if url.startswith("s3://") else None
    return f"{endpoint.rstrip('/')}/{url.removeprefix('s3://')}" if endpoint else url


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


def read_object(url: str, name: str, options: StorageOptions | None = None) -> bytes | None:
    """The bytes of object ``name`` under ``url``; None when there is none. Other failures
    (no such bucket, no credentials, no connection after the retries) raise a VolumeError."""
    import obstore

    store = object_store(url, options)
    try:
        with _reported("read", f"{url}/{name}"):
            return with_retries(
                lambda: obstore.get(store, name).bytes().to_bytes(), f"read '{url}/{name}'"
            )
    except FileNotFoundError:
        return None


def holds_anything(url: str, options: StorageOptions | None = None) -> bool:
    """Whether any object exists under ``url`` (a prefix): one short listing, never a full one."""
    import obstore

    if url.startswith(READ_ONLY_SCHEMES):  # http has no listing: ask for zarr metadata instead
        return any(
            read_object(url, n, options) is not None for n in ("zarr.json", ".zarray", ".zgroup")
        )
    store = object_store(url, options)

    def first_batch() -> bool:
        return any(len(batch) > 0 for batch in obstore.list(store, chunk_size=1))

    with _reported("list", url):
        return with_retries(first_batch, f"list '{url}'")


def location_exists(path: str, options: StorageOptions | None = None) -> bool:
    """Whether anything exists at ``path``: a local file or folder, or objects under a URL."""
    return holds_anything(path, options) if is_url(path) else Path(path).exists()


def read_metadata(location: str, name: str, options: StorageOptions | None = None) -> bytes | None:
    """The bytes of the file or object ``name`` in ``location``; None when there is none."""
    if is_url(location):
        return read_object(location, name, options)
    try:
        return Path(location, name).read_bytes()
    except OSError:
        return None


def _hint(url: str) -> str:
    if url.startswith("s3://"):
        return (
            "check the bucket name, the endpoint (storage_options.endpoint_url or AWS_ENDPOINT_URL, "
            "for MinIO, Ceph, …) and the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the instance role)"
        )
    if url.startswith("gs://"):
        return "check the bucket name and GOOGLE_APPLICATION_CREDENTIALS"
    return "check the URL"
