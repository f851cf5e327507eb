"""What the Snakefile gets from chunkflow.workflow_support, checked without Snakemake."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from helpers import config_with

from chunkflow.workflow_support import prepare


def test_fingerprint_ignores_result_neutral_settings_only(small_config: dict) -> None:
    base = prepare(small_config).fingerprint
    neutral = {"inference.batch_size": 7, "inference.device": "cpu", "inference.threads": 2}
    for key, value in neutral.items():
        assert prepare(config_with(small_config, **{key: value})).fingerprint == base, key
    changing = {
        "inference.overlap": [1, 4, 6],
        "inference.blend": "gaussian",
        "inference.placement": "crop",
        "inference.precision": "bfloat16",
        "output.dtype": "uint8",
        "block_size": [12, 24, 16],
        "roi.size": [20, 48, 48],
    }
    for key, value in changing.items():
        assert prepare(config_with(small_config, **{key: value})).fingerprint != base, key


def test_fingerprint_follows_the_model_file_content(small_config: dict) -> None:
    before = prepare(small_config).fingerprint
    model = Path(small_config["model"]["path"])
    model.write_bytes(model.read_bytes() + b"\0")
    assert prepare(small_config).fingerprint != before


def test_stored_config_is_rewritten_only_when_it_changes(small_config: dict) -> None:
    run = prepare(small_config)
    stored = Path(run.config_path)
    assert yaml.safe_load(stored.read_text()) == small_config
    os.utime(stored, ns=(1, 1))
    prepare(small_config)
    assert stored.stat().st_mtime_ns == 1, "same content: the file is left alone"
    prepare(config_with(small_config, **{"inference.batch_size": 9}))
    assert yaml.safe_load(stored.read_text())["inference"]["batch_size"] == 9


def test_memory_estimate_grows_with_the_block_and_read_ahead(small_config: dict) -> None:
    small = prepare(small_config).job_mem_mb()
    large = prepare(config_with(small_config, block_size=[20, 48, 56])).job_mem_mb()
    ahead = prepare(config_with(small_config, blocks_per_job=3)).job_mem_mb()
    assert 2048 < small < large and small < ahead


def test_no_config_is_a_clear_error() -> None:
    import pytest

    from chunkflow.errors import ConfigError

    with pytest.raises(ConfigError, match="run snakemake with --configfile"):
        prepare({})
