#!/usr/bin/env bash
# Stop the daemons that up.sh started (only the PIDs it recorded); harmless when none run.
set -euo pipefail

STATE_DIR=${CHUNKFLOW_SLURM_STATE:-/var/run/chunkflow-slurm}

for name in slurmd slurmctld munged; do
    f="$STATE_DIR/$name.pid"
    [[ -f $f ]] || continue
    pid=$(<"$f")
    # Skip a PID that has since been reused by another program.
    if [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]]; then
        kill -TERM "$pid"
        for ((i = 0; i < 20; i++)); do
            [[ -e /proc/$pid ]] || break
            sleep 0.5
        done
        if [[ -e /proc/$pid ]]; then
            echo "$name (pid $pid) ignored SIGTERM for 10s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "$name: stopped (pid $pid)"
    fi
    rm -f "$f"
done
