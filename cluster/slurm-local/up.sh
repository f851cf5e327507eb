#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (root, no systemd) with one fake GPU.
# Idempotent: installs what is missing, (re)writes the config, starts only daemons that
# are not running, records the PIDs it starts in $STATE_DIR (stop them with down.sh).
# Env: CHUNKFLOW_SLURM_STATE (PID and log dir), CHUNKFLOW_SLURM_TIMEOUT (seconds per wait).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${CHUNKFLOW_SLURM_STATE:-/var/run/chunkflow-slurm}
TIMEOUT=${CHUNKFLOW_SLURM_TIMEOUT:-60}
PACKAGES=(munge slurmctld slurmd slurm-client)

die() {
    echo "up.sh: $*" >&2
    tail -n 5 "$STATE_DIR"/*.log 2>/dev/null >&2 || true
    exit 1
}

# PID recorded for $1 if that process still runs under that name.
recorded_pid() {
    local f="$STATE_DIR/$1.pid" pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    if [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]]; then
        echo "$pid"
    else
        rm -f "$f"
        return 1
    fi
}

# start NAME CMD...: run CMD detached (it must exec into a process named NAME).
start() {
    local name=$1
    shift
    if recorded_pid "$name" >/dev/null; then
        echo "$name: already running (pid $(<"$STATE_DIR/$name.pid"))"
    elif pgrep -x "$name" >/dev/null; then
        echo "$name: already running, not started by up.sh (left alone)"
    else
        setsid "$@" >>"$STATE_DIR/$name.log" 2>&1 </dev/null &
        echo $! >"$STATE_DIR/$name.pid"
        echo "$name: started (pid $!)"
    fi
}

# wait_for WHAT CMD...: poll CMD every second, fail after $TIMEOUT s.
wait_for() {
    local what=$1 i
    shift
    for ((i = 0; i < TIMEOUT; i++)); do
        "$@" && return 0
        sleep 1
    done
    die "timed out after ${TIMEOUT}s waiting for $what (logs in $STATE_DIR)"
}

[[ $(id -u) == 0 ]] || die "must run as root"

# 1. Packages; policy-rc.d keeps the post-install scripts from starting services.
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. Directories and munge key.
mkdir -p "$STATE_DIR" /etc/slurm /var/spool/slurmctld /var/spool/slurmd
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

# 3. Config. The node line is the real hardware layout, so slurmd sees no mismatch.
node=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]*/NodeName=localhost/')
[[ $node == NodeName=localhost\ * ]] || die "unexpected 'slurmd -C' output: $node"
slurm_conf="# Written by cluster/slurm-local/up.sh; edits are overwritten.
ClusterName=chunkflow-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
GresTypes=gpu
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/spool/slurmctld/slurmctld.pid
SlurmdPidFile=/var/spool/slurmd/slurmd.pid
$node NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
gres_conf="# Written by cluster/slurm-local/up.sh; a GPU that is not there (CUDA_VISIBLE_DEVICES=0).
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null Count=1"

changed=0
write_if_changed() {
    if [[ ! -f $1 || $(<"$1") != "$2" ]]; then
        printf '%s\n' "$2" >"$1"
        changed=1
    fi
}
write_if_changed /etc/slurm/slurm.conf "$slurm_conf"
write_if_changed /etc/slurm/gres.conf "$gres_conf"
slurm_running() { pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; }
if ((changed)) && slurm_running; then
    echo "config changed: restarting the daemons"
    "$HERE/down.sh"
    ! slurm_running || die "config changed, but slurm daemons not started by up.sh run; stop them first"
fi

# 4. Daemons, in order, each waited for.
start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
wait_for "munged" bash -c '{ munge -n | unmunge; } >/dev/null 2>&1'

start slurmctld slurmctld -D -i
wait_for "slurmctld (scontrol ping UP)" bash -c 'scontrol ping 2>/dev/null | grep -q "is UP"'

start slurmd slurmd -D -N localhost
resumed=0
node_ready() {
    local state
    state=$(sinfo -h -n localhost -o %t 2>/dev/null)
    case $state in
    idle | mix | alloc | comp) return 0 ;;
    drain | drng | drain@ | down | inval | fail)
        if ((!resumed)); then
            echo "node is $state: resuming it once"
            scontrol update nodename=localhost state=resume || true
            resumed=1
        fi
        ;;
    esac
    return 1
}
wait_for "node localhost to be idle (sinfo)" node_ready
echo "SLURM is up: $(sinfo -h -o '%P %D %t %G')"
