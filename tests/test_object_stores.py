"""Volumes in an object store: zarr v2, v3, sharded v3, OME-Zarr and precomputed at s3:// URLs,
as input, output and mask, against a real S3 API on localhost (moto's server, started here); the
endpoint given by the environment (``AWS_ENDPOINT_URL``) or by a volume's ``storage_options``.
gs:// paths are checked as far as they can be without a network.

The inputs are written on disk with zarr / cloud-volume themselves and uploaded object by object;
the outputs are downloaded the same way and read back with zarr / cloud-volume: the numbers must
equal a run on local disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from format_cases import (
    INPUTS,
    OFFSET,
    OUTPUTS,
    RAW,
    RESOLUTION,
    SHAPE,
    check_geometry,
    make_config,
)
from helpers import config_with, write_volume
from run_helpers import read_back, run_all_blocks
from s3_server import BUCKET, client
from workflow_runs import (
    BASE_CONFIG,
    make_run_dir,
    marker_dir,
    snakemake,
    snakemake_cmd,
    write_config,
)

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError, VolumeError
from chunkflow.job.local_run import run_locally
from chunkflow.plan.input_identity import sample_boxes
from chunkflow.plan.run_plan import make_plan
from chunkflow.volumes import open_volume, output_backend, volume_exists
from chunkflow.volumes.ome_zarr import OmeZarrVolume
from chunkflow.volumes.precomputed import PrecomputedVolume
from chunkflow.volumes.stores import cloudvolume_path, object_store, obstore_options

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
boto3 = pytest.importorskip("boto3")

CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))


def upload(local: Path, key: str, public: bool = False) -> str:
    """Every file under ``local`` as an object under ``key`` (anyone may read it if
    ``public``); the s3:// URL of ``key``."""
    s3_client = client()
    extra = {"ACL": "public-read"} if public else None
    for path in sorted(local.rglob("*")):
        if path.is_file():
            name = f"{key}/{path.relative_to(local).as_posix()}"
            s3_client.upload_file(str(path), BUCKET, name, ExtraArgs=extra)
    return f"s3://{BUCKET}/{key}"


def download(key: str, local: Path) -> Path:
    """Every object under ``key`` as a file under ``local``."""
    s3_client = client()
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{key}/")
    for page in pages:
        for item in page.get("Contents", []):
            path = local / item["Key"].removeprefix(f"{key}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            s3_client.download_file(BUCKET, item["Key"], str(path))
    return local


ZARR_OUTPUTS = {k: v for k, v in OUTPUTS.items() if k.startswith(("zarr", "ome-zarr"))}


@pytest.mark.parametrize("source", [k for k in INPUTS if k.startswith(("zarr", "ome"))])
def test_zarr_in_a_bucket_in_and_out_gives_the_local_numbers(
    source, s3, model, reference, tmp_path
):
    local_input = INPUTS[source](tmp_path)
    root = local_input.removesuffix("/0")  # an OME-Zarr image: upload the whole group
    url = upload(Path(root), f"{source}/{Path(root).name}") + local_input.removeprefix(root)
    assert open_volume(url).info == open_volume(local_input).info
    for name, output in ZARR_OUTPUTS.items():
        key = f"{source}/out-{name}/{Path(output['path']).name}"
        config = make_config(model, url, tmp_path / name, **output)
        config["output"]["path"] = f"s3://{BUCKET}/{key}"
        run_locally(make_plan(config_mod.parse(config)))
        local = download(key, tmp_path / name / Path(output["path"]).name)
        result, attrs = read_back(str(local))
        np.testing.assert_array_equal(result, reference, err_msg=f"{source} -> {name}")
        check_geometry(name, str(local), attrs)


PRECOMPUTED_OUTPUTS = {k: v for k, v in OUTPUTS.items() if k.startswith("precomputed")}


def test_precomputed_in_a_bucket_in_and_out_gives_the_local_numbers(s3, model, reference, tmp_path):
    """cloud-volume reaches the endpoint of AWS_ENDPOINT_URL; unsharded, gzip and sharded.
    The input is written into the bucket by cloud-volume itself (its gzip'd chunks are objects
    with a Content-Encoding there, files with a .gz suffix on disk)."""
    from precomputed_volumes import write_precomputed

    local_input = INPUTS["precomputed"](tmp_path)
    url = write_precomputed(f"s3://{BUCKET}/pc/raw", RAW, offset=OFFSET, resolution=RESOLUTION)
    assert open_volume(url).info == open_volume(local_input).info
    outputs = {**PRECOMPUTED_OUTPUTS, "zarr3": OUTPUTS["zarr3"]}
    for name, output in outputs.items():
        key = f"pc/out-{name}" + (".zarr" if name == "zarr3" else "")
        config = make_config(model, url, tmp_path / name, **output)
        config["output"]["path"] = f"s3://{BUCKET}/{key}"
        run_locally(make_plan(config_mod.parse(config)))
        local = download(key, tmp_path / name / "out")  # gzip'd chunks come down still gzip'd
        path = str(local) if name == "zarr3" else f"precomputed://file://{local}"
        result, attrs = read_back(str(local) if name == "zarr3" else config["output"]["path"])
        np.testing.assert_array_equal(result, reference, err_msg=f"precomputed -> {name}")
        check_geometry(name, path, attrs)


def test_storage_options_reach_the_store_without_the_environment(
    s3, model, reference, tmp_path, monkeypatch
):
    """``storage_options.endpoint_url`` on input, output and mask, no AWS_ENDPOINT_URL: zarr
    in, precomputed out (obstore and cloud-volume); the fingerprint ignores the options."""
    raw = upload(Path(INPUTS["zarr3"](tmp_path)), "opts/raw.zarr")
    mask_dir = tmp_path / "mask.zarr"
    write_volume(mask_dir, np.ones(SHAPE, "uint8"), offset=OFFSET, resolution=RESOLUTION)
    mask = upload(mask_dir, "opts/mask.zarr")
    options = {"endpoint_url": s3["AWS_ENDPOINT_URL"]}
    config = make_config(model, raw, tmp_path / "run")
    config["output"]["path"] = f"s3://{BUCKET}/opts/out"
    with_env = make_plan(config_mod.parse(config))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config = config_with(
        config,
        **{
            "input.storage_options": options,
            "output.storage_options": options,
            "mask": {"path": mask, "storage_options": options},
        },
    )
    plan = make_plan(config_mod.parse(config))
    assert plan.fingerprint == with_env.fingerprint
    assert plan.block_ids == with_env.block_ids  # the mask, all ones, keeps every block
    run_locally(plan)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["AWS_ENDPOINT_URL"])  # for read_back's cloud-volume
    result, _ = read_back(config["output"]["path"])
    np.testing.assert_array_equal(result, reference)


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("/data/raw.zarr", {"endpoint_url": "http://x:9000"}, "'/data/raw.zarr' is on disk"),
        ("gs://b/raw.zarr", {"endpoint_url": "http://x:9000"}, "applies to s3:// paths"),
        ("https://h/raw.zarr", {"anon": True}, "applies to s3:// and gs:// paths"),
        ("s3://b/raw.zarr", {"key": "secret"}, "storage_options"),
        ("s3://b/raw.zarr", {"endpoint_url": "minio:9000"}, "endpoint_url"),
        ("s3://b/em/raw", {"region": "eu-west-1"}, "input.storage_options.region applies to zarr"),
        ("gs://b/em/raw", {"anon": True}, "takes only endpoint_url (for s3://); remove it"),
    ],
)
def test_storage_options_that_do_not_apply_are_refused_in_one_line(
    path, options, message, model, tmp_path
):
    config = make_config(model, path, tmp_path)
    config["input"]["storage_options"] = options
    with pytest.raises(ConfigError) as err:
        config_mod.parse(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_precomputed_takes_only_an_endpoint(tmp_path):
    with pytest.raises(ConfigError, match="read by cloud-volume, which takes only endpoint_url"):
        open_volume("s3://b/em/raw", options={"region": "eu-west-1"})


def test_gcs_paths_are_spelled_and_fail_offline_in_one_line(monkeypatch):
    """No GCS server here: the spellings, the store obstore would use, and a credentials
    file that is not there."""
    for name in ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    store = object_store("gs://my-lab/em/raw.zarr")
    assert type(store).__name__ == "GCSStore"
    assert store.config["bucket"] == "my-lab" and store.prefix == "em/raw.zarr"
    assert obstore_options("gs://my-lab/em/raw.zarr", {"anon": True}) == (
        {"skip_signature": True},
        {},
    )
    assert PrecomputedVolume.handles("gs://my-lab/em/raw")
    assert not PrecomputedVolume.handles("gs://my-lab/em/raw.zarr")
    assert output_backend("gs://my-lab/out.ome.zarr") is OmeZarrVolume
    assert cloudvolume_path("gs://my-lab/em/raw") == "gs://my-lab/em/raw"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nowhere/key.json")
    with pytest.raises(VolumeError) as err:
        open_volume("gs://my-lab/em/raw.zarr")
    message = str(err.value)
    assert "\n" not in message and "'gs://my-lab/em/raw.zarr'" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message


def test_precomputed_names_the_session_token_cloud_volume_needs(s3, monkeypatch):
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    with pytest.raises(VolumeError, match="only with AWS_SESSION_TOKEN") as err:
        open_volume(f"s3://{BUCKET}/no-token/raw")
    assert "\n" not in str(err.value)


def test_a_mask_in_a_bucket_picks_the_same_blocks(s3, model, tmp_path):
    raw = INPUTS["zarr3"](tmp_path)
    base = make_config(model, raw, tmp_path / "local")
    mask = np.zeros(SHAPE, dtype="uint8")
    mask[:4, :8, :8] = 1  # inside the first of the 1 x 2 x 2 blocks
    mask_dir = tmp_path / "mask.zarr"
    write_volume(mask_dir, mask, offset=OFFSET, resolution=RESOLUTION, chunks=(8, 24, 24))
    local = make_plan(config_mod.parse(config_with(base, mask={"path": str(mask_dir)})))
    remote_config = config_with(base, mask={"path": upload(mask_dir, "mask/mask.zarr")})
    remote = make_plan(config_mod.parse(remote_config))
    assert remote.block_ids == local.block_ids
    assert remote.block_ids == ["z0_y0_x0"]


def test_store_urls_exist_or_fail_in_one_line(s3, tmp_path):
    assert not volume_exists(f"s3://{BUCKET}/nothing-here.zarr")
    with pytest.raises(VolumeError, match="does not exist; check the path"):
        open_volume(f"s3://{BUCKET}/nothing-here.zarr")
    with pytest.raises(VolumeError) as err:
        open_volume("s3://no-such-bucket/raw.zarr")
    message = str(err.value)
    assert "\n" not in message and "'s3://no-such-bucket/raw.zarr'" in message
    assert "check the bucket name, the endpoint (storage_options.endpoint_url" in message


def test_plan_names_a_missing_bucket_in_one_line(s3, model, tmp_path):
    config = make_config(model, "s3://no-such-bucket/raw.zarr", tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [CHUNKFLOW, "plan", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "'s3://no-such-bucket/raw.zarr'" in lines[0], result.stderr


@pytest.mark.workflow
def test_snakemake_run_in_a_bucket_killed_and_resumed(s3, run_env, tmp_path):
    """Input and output in the bucket, reached through the config's ``storage_options`` (the
    jobs' environment names no endpoint), the run's state on disk: SIGKILL of the whole run
    after its first block, then `--unlock` and a rerun (`--rerun-incomplete`) finish it; the
    output read back from the bucket equals a local in-process run's."""
    run_dir = make_run_dir(tmp_path / "run")
    options = {"endpoint_url": s3["AWS_ENDPOINT_URL"]}
    config = config_with(
        BASE_CONFIG,
        **{
            "input.path": upload(run_dir / "data" / "raw.zarr", "wf/raw.zarr"),
            "input.storage_options": options,
            "output.path": f"s3://{BUCKET}/wf/out.zarr",
            "output.storage_options": options,
        },
    )
    write_config(run_dir, config)
    env = {k: v for k, v in {**run_env, **s3}.items() if k != "AWS_ENDPOINT_URL"}
    started = subprocess.Popen(
        snakemake_cmd(run_dir, "--cores", "1"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not any(marker_dir(run_dir).glob("*.json")) and started.poll() is None:
        assert time.monotonic() < deadline, "no block finished in 180 s"
        time.sleep(0.2)
    os.killpg(started.pid, signal.SIGKILL)
    started.wait()
    total = len(make_plan(config_mod.parse(local_config(run_dir, config, tmp_path))).block_ids)
    assert 0 < len(list(marker_dir(run_dir).glob("*.json"))) < total
    snakemake(run_dir, env, tmp_path, "--unlock")
    # a block whose marker was written as snakemake died is 'incomplete' to it: recomputed
    snakemake(run_dir, env, tmp_path, "--cores", "1", "--rerun-incomplete")
    assert len(list(marker_dir(run_dir).glob("*.json"))) == total
    result = read_back(str(download("wf/out.zarr", tmp_path / "out.zarr")))[0]
    expected = run_all_blocks(local_config(run_dir, config, tmp_path))
    np.testing.assert_array_equal(result, expected)


def local_config(run_dir: Path, config: dict, root: Path) -> dict:
    """``config`` on the run directory's local input, into a local output and state dir."""
    return config_with(
        config,
        **{
            "input.path": str(run_dir / "data" / "raw.zarr"),
            "input.storage_options": None,
            "output.path": str(root / "local" / "out.zarr"),
            "output.storage_options": None,
            "model.path": str(run_dir / config["model"]["path"]),
            "state_dir": str(root / "local" / "state"),
        },
    )


def test_https_or_http_urls_are_read_only_inputs(s3, tmp_path):
    local = INPUTS["zarr3"](tmp_path)
    upload(Path(local), "http/raw.zarr", public=True)
    url = f"{s3['AWS_ENDPOINT_URL']}/{BUCKET}/http/raw.zarr"  # the server's plain http view
    volume = open_volume(url)
    assert volume.info == open_volume(local).info
    box = volume.info.bounds
    np.testing.assert_array_equal(volume.read(box), open_volume(local).read(box))
    with pytest.raises(VolumeError, match="is read-only"):
        open_volume(url, mode="r+")


def test_bucket_urls_are_spelled_zarr_or_precomputed_without_a_network():
    from chunkflow.volumes.precomputed import PrecomputedVolume
    from chunkflow.volumes.stores import object_store, zarr_store

    for path, precomputed in [
        ("gs://lab/em/raw", True),
        ("s3://lab/em/raw", True),
        ("precomputed://gs://lab/odd.zarr", True),
        ("gs://lab/em/raw.zarr", False),
        ("gs://lab/em/image.ome.zarr/1", False),
        ("s3://lab/em/raw.zarr/", False),
    ]:
        assert PrecomputedVolume.handles(path) == precomputed, path
    assert type(object_store("gs://lab/em/raw.zarr")).__name__ == "GCSStore"  # no request yet
    with pytest.raises(VolumeError, match="is read-only"):
        zarr_store("https://data.lab.org/raw.zarr", "r+")


def chunk_faults(method: str, path: str, seen: int) -> str | None:
    """A fault for the first two requests of every chunk object of ``faulty/``: 503 then a
    dropped connection for a write; a body cut short then a 503 (or a drop) for a read."""
    if "/faulty/" not in path or "/c/" not in path or seen > 1 or method not in ("GET", "PUT"):
        return None
    if method == "PUT":
        return ("503", "reset")[seen]
    return ("truncate", "503" if hash(path) % 2 else "reset")[seen]


def test_transient_errors_are_retried_counted_and_change_no_number(
    s3, model, reference, tmp_path, monkeypatch
):
    """Every chunk object of the input and the output meets two faults (a 503, a dropped
    connection, a body cut short) through a proxy in front of the S3 server: each is retried
    once (counted: the process's count equals the faults served, and the markers hold the
    block jobs' share) and the output equals the fault-free reference."""
    from faulty_proxy import FaultyProxy

    from chunkflow.volumes.retries import retries_so_far

    url = upload(Path(INPUTS["zarr3"](tmp_path)), "faulty/raw.zarr")
    host = s3["AWS_ENDPOINT_URL"].removeprefix("http://")
    with FaultyProxy(host, chunk_faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        config = make_config(model, url, tmp_path / "out", **OUTPUTS["zarr3"])
        config["output"]["path"] = f"s3://{BUCKET}/faulty/out.zarr"
        before = retries_so_far()
        markers = run_locally(make_plan(config_mod.parse(config)))
        served = sum(proxy.faults.values())
        assert proxy.faults["truncate"] > 0 and proxy.faults["reset"] > 0
        assert proxy.faults["503"] > 0
        assert retries_so_far() - before == served
        in_blocks = sum(m.io_retries for m in markers)
        assert 0 < in_blocks <= served
    result = read_back(str(download("faulty/out.zarr", tmp_path / "out.zarr")))[0]
    np.testing.assert_array_equal(result, reference)


def test_a_read_that_keeps_failing_fails_the_block_in_one_line(s3, model, reference, tmp_path):
    """One input chunk object answers only 503: after CHUNKFLOW_IO_RETRIES retries the block job
    fails in one line naming the object and writes no done-marker;
    once the store answers again, the rerun gives the reference numbers."""
    from faulty_proxy import FaultyProxy

    url = upload(Path(INPUTS["zarr3"](tmp_path)), "failing/raw.zarr")
    names = [
        item["Key"]
        for item in client().list_objects_v2(Bucket=BUCKET, Prefix="failing/")["Contents"]
    ]
    volume = open_volume(url)  # not a chunk the plan reads for the input's identity
    offset, chunk = volume.info.voxel_offset, volume.info.chunk_size
    sampled = {
        "/".join(str((s - o) // c) for s, o, c in zip(b.start, offset, chunk, strict=True))
        for b in sample_boxes(volume)
    }
    broken = f"/{BUCKET}/" + next(
        n for n in sorted(names) if "/c/" in n and n.split("/c/")[1] not in sampled
    )
    host = s3["AWS_ENDPOINT_URL"].removeprefix("http://")
    config = make_config(model, url, tmp_path / "out", **OUTPUTS["zarr3"])
    config["output"]["path"] = f"s3://{BUCKET}/failing/out.zarr"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    plan = make_plan(config_mod.parse(config))
    with FaultyProxy(host, lambda m, p, n: "503" if p == broken else None) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "CHUNKFLOW_IO_RETRIES": "2"}
        subprocess.run(
            [CHUNKFLOW, "create-output", "--config", str(path)], env=env, check=True, timeout=120
        )
        failed = subprocess.run(
            [CHUNKFLOW, "run-block", "--config", str(path), *plan.block_ids],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proxy.faults["503"] == 3  # the first request and two retries
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "503" in last and broken.split("/")[-1] in last, failed.stderr
    state = Path(plan.settings.state_dir)
    assert not list(state.glob("blocks/*/*.json"))
    run_locally(plan)
    result = read_back(str(download("failing/out.zarr", tmp_path / "out.zarr")))[0]
    np.testing.assert_array_equal(result, reference)


def test_only_transient_store_errors_are_retried(monkeypatch):
    """500, 502, 503, 504, 429, dropped connections, bodies cut short and timeouts are retried;
    a 404, 400 or 501 is not (obstore's debug dump, which names retry_timeout, does not count)."""
    from obstore.exceptions import GenericError

    from chunkflow.volumes.retries import is_transient, max_retries

    debug = "\n\nDebug source:\nGeneric { retry_timeout: 180s, connection reset }"
    transient = [
        "Server returned non-2xx status code: 503 Service Unavailable",
        "Server returned non-2xx status code: 429 Too Many Requests",
        "HTTP error: error sending request",
        "HTTP error: request or response body error",
        "operation timed out",
    ]
    for message in transient:
        assert is_transient(GenericError(message + debug)), message
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    permanent = ("404 Not Found", "400 Bad Request", "501 Not Implemented")
    for message in (f"non-2xx status code: {status}" for status in permanent):
        assert not is_transient(GenericError(message + debug)), message
    assert not is_transient(FileNotFoundError()) and not is_transient(ValueError("timed out"))
    monkeypatch.setenv("CHUNKFLOW_IO_RETRIES", "many")
    with pytest.raises(ConfigError, match="CHUNKFLOW_IO_RETRIES is 'many'; set it to a count"):
        max_retries()


def test_neuroglancer_reads_bucket_volumes_from_their_endpoint(s3, model, tmp_path):
    """The view of a run in an S3-compatible store points neuroglancer at the endpoint,
    path-style (it cannot know a MinIO endpoint from an s3:// URL), and that URL serves the
    volume's metadata; a precomputed output likewise."""
    import urllib.request

    from chunkflow.inspect import view

    url = upload(Path(INPUTS["zarr3"](tmp_path)), "view/raw.zarr", public=True)
    config = make_config(model, url, tmp_path / "out", **OUTPUTS["zarr3"])
    config["output"]["path"] = f"s3://{BUCKET}/view/out"  # precomputed
    config["output"]["storage_options"] = {"endpoint_url": s3["AWS_ENDPOINT_URL"]}
    plan = make_plan(config_mod.parse(config))
    sources = {layer["name"]: layer["source"] for layer in view.state(plan)["layers"]}
    served = f"{s3['AWS_ENDPOINT_URL']}/{BUCKET}/view/raw.zarr"
    assert sources["input"]["url"] == f"zarr3://{served}"
    assert sources["input"]["transform"]["matrix"][0][-1] == OFFSET[0]
    assert sources["output"] == f"precomputed://{s3['AWS_ENDPOINT_URL']}/{BUCKET}/view/out"
    with urllib.request.urlopen(f"{served}/zarr.json") as answer:
        assert json.loads(answer.read())["node_type"] == "array"


def test_browser_urls_need_an_endpoint_only_for_s3_compatible_stores(monkeypatch):
    from chunkflow.volumes.stores import browser_url

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for url in ("s3://open-data/em.zarr", "gs://b/em.zarr", "https://h/em.zarr"):
        assert browser_url(url) == url  # neuroglancer reads these itself
    minio = {"endpoint_url": "http://minio.lab:9000/"}
    assert browser_url("s3://b/em.zarr", minio) == "http://minio.lab:9000/b/em.zarr"
    assert browser_url("gs://b/em.zarr", minio) == "gs://b/em.zarr"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://ceph.lab")
    assert browser_url("s3://b/em") == "https://ceph.lab/b/em"
