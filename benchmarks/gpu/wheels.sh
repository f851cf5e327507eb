#!/usr/bin/env bash
# Run here (with network), in the checkout's root: the wheels the GPU machine lacks, into .whl/
# (ignored by git; the device tool carries it). The GPU machine's image has Python 3.12, PyTorch,
# numpy, pandas, requests, jinja2, pyyaml and a few more (device/KINDS.md); it has no Snakemake,
# zarr or jsonschema, and no network. The versions are this venv's (.venv): one of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
IN_IMAGE="attrs certifi charset-normalizer idna jinja2 markupsafe numpy packaging pandas psutil
python-dateutil pyyaml requests six tabulate typing-extensions urllib3 wrapt"
PLATFORMS=""
for n in 17 24 27 28 31 34; do PLATFORMS+=" --platform manylinux_2_${n}_x86_64"; done
needed=$(.venv/bin/python benchmarks/gpu/closure.py snakemake snakemake-executor-plugin-slurm \
    zarr numcodecs jsonschema obstore)
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
for pin in $needed; do
    name=${pin%%==*}
    if [[ " $(echo $IN_IMAGE) " == *" $name "* ]]; then continue; fi
    # a binary wheel for the GPU machine's Python, else a wheel built here (pure Python)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp $PLATFORMS -d .whl "$pin" 2>/dev/null \
        || python3 -m pip wheel -q --no-deps -w .whl "$pin"
done
du -sh .whl
