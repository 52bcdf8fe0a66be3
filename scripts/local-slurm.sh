#!/usr/bin/env bash
# A single-node Slurm on 127.0.0.1 for lorakit's tests (Debian's slurm-wlm + munge): configuration,
# state and logs in one folder, nothing in /etc/slurm. Needs root (apt-get, munged, slurmd).
#
#   eval "$(scripts/local-slurm.sh start)"    # installs if needed, starts, prints: export SLURM_CONF=...
#   scripts/local-slurm.sh stop               # cancels every job, then stops the daemons
#
# The folder is $LORAKIT_SLURM_DIR, default /tmp/lorakit-slurm. Without slurmdbd there is no sacct:
# lorakit reads `scontrol show job` and the jobcomp file this writes (jobcomp.txt).
set -euo pipefail
dir=${LORAKIT_SLURM_DIR:-/tmp/lorakit-slurm}
export SLURM_CONF=$dir/slurm.conf

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurmctld slurmd slurm-client munge >&2
}

start_munge() {
    pgrep -x munged >/dev/null && return
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
}

write_config() {
    local memory_mib cpus
    memory_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cpus=$(nproc)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    cat > "$SLURM_CONF" <<CONF
ClusterName=lorakit-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mib State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    install_packages
    start_munge
    if ! scontrol ping 2>/dev/null | grep -q UP; then
        write_config
        slurmctld
        pgrep -x slurmd >/dev/null || slurmd -N localhost
    fi
    # Idle within a second or two; never wait forever on a daemon that did not come up.
    if ! timeout 60 bash -c 'until sinfo -h -o %T 2>/dev/null | grep -qx idle; do sleep 0.5; done'; then
        echo "local Slurm did not come up; see $dir/log" >&2
        exit 1
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
    # Jobs first: a step daemon left without its slurmd needs SIGKILL.
    scancel --full --user root 2>/dev/null || true
    timeout 30 bash -c 'while squeue -h 2>/dev/null | grep -q .; do sleep 0.5; done' || true
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
