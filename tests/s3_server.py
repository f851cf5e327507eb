"""A local S3 server (moto's) for the tests: its bucket, credentials and a boto3 client of it.
The ``s3`` fixture that starts it is in conftest.py; modules that use it skip without moto[server]
and boto3 (``pytest.importorskip``)."""

from __future__ import annotations

from typing import Any

try:  # optional: conftest.py imports this module in every run
    import boto3
    import moto.server as moto_server
except ImportError:
    boto3 = moto_server = None

BUCKET = "chunkflow-test"
AWS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_SESSION_TOKEN": "test",  # cloud-volume reads keys from the environment only with it
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SERVER: dict[str, str] = {}  # the endpoint of the module's server, for boto3 here


def client() -> Any:
    """A boto3 S3 client of the module's server, whatever the environment says."""
    return boto3.client("s3", endpoint_url=SERVER["endpoint"])
