"""The run state (done-markers, output record, logs, summary) in an S3 bucket through Snakemake's
S3 storage plugin (--default-storage-provider s3), against moto's server on localhost: the run
completes, nothing of it is left in the local state dir, and a marker deleted in the bucket makes
exactly that block run again."""

from __future__ import annotations

import pytest
from s3_server import BUCKET, client
from workflow_runs import fingerprint, make_run_dir, snakemake

pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("boto3")
pytest.importorskip("snakemake_storage_plugin_s3", reason="snakemake-storage-plugin-s3 missing")

PREFIX = "state-run"


def storage_args(endpoint: str, prefix: str = PREFIX) -> list[str]:
    return [
        "--default-storage-provider", "s3",
        "--default-storage-prefix", f"s3://{BUCKET}/{prefix}",
        "--storage-s3-endpoint-url", endpoint,
        "--storage-s3-access-key", "test",
        "--storage-s3-secret-key", "test",
    ]  # fmt: skip


def objects(prefix: str) -> dict[str, float]:
    """Key -> LastModified of every object under ``prefix``."""
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["LastModified"] for p in pages for o in p.get("Contents", [])}


def test_run_state_in_a_bucket_resumes_one_deleted_marker(s3, run_env, tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    env, args = {**run_env, **s3}, storage_args(s3["AWS_ENDPOINT_URL"])
    snakemake(run_dir, env, tmp_path, *args)

    fp = fingerprint(run_dir)
    state = f"{PREFIX}/.chunkflow"
    markers = objects(f"{state}/blocks/{fp}/")
    assert len(markers) == 4  # 2 x 2 x 1 blocks
    assert {f"{state}/summary.json", f"{state}/output/{fp}.json"} <= set(objects(state))
    assert len(objects(f"{state}/logs/infer_block/")) == 4
    assert not (run_dir / ".chunkflow" / "blocks").exists()  # the markers live in the bucket only

    gone = sorted(markers)[0]
    client().delete_object(Bucket=BUCKET, Key=gone)
    again = snakemake(run_dir, env, tmp_path, *args)
    assert again.text.count("rule infer_block:") == 1, again.text
    now = objects(f"{state}/blocks/{fp}/")
    assert set(now) == set(markers)
    assert [k for k in markers if now[k] != markers[k]] == [gone]

    assert "Nothing to be done" in snakemake(run_dir, env, tmp_path, *args).text


def test_an_output_gone_while_the_bucket_records_it_is_refused(s3, run_env, tmp_path):
    """The local checks cannot see the bucket's markers: an output moved away after the run is
    refused in one line (else its blocks would count as done), nothing runs, and the bucket's
    state is untouched; a new prefix starts the run anew."""
    run_dir = make_run_dir(tmp_path / "run")
    env, args = {**run_env, **s3}, storage_args(s3["AWS_ENDPOINT_URL"], "gone")
    snakemake(run_dir, env, tmp_path, *args)
    before = objects("gone/")
    (run_dir / "results" / "out.zarr").rename(run_dir / "results" / "moved.zarr")
    refused = snakemake(run_dir, env, tmp_path, *args, ok=False)
    assert refused.returncode != 0 and "Traceback" not in refused.text
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("chunkflow: error:")]
    assert "output 'results/out.zarr' does not exist, but the run's state in" in line
    assert "another --default-storage-prefix" in line
    assert not (run_dir / "results" / "out.zarr").exists()
    assert objects("gone/") == before
    anew = snakemake(run_dir, env, tmp_path, *storage_args(s3["AWS_ENDPOINT_URL"], "anew"))
    assert anew.text.count("rule infer_block:") == 4
