#!/usr/bin/env bash
# The GPU rows (issue 26), on a GPU machine lent by the device tool, in one call of about 9
# minutes. Here first: `benchmarks/gpu/wheels.sh` (the wheels the machine lacks, into .whl/);
# then the device tool's run with command `bash benchmarks/gpu/run.sh`, carry [".whl"] and
# timeout_s 600. Installs the wheels and chunkflow (editable) into the machine's Python, then
# prints, and writes to $OUT/gpu.log: the CUDA tests, the feed (the free model, whole block
# jobs, on the machine's cores) and the 1.7 M-parameter U-Net in fp16 end to end.
set -uo pipefail
export PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp}/gpu.log
say() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }
python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG"
python3 -c "import torch, zarr, snakemake; print('torch', torch.__version__, 'zarr',
    zarr.__version__, 'cores', len(__import__('os').sched_getaffinity(0)))" | tee -a "$LOG"
say "1. CUDA tests"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -W ignore tests/test_cuda.py \
    tests/test_device_values.py 2>&1 | tail -15 | tee -a "$LOG"
say "2. the feed on this machine's cores"
timeout 240 python3 benchmarks/feed.py --device cuda --threads 2 8 16 --repeats 3 2>&1 \
    | tee -a "$LOG"
say "3. the U-Net in fp16, end to end"
timeout 150 python3 benchmarks/end_to_end.py --model unet --width 32 64 128 \
    --patch 36 288 288 --batch-size 4 --device cuda --precision float16 --threads 8 \
    --shape 128 1024 1024 --block-size 128 1024 1024 2>&1 | tee -a "$LOG"
say "done"
